r"""Embedding image files: `Embedder.embed_files` against plain Pillow and the net alone.

For N LFW original JPEGs (250x250) and each net, in one run:
  * pillow 1 thread: decode + centre crop + resize + crop + standardise of every file with
    Pillow and numpy on one thread, no net: the rate a plain loop gets;
  * net alone: `Embedder.embed_arrays` on the same images preloaded as uint8 arrays: what the
    net can take, so "net-bound" can be judged;
  * embed_files: `Embedder.embed_files` on the files (decoding threads overlapping the net).
Nets: the nn1 smoke net (32x32; `configs/nn1.py:smoke`) and Inception-ResNet-v1
(`configs/inception_resnet_v1.py`, 160x160, random init: the speed does not depend on the
values). Each rate is the best of --rounds runs after one untimed warm-up (compilation).

  FACEJAX_DATA_DIR=../shared/data python benchmarks/embed_files_bench.py --num_files=1000
"""

import argparse
import glob
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from PIL import Image  # noqa: E402

from configs import inception_resnet_v1, nn1  # noqa: E402
from facejax.inference import Embedder, preprocess_pil  # noqa: E402
from facejax.models import create_model  # noqa: E402


def _pillow_one_thread(paths, prep) -> np.ndarray:
  """The plain loop: what embed_files does per file, on one thread, plus the standardisation."""
  out = []
  for p in paths:
    with Image.open(p) as im:
      x = preprocess_pil(im.convert("RGB"), prep)
    out.append((x.astype(np.float32) - 127.5) / 128.0)
  return np.stack(out)


def _best(fn, rounds):
  fn()  # warm-up: compilation, page cache
  times = []
  for _ in range(rounds):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return min(times)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--num_files", type=int, default=1000)
  p.add_argument("--rounds", type=int, default=2)
  p.add_argument("--nets", default="smoke,irv1")
  p.add_argument("--data_dir", default=os.environ.get("FACEJAX_DATA_DIR"))
  p.add_argument("--workers", type=int, default=None, help="decoding threads (default: cores)")
  args = p.parse_args()
  if not args.data_dir:
    sys.exit("set FACEJAX_DATA_DIR or --data_dir to the folder holding lfw/")
  files = sorted(glob.glob(os.path.join(args.data_dir, "lfw", "lfw", "*", "*.jpg")))
  files = files[::max(1, len(files) // args.num_files)][:args.num_files]
  configs = {"smoke": lambda: nn1.get_config("smoke"),
             "irv1": lambda: inception_resnet_v1.get_config()}
  env = {"jax": f"{jax.__version__} ({jax.default_backend()}, {jax.devices()[0].device_kind})",
         "files": f"{len(files)} LFW originals", "decode threads": str(args.workers or "cores")}
  for line in _common.environment_lines(env):
    print(line)
  rows = []
  for name in args.nets.split(","):
    config = configs[name]()
    config.data.data_dir = args.data_dir
    model = create_model(config.model)
    h, w = config.data.image_size if isinstance(config.data.image_size, tuple) else (
        config.data.image_size, config.data.image_size)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, h, w, 3)), train=False))(
        jax.random.key(0))
    embedder = Embedder.from_variables(config, variables, flip="none")
    prep = embedder.preprocessing
    arrays = np.stack([preprocess_pil(Image.open(f).convert("RGB"), prep) for f in files])
    n = len(files)
    t_pillow = _best(lambda: _pillow_one_thread(files, prep), args.rounds)
    t_net = _best(lambda: embedder.embed_arrays(arrays), args.rounds)
    t_files = _best(lambda: embedder.embed_files(files, progress=False,
                                                 num_workers=args.workers), args.rounds)
    rows.append([name, f"{h}x{w}", embedder.batch_size, f"{n / t_pillow:.0f}",
                 f"{n / t_net:.0f}", f"{n / t_files:.0f}", f"{t_pillow / t_files:.2f}x",
                 f"{t_net / t_files:.2f}"])
  print()
  _common.print_table(["net", "input", "batch", "pillow 1 thread img/s", "net alone img/s",
                       "embed_files img/s", "vs pillow 1 thread", "vs net alone"], rows)


if __name__ == "__main__":
  main()
