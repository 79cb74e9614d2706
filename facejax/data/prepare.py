r"""Converts a training source into ArrayRecord shards with an integer label index, screening
every image once, here, instead of at each training start.

  python -m facejax.data.prepare --input=/data/faces_emore --output=/data/ms1mv2_ar
  python -m facejax.data.prepare --input=/data/my_identity_folders --output=/data/mine_ar
  python -m facejax.data.prepare --input=tfds:NAME[/CONFIG] --tfds_data_dir=... --output=...

--input is an insightface folder (`train.rec`, `train.idx`, `property`), an identity folder
(`<dir>/<identity>/<image>`) or `tfds:NAME[/CONFIG]` (features `image` and `label`, split
`--tfds_split`; facejax's own TFDS builders are registered). Train on
the output with `--config.data.source=array_record --config.data.train_dir=DIR`.

Output (`record_tables` reads it): `images-SSSSS-of-NNNNN.array_record` (one encoded image
per record, group size 1 for random access), `index.npz` (labels [N] int32, shard sizes),
`classes.txt`, `meta.json` and `report.json` (what screening skipped or converted, by record
or file). Each shard is screened and written by one worker process, to a temporary name
that is renamed when the shard is complete, so a run that dies resumes where it stopped:
run the same command again. Images that Pillow cannot decode, or that are too large, are
skipped and reported (`--bad_images=fail` stops at the first, naming it); images that are
not RGB, or that TensorFlow would decode differently from Pillow, are re-encoded as RGB PNG
(`--non_rgb=skip|fail`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import time

import numpy as np
import tqdm
from absl import flags, logging

from facejax import cli, errors
from facejax.data import image_check, record_tables, recordio

_SHARD = "images-{:05d}-of-{:05d}.array_record"
_PART = "parts/shard-{:05d}.json"


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """Where to read the images from; cheap to send to workers, which open it themselves."""
  kind: str  # "rec" | "folder" | "tfds"
  location: str
  tfds_data_dir: str | None = None
  tfds_split: str = "train"


def parse_input(text: str, tfds_data_dir: str | None = None,
                tfds_split: str = "train") -> SourceSpec:
  if text.startswith("tfds:"):
    return SourceSpec("tfds", text[len("tfds:"):], tfds_data_dir, tfds_split)
  if not os.path.isdir(text):
    raise errors.MissingDataError(f"--input={text}: no such folder (or use tfds:NAME)")
  if os.path.isfile(os.path.join(text, "train.rec")):
    return SourceSpec("rec", text)
  return SourceSpec("folder", text)


class _Reader:
  """A source's items: `list()` -> (item ids [N], labels [N], class names), `read(item)` ->
  (name, encoded bytes). Items are record keys of a .rec, else positions."""

  def __init__(self, spec: SourceSpec):
    self.spec = spec
    if spec.kind == "rec":
      self.rec = recordio.InsightfaceRec(spec.location)
    elif spec.kind == "folder":
      from facejax.data import identity_folder  # pylint: disable=import-outside-toplevel
      self.folder = identity_folder.scan_identity_folder(spec.location)
    else:
      import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
      from facejax.data import tfds_builders  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
      try:
        self.builder = tfds.builder(spec.location, data_dir=spec.tfds_data_dir)
        self.tfds = self.builder.as_data_source(
            split=spec.tfds_split, decoders={"image": tfds.decode.SkipDecoding()})
      except Exception as e:  # TFDS raises many types for a name, config or split it lacks
        raise errors.DataError(f"--input=tfds:{spec.location} (split {spec.tfds_split!r}, "
                               f"data_dir {spec.tfds_data_dir}): {e}") from None

  def list(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if self.spec.kind == "rec":
      index = self.rec.label_index(scan=True)
      return index.keys, index.labels, [str(c) for c in range(index.num_classes)]
    if self.spec.kind == "folder":
      labels = self.folder.labels.astype(np.int32)
      return np.arange(len(labels)), labels, list(self.folder.class_names)
    labels = np.array([int(self.tfds[i]["label"]) for i in range(len(self.tfds))], np.int32)
    return np.arange(len(labels)), labels, list(self.builder.info.features["label"].names)

  def read(self, i: int) -> tuple[str, bytes]:
    if self.spec.kind == "rec":
      return f"{self.rec.records.rec_path} record {i}", self.rec.image(i)[1]
    if self.spec.kind == "folder":
      path = str(self.folder.abspath(i))
      with open(path, "rb") as f:
        return path, f.read()
    return f"tfds:{self.spec.location} record {i}", bytes(self.tfds[i]["image"])


_WORKER_READER: _Reader | None = None


def _worker_reader(spec: SourceSpec) -> _Reader:
  global _WORKER_READER
  if _WORKER_READER is None or _WORKER_READER.spec != spec:
    _WORKER_READER = _Reader(spec)
  return _WORKER_READER


@dataclasses.dataclass(frozen=True)
class _ShardJob:
  spec: SourceSpec
  items: np.ndarray  # the shard's item ids (`_Reader.list`)
  output: str
  shard: int
  num_shards: int
  bad_images: str
  non_rgb: str
  max_image_pixels: int


def write_shard(job: _ShardJob) -> dict:
  """Screens and writes one shard; returns (and saves) its part: the positions (in the
  shard's items) written, and the items skipped or converted with why."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  reader = _worker_reader(job.spec)
  final = os.path.join(job.output, _SHARD.format(job.shard, job.num_shards))
  writer = array_record_module.ArrayRecordWriter(final + ".tmp", "group_size:1")
  written, skipped, converted = [], {}, {}
  try:
    for position, item in enumerate(job.items.tolist()):
      try:
        name, data = reader.read(item)
      except errors.DataError as e:
        status = image_check.ImageStatus(f"source item {item}", "corrupt", detail=str(e))
      else:
        status = image_check.check_encoded(name, data, max_pixels=job.max_image_pixels)
      if status.status in ("corrupt", "empty", "too_large", "not_image"):
        if job.bad_images == "fail":
          raise errors.DataError(f"{status.path}: {status.status} ({status.detail})")
        skipped[status.path] = f"{status.status}: {status.detail}"
        continue
      if status.status == "non_rgb" and job.non_rgb != "convert":
        if job.non_rgb == "fail":
          raise errors.DataError(f"{status.path}: {status.detail} (non_rgb='fail')")
        skipped[status.path] = f"non_rgb: {status.detail}"
        continue
      if status.reencode:
        data = image_check.rgb_png_bytes(data)
        converted[status.path] = status.detail
      writer.write(data)
      written.append(position)
  finally:
    writer.close()
  part = {"shard": job.shard, "rows": written, "skipped": skipped, "converted": converted}
  part_path = os.path.join(job.output, _PART.format(job.shard))
  with open(part_path + ".tmp", "w") as f:
    json.dump(part, f)
  os.replace(part_path + ".tmp", part_path)
  os.replace(final + ".tmp", final)  # last: a shard with its final name is complete
  return part


def prepare(spec: SourceSpec, output: str, *, records_per_shard: int = 10_000,
            workers: int | None = None, bad_images: str = "skip", non_rgb: str = "convert",
            max_image_pixels: int = image_check.DEFAULT_MAX_IMAGE_PIXELS,
            progress: bool = True) -> dict:
  """Writes `output` (module docstring); returns the meta it saves. Resumes a partial run."""
  start = time.perf_counter()
  reader = _Reader(spec)
  items, labels, names = reader.list()
  n = len(labels)
  if n == 0:
    raise errors.DataError(f"{spec.location}: no images")
  num_shards = max(1, math.ceil(n / records_per_shard))
  bounds = np.linspace(0, n, num_shards + 1).astype(np.int64)
  os.makedirs(os.path.join(output, "parts"), exist_ok=True)
  manifest = {"source": dataclasses.asdict(spec), "num_items": n, "num_shards": num_shards,
              "bad_images": bad_images, "non_rgb": non_rgb}
  manifest_path = os.path.join(output, "parts", "manifest.json")
  if os.path.exists(manifest_path):
    with open(manifest_path) as f:
      before = json.load(f)
    if before != manifest:
      raise errors.DataError(f"{output}: holds a partial preparation of another input or "
                             f"settings ({before}); use a new --output")
  else:
    with open(manifest_path, "w") as f:
      json.dump(manifest, f)
  jobs = [_ShardJob(spec, items[bounds[s]:bounds[s + 1]], output, s, num_shards, bad_images,
                    non_rgb, max_image_pixels) for s in range(num_shards)]
  done = {}
  for job in jobs:
    part_path = os.path.join(output, _PART.format(job.shard))
    if os.path.exists(os.path.join(output, _SHARD.format(job.shard, num_shards))) and \
        os.path.exists(part_path):
      with open(part_path) as f:
        done[job.shard] = json.load(f)
  todo = [j for j in jobs if j.shard not in done]
  if done:
    logging.info("%s: %d of %d shards were done before; preparing the other %d", output,
                 len(done), num_shards, len(todo))
  workers = workers or os.cpu_count() or 1
  with tqdm.tqdm(total=n, initial=sum(len(j.items) for j in jobs if j.shard in done),
                 unit="img", desc="prepare", disable=not progress) as bar:
    if todo:
      with concurrent.futures.ProcessPoolExecutor(
          min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(write_shard, j): j for j in todo}
        for future in concurrent.futures.as_completed(futures):
          part = future.result()
          done[part["shard"]] = part
          bar.update(len(futures[future].items))
  rows = [bounds[s] + np.asarray(done[s]["rows"], np.int64) for s in range(num_shards)]
  kept = np.concatenate(rows)
  skipped = {k: v for s in range(num_shards) for k, v in done[s]["skipped"].items()}
  converted = {k: v for s in range(num_shards) for k, v in done[s]["converted"].items()}
  np.savez(os.path.join(output, record_tables.INDEX_FILE), labels=labels[kept].astype(np.int32),
           shard_sizes=np.array([len(r) for r in rows], np.int64))
  with open(os.path.join(output, record_tables.CLASSES_FILE), "w") as f:
    f.write("\n".join(names) + "\n")
  counts = np.bincount(labels[kept], minlength=len(names))
  report = {"images": n, "written": int(kept.size), "skipped": skipped, "converted": converted}
  with open(os.path.join(output, "report.json"), "w") as f:
    json.dump(report, f, indent=1)
  meta = {"source": dataclasses.asdict(spec), "num_images": int(kept.size),
          "num_classes": len(names), "empty_classes": int((counts == 0).sum()),
          "shards": [_SHARD.format(s, num_shards) for s in range(num_shards)],
          "skipped": len(skipped), "converted": len(converted),
          "seconds_this_run": round(time.perf_counter() - start, 1)}
  with open(os.path.join(output, record_tables.META_FILE), "w") as f:
    json.dump(meta, f, indent=1)
  return meta


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string("input", None, "An insightface .rec folder, an identity folder or "
                      "tfds:NAME[/SPLIT].", required=True)
  flags.DEFINE_string("output", None, "The folder to write (resumes a partial one).",
                      required=True)
  flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir for a tfds: input.")
  flags.DEFINE_string("tfds_split", "train", "TFDS split for a tfds: input.")
  flags.DEFINE_integer("records_per_shard", 10_000, "Images per ArrayRecord shard.")
  flags.DEFINE_integer("workers", None, "Worker processes (default: the CPU count).")
  flags.DEFINE_enum("bad_images", "skip", ["skip", "fail"], "Undecodable or too large images.")
  flags.DEFINE_enum("non_rgb", "convert", ["convert", "skip", "fail"], "Non-RGB images.")
  flags.DEFINE_integer("max_image_pixels", image_check.DEFAULT_MAX_IMAGE_PIXELS,
                       "Larger images count as bad.")


def main(argv):
  del argv
  meta = prepare(parse_input(FLAGS.input, FLAGS.tfds_data_dir, FLAGS.tfds_split), FLAGS.output,
                 records_per_shard=FLAGS.records_per_shard, workers=FLAGS.workers,
                 bad_images=FLAGS.bad_images, non_rgb=FLAGS.non_rgb,
                 max_image_pixels=FLAGS.max_image_pixels)
  print(f"wrote {meta['num_images']} images of {meta['num_classes']} classes in "
        f"{len(meta['shards'])} shards to {FLAGS.output} ({meta['skipped']} skipped, "
        f"{meta['converted']} converted; {os.path.join(FLAGS.output, 'report.json')})")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
