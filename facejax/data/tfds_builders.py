"""TFDS builders: LFW (`facejax_lfw`) and any identity-folder tree (`facejax_identity_folder`).

Both store the original encoded image bytes unchanged (no re-encoding), with features

    image:    tfds.features.Image, shape (None, None, 3), uint8 once decoded
    label:    ClassLabel; names = identities sorted by name (same labels as scan_identity_folder)
    identity: Text, the identity folder name
    path:     Text, path relative to the dataset root (LFW: "lfw/<Name>/<Name>_0001.jpg",
              the same string as `lfw.Pair.path_a`, so pairs join records by path)

Records are written as array_record (random access via `builder.as_data_source`) when the
`array_record` package is importable, else tfrecord.

LFW splits are `dev_train` (peopleDevTrain.txt, 9,525 images) and `dev_test`
(peopleDevTest.txt, 3,708 images). They partition LFW, so TFDS's reserved split name
`"all"` (a split may not be called that) reads all 13,233 images. The protocol text
files are kept verbatim in the dataset's metadata.json; see `load_lfw_pairs`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import os
import pathlib
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from facejax.data import lfw as lfw_lib
from facejax.data.identity_folder import IdentityDataset, scan_identity_folder
from facejax.data.paths import ENV_VAR, DataNotFoundError, resolve_data_dir

LFW_BASE_URL = "http://vis-www.cs.umass.edu/lfw/"
LFW_PROTOCOL_FILES = (*lfw_lib.PAIRS_FILES.values(), *lfw_lib.PEOPLE_FILES.values(), lfw_lib.NAMES_FILE)
_PROTOCOL_KEY = "lfw_protocol_files"


def default_file_format() -> str:
  """"array_record" when its package imports (needed for random access), else "tfrecord"."""
  try:
    from array_record.python import array_record_module  # noqa: F401
  except ImportError:
    return "tfrecord"
  return "array_record"


class _IdentityBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared features, file-format default and example generation."""

  VERSION = tfds.core.Version("1.0.0")
  _ENCODING = None  # None: keep any of jpeg/png/bmp; decoding sniffs the format.

  def __init__(self, *, file_format: str | None = None, **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    # TFDS defaults to tfrecord; prefer array_record for datasets not yet prepared.
    # A prepared dataset keeps the format it was written in.
    if file_format is None and not self.data_path.exists():
      self.info.set_file_format(default_file_format(), override=True)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10's default needs the `importlib_resources` backport, which it does
    # not declare for Python >= 3.9 (tensorflow/datasets#11212).
    return epath.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format=self._ENCODING),
            # Names are only known once the tree is scanned in _split_generators;
            # a prepared dataset restores them from label.labels.txt.
            "label": tfds.features.ClassLabel(),
            "identity": tfds.features.Text(),
            "path": tfds.features.Text(),
        }),
        supervised_keys=("image", "label"),
        metadata=tfds.core.MetadataDict(),
    )

  def _generate_examples(self, dataset: IdentityDataset, prefix: str = "",
                         keep: frozenset | None = None):
    for rel, label in zip(dataset.paths, dataset.labels):
      identity = dataset.class_names[label]
      if keep is None or identity in keep:
        key = prefix + rel
        yield key, {"image": os.fspath(dataset.root / rel), "label": int(label),
                    "identity": identity, "path": key}


