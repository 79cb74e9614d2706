r"""Writes insightface-format `.bin` verification sets from aligned faces.

  # LFW View 2 (pairs.txt order, 6,000 pairs) from facejax's aligned crops:
  python -m facejax.evaluation.make_bin --output=/tmp/lfw.bin \
      --image_dir=/tmp/lfw_mtcnn_160 [--protocol=view2]

  # A validation set of your own: balanced pairs drawn from <dir>/<identity>/<image>
  python -m facejax.evaluation.make_bin --output=/tmp/mine.bin --identity_folder=DIR \
      [--num_pairs=6000 --pairs_seed=0 | --pairs_file=pairs.txt] [--resize=112]

The file is a pickle of `(bins, issame_list)` as insightface's `eval/verification.py`
reads it (Python 3 bytes, no global): pair i is images 2i and 2i+1, in 10 consecutive
folds of the pairs' order. An image that is JPEG or PNG is stored as its file's bytes,
untouched (insightface's `lfw2pack` does the same); any other format, and every image
with `--resize=N` (an N x N bilinear resize of the whole face), is stored as a lossless
PNG. The pairs should be in fold order: LFW's files are; drawn pairs are written fold by
fold.
"""

import io
import os

import ml_collections
import numpy as np
from absl import flags
from PIL import Image
from tqdm import tqdm

from facejax import cli, errors
from facejax.data import datasets, image_files, lfw, verification_bin
from facejax.evaluation import identity_pairs, lfw_eval

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None, "The .bin file to write.")
flags.DEFINE_string("image_dir", None, "LFW images (an aligned copy of <lfw root>/lfw).")
flags.DEFINE_enum("protocol", "view2", ("view2", "dev_test", "dev_train"),
                  "LFW pairs file to pack (with --image_dir).")
flags.DEFINE_string("data_dir", None, "Folder holding lfw/ (pairs files); else FACEJAX_DATA_DIR.")
flags.DEFINE_string("identity_folder", None, "Draw pairs from this <dir>/<identity>/<image> tree.")
flags.DEFINE_integer("num_pairs", 6000, "Pairs to draw from --identity_folder.")
flags.DEFINE_integer("pairs_seed", 0, "Seed of the --identity_folder draw.")
flags.DEFINE_string("pairs_file", None, "Pack these pairs (LFW pairs format) of "
                    "--identity_folder instead of drawing.")
flags.DEFINE_integer("resize", 0, "Resize every face to N x N and store PNG (0: keep).")
flags.DEFINE_boolean("overwrite", False, "Replace --output if it exists.")

_KEPT_FORMATS = ("JPEG", "PNG")  # what insightface's decoder reads as they are


def encode_image(path: str, resize: int = 0) -> bytes:
  """The bytes to store for one face (module docstring); DataError naming an unreadable file."""
  fmt = image_files.sniff_format(path)
  if fmt in _KEPT_FORMATS and not resize:
    with open(path, "rb") as f:
      return f.read()
  try:
    with Image.open(path) as im:
      im = im.convert("RGB")
      if resize:
        im = im.resize((resize, resize), Image.BILINEAR)
      out = io.BytesIO()
      im.save(out, format="PNG")
      return out.getvalue()
  except (OSError, ValueError) as e:
    raise errors.DataError(f"{path}: cannot read this image ({e})") from None


def pack(pairs: list[lfw.Pair], image_path, output: str, resize: int = 0) -> str:
  """Writes `pairs` (in their order) as a `.bin`; `image_path(rel)` locates an image."""
  cache, images = {}, []
  for pair in tqdm(pairs, desc="pack", unit="pair", disable=None):
    for rel in (pair.path_a, pair.path_b):
      if rel not in cache:
        cache[rel] = encode_image(os.fspath(image_path(rel)), resize)
      images.append(cache[rel])
  return verification_bin.write_bin(output, images, [p.issame for p in pairs])


def _fold_order(pairs: list[lfw.Pair], folds: np.ndarray) -> list[lfw.Pair]:
  """Pairs sorted by fold (stable), so the .bin's consecutive folds are these folds."""
  return [pairs[i] for i in np.argsort(np.asarray(folds), kind="stable")]


def main(argv):
  del argv
  if not FLAGS.output:
    raise errors.ConfigError("--output: the .bin file to write is required")
  if os.path.exists(FLAGS.output) and not FLAGS.overwrite:
    raise errors.UserError(f"{FLAGS.output} exists; pass --overwrite to replace it")
  if FLAGS.identity_folder:
    root = FLAGS.identity_folder
    listing = identity_pairs.folder_listing(root)
    if FLAGS.pairs_file:
      pairs, folds = identity_pairs.read_pairs(FLAGS.pairs_file, listing)
    else:
      data = ml_collections.ConfigDict(dict(data=dict()))
      pairs, folds, skipped, _ = identity_pairs._screened_pairs(  # pylint: disable=protected-access
          root, listing, data, FLAGS.num_pairs, FLAGS.pairs_seed)
      if skipped:
        print(f"skipped {len(skipped)} unreadable files: {list(skipped)[:10]}")
    pairs = _fold_order(pairs, folds)
    image_path = lambda rel: os.path.join(root, rel)
  elif FLAGS.image_dir:
    lfw_root = datasets.resolve_data_dir(FLAGS.data_dir, "lfw")
    # View 1 files hold all matched pairs, then all mismatched: packed in dealt folds.
    protocol = {"dev_test": "dev_test_10fold"}.get(FLAGS.protocol, FLAGS.protocol)
    pairs, folds, _ = lfw_eval.load_pairs(lfw_root, protocol)
    pairs = _fold_order(pairs, folds)
    lfw.check_images_exist(FLAGS.image_dir, pairs)
    image_path = lambda rel: lfw.image_path(FLAGS.image_dir, rel)
  else:
    raise errors.ConfigError("give --image_dir (LFW pairs) or --identity_folder")
  path = pack(pairs, image_path, FLAGS.output, FLAGS.resize)
  same = sum(p.issame for p in pairs)
  print(f"wrote {path}: {len(pairs)} pairs ({same} same, {len(pairs) - same} different), "
        f"{os.path.getsize(path) / 2**20:.1f} MiB")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
