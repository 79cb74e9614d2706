r"""Writes insightface training folders (`train.rec`, `train.idx`, `property`) in the layout
insightface's RecBuilder gives them; with `--num_records`, a synthetic one of LFW crops reused
under permuted identities, to test and benchmark facejax at the field's scale here.

  python -m facejax.data.synthetic_rec --output=/tmp/rec_1m --num_records=1000000 \
      --num_identities=100000          # LFW from FACEJAX_DATA_DIR, or --lfw_dir

Each record is a 112x112 JPEG (quality 95) of an LFW image's central 150 px. Identity c gets
1 + a multinomial share of the other records; record i shows crop (seed-permuted i) mod the
number of crops, so identities do not match faces: for speed and memory, not accuracy.
"""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Sequence

import numpy as np
import tqdm
from absl import flags
from PIL import Image

from facejax import cli, errors
from facejax.data import recordio
from facejax.data.paths import resolve_data_dir


def write_insightface_folder(folder: str | os.PathLike, images: Sequence[bytes],
                             labels: Sequence[int], *, image_size=(112, 112),
                             array_labels: bool = False, progress: bool = False) -> None:
  """Keys 1..N the images (grouped by ascending label), N+1..N+K each identity's
  [first, last + 1) key range, key 0 the header [N + 1, N + 1 + K]; `property` K,H,W.
  `array_labels` stores face2rec2's [label, 1] instead of a scalar."""
  labels = np.asarray(labels, np.int64)
  if labels.size and np.any(np.diff(labels) < 0):
    raise ValueError("images must be grouped by ascending label")
  n = labels.size
  k = int(labels.max()) + 1 if n else 0
  os.makedirs(folder, exist_ok=True)
  counts = np.bincount(labels, minlength=k)
  starts = 1 + np.concatenate([[0], np.cumsum(counts)[:-1]])
  with recordio.RecordWriter(os.path.join(folder, "train.rec")) as writer:
    writer.write(0, recordio.pack([n + 1, n + 1 + k], b""))
    for key, (image, label) in enumerate(
        tqdm.tqdm(zip(images, labels.tolist()), total=n, disable=not progress, unit="rec",
                  desc="write .rec"), 1):
      writer.write(key, recordio.pack([label, 1.0] if array_labels else label, image, key))
    for c in range(k):
      writer.write(n + 1 + c, recordio.pack([starts[c], starts[c] + counts[c]], b""))
  with open(os.path.join(folder, "property"), "w") as f:
    f.write(f"{k},{image_size[0]},{image_size[1]}\n")


def lfw_crops(lfw_dir: str | os.PathLike, *, limit: int | None = None, size: int = 112,
              crop: int = 150) -> list[bytes]:
  """JPEGs (quality 95) of the central `crop` px of LFW images, resized to `size`."""
  paths = sorted(glob.glob(os.path.join(os.fspath(lfw_dir), "*", "*.jpg")))[:limit]
  if not paths:
    raise errors.MissingDataError(f"{lfw_dir}: no <identity>/*.jpg images")
  return [crop_jpeg(path, size=size, crop=crop) for path in paths]


def crop_jpeg(path: str | os.PathLike, *, size: int = 112, crop: int = 150) -> bytes:
  """A JPEG (quality 95) of the image's central `crop` px, resized to `size`."""
  with Image.open(path) as image:
    w, h = image.size
    left, top = (w - crop) // 2, (h - crop) // 2
    face = image.convert("RGB").crop((left, top, left + crop, top + crop))
  buffer = io.BytesIO()
  face.resize((size, size), Image.BILINEAR).save(buffer, "JPEG", quality=95)
  return buffer.getvalue()


def synthetic_labels(num_records: int, num_identities: int, seed: int = 0) -> np.ndarray:
  """[num_records] ascending labels, every identity at least once."""
  if num_identities > num_records:
    raise errors.ConfigError(f"--num_identities={num_identities} exceeds --num_records="
                             f"{num_records}: every identity needs an image")
  rng = np.random.default_rng(seed)
  extra = rng.multinomial(num_records - num_identities, np.full(num_identities,
                                                                1 / num_identities))
  return np.repeat(np.arange(num_identities), 1 + extra)


def write_synthetic(folder: str | os.PathLike, crops: Sequence[bytes], num_records: int,
                    num_identities: int, seed: int = 0, progress: bool = True) -> None:
  labels = synthetic_labels(num_records, num_identities, seed)
  order = np.random.default_rng([seed, 1]).permutation(num_records) % len(crops)
  write_insightface_folder(folder, (crops[i] for i in order.tolist()), labels,
                           progress=progress)


FLAGS = flags.FLAGS


def main(argv):
  del argv
  lfw_dir = FLAGS.lfw_dir or str(resolve_data_dir(None, "lfw") / "lfw")
  crops = lfw_crops(lfw_dir, limit=FLAGS.num_crops)
  write_synthetic(FLAGS.output, crops, FLAGS.num_records, FLAGS.num_identities, FLAGS.seed)
  print(f"wrote {FLAGS.num_records} records of {FLAGS.num_identities} identities "
        f"({len(crops)} LFW crops reused) to {FLAGS.output}")


if __name__ == "__main__":
  flags.DEFINE_string("output", None, "The folder to write.", required=True)
  flags.DEFINE_integer("num_records", 1_000_000, "Images.")
  flags.DEFINE_integer("num_identities", 100_000, "Identities.")
  flags.DEFINE_integer("num_crops", None, "LFW images to crop (default: all 13,233).")
  flags.DEFINE_string("lfw_dir", None, "LFW's image folder (default: FACEJAX_DATA_DIR/lfw/lfw).")
  flags.DEFINE_integer("seed", 0, "Seed of the identity sizes and the crop order.")
  cli.run(main)