class Lfw(_IdentityBuilder):
  """Labeled Faces in the Wild (original, unaligned 250x250 JPEGs) with its protocol files."""

  name = "facejax_lfw"
  _ENCODING = "jpeg"
  RELEASE_NOTES = {"1.0.0": "dev_train/dev_test splits; protocol files in metadata."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: put the extracted lfw.tgz (lfw/<Name>/<Name>_0001.jpg) and pairs.txt, "
      "pairsDevTrain.txt, pairsDevTest.txt, peopleDevTrain.txt, peopleDevTest.txt, "
      "lfw-names.txt in the manual dir, or pass Lfw(lfw_root=...)."
  )

  def __init__(self, *, lfw_root: str | os.PathLike | None = None, **kwargs):
    """`lfw_root`: local LFW copy (folder with pairs.txt and lfw/, or its parent)."""
    self._lfw_root = lfw_root
    super().__init__(**kwargs)

  def _local_root(self, dl_manager) -> pathlib.Path | None:
    if self._lfw_root:
      return resolve_data_dir(self._lfw_root, "lfw")
    try:
      manual = dl_manager.manual_dir  # raises when absent or empty
    except (AssertionError, ValueError):
      manual = None
    if manual is not None:
      return resolve_data_dir(os.fspath(manual), "lfw")
    if os.environ.get(ENV_VAR):
      return resolve_data_dir(None, "lfw")
    return None

  def _sources(self, dl_manager) -> tuple[pathlib.Path, dict[str, pathlib.Path]]:
    """(images folder holding <Name>/, {protocol file name: path})."""
    root = self._local_root(dl_manager)
    if root is not None:
      return root / lfw_lib.IMAGES_SUBDIR, {f: root / f for f in LFW_PROTOCOL_FILES}
    try:
      files = dl_manager.download({f: LFW_BASE_URL + f for f in LFW_PROTOCOL_FILES})
      extracted = dl_manager.download_and_extract(LFW_BASE_URL + "lfw.tgz")
    except Exception as e:  # Offline shows up as many different exception types.
      raise DataNotFoundError(
          f"Could not download LFW from {LFW_BASE_URL} ({type(e).__name__}: {e}). When offline, "
          f"point at a local copy: Lfw(lfw_root=...) / prepare_lfw(lfw_root, ...), the TFDS manual "
          f"dir (download_config.manual_dir), or the environment variable `{ENV_VAR}` (the folder "
          f"holding lfw/pairs.txt and lfw/lfw/<Name>/<Name>_0001.jpg)."
      ) from e
    files = {k: pathlib.Path(v) for k, v in files.items()}
    return pathlib.Path(extracted) / lfw_lib.IMAGES_SUBDIR, files

  def _split_generators(self, dl_manager):
    images_dir, files = self._sources(dl_manager)
    texts = {}
    for fname, path in files.items():
      if not path.is_file():
        raise DataNotFoundError(f"LFW protocol file {fname} is missing: {path}")
      texts[fname] = path.read_text(encoding="utf-8")
    parse = lambda f, fn: fn(texts[f].splitlines(), os.fspath(files[f]))  # noqa: E731
    names = parse(lfw_lib.NAMES_FILE, lfw_lib.parse_people)
    people = {s: frozenset(parse(f, lfw_lib.parse_people)) for s, f in lfw_lib.PEOPLE_FILES.items()}

    dataset = scan_identity_folder(images_dir)
    counts = dict(zip(dataset.class_names, dataset.class_counts().tolist()))
    if counts != names:
      diff = sorted(set(counts.items()) ^ set(names.items()))[:5]
      raise ValueError(f"{images_dir} disagrees with {files[lfw_lib.NAMES_FILE]} on "
                       f"(name, image count), e.g. {diff}")
    train, test = people["dev_train"], people["dev_test"]
    if train & test or (train | test) != set(names):
      raise ValueError(
          f"peopleDevTrain/peopleDevTest must partition the {len(names)} LFW people: "
          f"{len(train & test)} shared, {len(set(names) - train - test)} in neither, "
          f"{len((train | test) - set(names))} unknown.")
    record_paths = {lfw_lib.IMAGES_SUBDIR + "/" + p for p in dataset.paths}
    for fname in lfw_lib.PAIRS_FILES.values():
      named = lfw_lib.unique_images(parse(fname, lfw_lib.parse_pairs))
      missing = [p for p in named if p not in record_paths]
      if missing:
        raise FileNotFoundError(
            f"{len(missing)} images named by {files[fname]} are missing, e.g. {missing[:5]}")

    self.info.features["label"].names = list(dataset.class_names)
    self.info.metadata[_PROTOCOL_KEY] = texts
    prefix = lfw_lib.IMAGES_SUBDIR + "/"
    return {split: self._generate_examples(dataset, prefix, people[split])
            for split in ("dev_train", "dev_test")}


@dataclasses.dataclass(eq=False)
class IdentityFolderConfig(tfds.core.BuilderConfig):
  """Which tree an `IdentityFolder` dataset was built from."""

  root: str = ""
  min_images_per_identity: int = 1


def identity_folder_config(root: str | os.PathLike,
                           min_images_per_identity: int = 1) -> IdentityFolderConfig:
  """Config named "<sanitized basename>_<8 hex of sha1(abs root, min images)>".

  The builder name is fixed, so the config name is what keeps two trees (or two
  filters of one tree) apart under the same data_dir.
  """
  root = os.path.abspath(os.fspath(root))
  digest = hashlib.sha1(f"{root}\0{min_images_per_identity}".encode()).hexdigest()[:8]
  base = re.sub(r"[^a-z0-9]+", "_", os.path.basename(root).lower()).strip("_")[:40] or "root"
  return IdentityFolderConfig(
      name=f"{base}_{digest}", root=root, min_images_per_identity=min_images_per_identity,
      description=f"Identity folder {root} (min_images_per_identity={min_images_per_identity})")


