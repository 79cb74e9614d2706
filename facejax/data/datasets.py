"""From `config.data` to the tables the input pipeline reads.

`config.data.source` picks how images are read (`config.data.train_dir` says where):
  "folder":       JPEGs straight from the identity-folder tree on disk, screened at
                  every start;
  "tfds":         a facejax TFDS dataset prepared once (`tfds_builders`), whose
                  encoded bytes are loaded into memory;
  "rec":          an insightface folder (train.rec, train.idx, property), read record by
                  record; the label index comes from its identity records;
  "array_record": the shards `python -m facejax.data.prepare` wrote, screened once there.
The last two start in time independent of the number of images (beyond the integer label
index) and never hold the images in memory.
"""

import dataclasses
import os
import pathlib

import ml_collections
import numpy as np

from facejax import errors
from facejax.data import input_pipeline
from facejax.data import image_check
from facejax.data import record_tables
from facejax.data import recordio
from facejax.data.sampling import ClassIndex
from facejax.data.paths import resolve_data_dir


SOURCES = ("folder", "tfds", "rec", "array_record")


@dataclasses.dataclass
class TrainSource:
  table: "input_pipeline.ImageTable | record_tables.RecordTable"
  classes: ClassIndex
  class_names: tuple[str, ...]
  report: image_check.DataReport | None = None

  @property
  def num_images(self) -> int:
    return len(self.table)


def hw(size) -> tuple[int, int]:
  """`config.data.image_size` (an int or (H, W)) as (H, W): facejax's one such helper."""
  return (size, size) if isinstance(size, int) else tuple(size)


def preprocessing(data: ml_collections.ConfigDict, train: bool) -> input_pipeline.Preprocessing:
  return input_pipeline.Preprocessing(
      image_size=hw(data.image_size), resize_size=hw(data.resize_size),
      source_crop=data.source_crop, standardization=data.standardization,
      random_flip=train and data.random_flip, random_crop=train and data.random_crop,
      random_scale=_pair(data.get("random_scale")) if train else None,
      random_rotate=float(data.get("random_rotate") or 0.0) if train else 0.0,
      color_jitter=tuple(data.color_jitter) if train and data.get("color_jitter") else None)


def _pair(value):
  return None if value is None else tuple(float(v) for v in value)


def lfw_root(data: ml_collections.ConfigDict):
  """The LFW root (holding pairs.txt and lfw/) from config or FACEJAX_DATA_DIR."""
  return resolve_data_dir(data.get("data_dir"), "lfw")


def lfw_image_root(data: ml_collections.ConfigDict) -> pathlib.Path:
  """Folder holding LFW's identity folders for evaluation: `data.lfw_image_dir` (e.g. an
  MTCNN-aligned copy from `facejax.data.align`), else `<lfw root>/lfw`."""
  if data.get("lfw_image_dir"):
    if not os.path.isdir(data.lfw_image_dir):
      raise errors.MissingDataError(
          f"config.data.lfw_image_dir={data.lfw_image_dir!r} is not a directory")
    return pathlib.Path(data.lfw_image_dir)
  return lfw_root(data) / "lfw"


def train_image_root(data: ml_collections.ConfigDict) -> str:
  """Identity-folder tree to train on: `data.train_dir`, else LFW's image folder."""
  if data.get("train_dir"):
    if not os.path.isdir(data.train_dir):
      raise errors.MissingDataError(
          f"config.data.train_dir={data.train_dir!r} is not a directory")
    return data.train_dir
  return str(lfw_root(data) / "lfw")


def build_train_source(data: ml_collections.ConfigDict) -> TrainSource:
  """Scans and screens (or loads the prepared TFDS copy of) the training identities.

  `data.train_people` (a people file such as peopleDevTrain.txt, relative to
  the LFW root or absolute) restricts the identities. Every image is opened
  once by `image_check.screen_identity_folder`, which applies the bad-input
  policies `data.bad_images`, `data.non_rgb` and `data.small_identities`
  (identities with fewer than `data.min_images_per_identity` usable images,
  which cannot give anchor-positive pairs); `TrainSource.report` says what was
  skipped or converted.
  """
  if data.source in ("rec", "array_record"):
    return _record_source(data)
  root = train_image_root(data)
  include = data.get("train_people")
  if include and not os.path.isabs(include):
    include = str(lfw_root(data) / include)
  ds, report = image_check.screen_identity_folder(
      root, min_images_per_identity=data.min_images_per_identity, include=include or None,
      max_identities=data.get("max_identities"),
      bad_images=data.get("bad_images", "skip"), non_rgb=data.get("non_rgb", "convert"),
      small_identities=data.get("small_identities", "skip"),
      max_image_pixels=data.get("max_image_pixels", image_check.DEFAULT_MAX_IMAGE_PIXELS),
      num_workers=data.get("check_workers"))
  paths = [os.path.join(str(ds.root), p) for p in ds.paths]
  encoded = None
  if data.source == "tfds":
    from facejax.data import tfds_builders
    builder = tfds_builders.prepare_identity_folder(
        root, data.tfds_data_dir, min_images_per_identity=data.min_images_per_identity)
    by_path = tfds_builders.encoded_by_path(builder, "train")
    encoded = [by_path[p] for p in ds.paths]
  elif data.source != "folder":
    raise errors.ConfigError(f"config.data.source={data.source!r}: use one of {SOURCES}")
  table = input_pipeline.ImageTable(paths, encoded, image_check.replacements(ds, report))
  return TrainSource(table=table, classes=ClassIndex.from_labels(ds.labels, ds.num_classes),
                     class_names=ds.class_names, report=report)


def _record_source(data: ml_collections.ConfigDict) -> TrainSource:
  """A `.rec` folder or prepared ArrayRecord shards at `data.train_dir` (module docstring)."""
  if not data.get("train_dir"):
    raise errors.ConfigError(f"config.data.train_dir: the folder of the {data.source!r} "
                             "source is required")
  if data.get("train_people"):
    raise errors.ConfigError(
        f"config.data.train_people={data.train_people!r} selects people of an identity "
        f"folder; a {data.source!r} source trains on all its classes (set it to None, or "
        "--config.data.train_people= on the command line)")
  if data.source == "rec":
    rec = recordio.InsightfaceRec(train_image_root(data))
    index = rec.label_index()
    table = record_tables.rec_table(rec, index.keys)
    labels, num_classes = index.labels, index.num_classes
    names = tuple(str(c) for c in range(num_classes))
  else:
    table, labels, names = record_tables.array_record_table(train_image_root(data))
    names, num_classes = tuple(names), len(names)
  classes = ClassIndex.from_labels(labels, num_classes,
                                   min_images=data.min_images_per_identity)
  return TrainSource(table=table, classes=classes, class_names=names)