class IdentityFolder(_IdentityBuilder):
  """Any `<root>/<identity>/<image>` tree (CASIA-WebFace, VGGFace2, ...) as one `train` split."""

  name = "facejax_identity_folder"
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(self, *, root: str | os.PathLike | None = None, min_images_per_identity: int = 1,
               config: IdentityFolderConfig | None = None, **kwargs):
    if config is None:
      if root is None:
        raise ValueError("IdentityFolder needs root= (or config=identity_folder_config(root)).")
      config = identity_folder_config(root, min_images_per_identity)
    super().__init__(config=config, **kwargs)

  def _split_generators(self, dl_manager):
    del dl_manager  # Local data only.
    cfg = self.builder_config
    dataset = scan_identity_folder(cfg.root, min_images_per_identity=cfg.min_images_per_identity)
    self.info.features["label"].names = list(dataset.class_names)
    return {"train": self._generate_examples(dataset)}


def _prepare(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
  # Reuses an already prepared dataset (TFDS returns early when data_dir has it).
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder


def prepare_lfw(lfw_root: str | os.PathLike | None, data_dir: str | os.PathLike, **kwargs) -> Lfw:
  """Builds (once) and returns the `facejax_lfw` dataset under data_dir.

  lfw_root=None downloads the official files (or uses the manual dir / FACEJAX_DATA_DIR).
  """
  return _prepare(Lfw(lfw_root=lfw_root, data_dir=os.fspath(data_dir), **kwargs))


def prepare_identity_folder(root: str | os.PathLike, data_dir: str | os.PathLike,
                            min_images_per_identity: int = 1, **kwargs) -> IdentityFolder:
  """Builds (once) and returns the `facejax_identity_folder` dataset of `root` under data_dir."""
  return _prepare(IdentityFolder(root=root, min_images_per_identity=min_images_per_identity,
                                 data_dir=os.fspath(data_dir), **kwargs))


def load_lfw_pairs(builder: Lfw, which: str = "view2") -> list[lfw_lib.Pair]:
  """Pairs of a prepared `Lfw` dataset: which = "view2" | "dev_train" | "dev_test"."""
  fname = lfw_lib.PAIRS_FILES[which]
  text = builder.info.metadata[_PROTOCOL_KEY][fname]
  return lfw_lib.parse_pairs(text.splitlines(), f"{builder.data_dir}/metadata.json[{fname}]")


def load_lfw_people(builder: Lfw, split: str = "dev_train") -> dict[str, int]:
  """{name: image count} of a prepared `Lfw` dataset's split ("dev_train" | "dev_test")."""
  fname = lfw_lib.PEOPLE_FILES[split]
  text = builder.info.metadata[_PROTOCOL_KEY][fname]
  return lfw_lib.parse_people(text.splitlines(), f"{builder.data_dir}/metadata.json[{fname}]")


def load_encoded(builder: tfds.core.DatasetBuilder, split: str, chunk_size: int = 4096
                 ) -> tuple[list[bytes], np.ndarray, list[str]]:
  """Reads a prepared split without decoding images, in stored order.

  `split` may be any TFDS split spec, including "all".

  Returns:
    (encoded image bytes, one per record; int32 labels of shape [N]; relative paths).
  """
  if builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD:
    # Raw records parsed by one vectorized tf.io.parse_example per chunk: about twice as
    # fast as the data source's per-record numpy deserializer with SkipDecoding.
    src = builder.as_data_source(split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    spec = builder.info.features.tf_example_spec

    def parsed_chunks():
      for start in range(0, len(src), chunk_size):
        records = src.__getitems__(list(range(start, min(start + chunk_size, len(src)))))
        yield tf.io.parse_example(tf.constant(records), spec)

    chunks = parsed_chunks()
  else:  # tfrecord has no random access; as_dataset keeps file order with shuffle_files=False.
    ds = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()},
                            shuffle_files=False, read_config=tfds.ReadConfig(try_autocache=False))
    chunks = iter(ds.batch(chunk_size))
  images, labels, paths = [], [], []
  for ex in chunks:
    images.extend(ex["image"].numpy().tolist())
    labels.append(ex["label"].numpy())
    paths.extend(p.decode("utf-8") for p in ex["path"].numpy().tolist())
  labels = np.concatenate(labels).astype(np.int32) if labels else np.zeros((0,), np.int32)
  return images, labels, paths


def encoded_by_path(builder: tfds.core.DatasetBuilder, split: str) -> dict[str, bytes]:
  """{relative path: encoded image bytes} of a prepared split (see `load_encoded`)."""
  images, _, paths = load_encoded(builder, split)
  return dict(zip(paths, images))
