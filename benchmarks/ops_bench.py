r"""Op-level CPU benchmark: where the per-net JAX/PyTorch gap comes from.

`nets_bench.py` shows facejax slower than PyTorch on the quiet CPU for every
net. This script times the building blocks of those nets one at a time,
forward and forward+backward (VJP of a sum), in JAX (jitted, NHWC) and in
PyTorch (channels_last), interleaved in one process:

* convolutions at the shapes of SphereFace-20 (3x3), the Inception nets (1x1,
  3x3, 5x5 at 12x12 / 24x24) and Inception-ResNet-v1 (1x7 / 7x1 at 8x8);
* facejax's `LocalResponseNorm` (channel-window `reduce_window`) next to the
  banded-matmul form of the same LRN, and torch's `nn.LocalResponseNorm`;
* facejax's `L2Pool` (strided slices) against torch `avg_pool2d(x^2) * 9` then `sqrt`;
* 3x3/2 max pool: `flax.linen.max_pool` (reduce_window; its gradient is
  select_and_scatter) and facejax's `layers.max_pool` (strided slices);
* BatchNorm in training mode;
* depthwise 3x3 convolutions at MobileFaceNet's shapes: lax's grouped convolution
  (`feature_group_count` = channels) and facejax's `layers.Conv`, which runs them as
  shifted multiply-adds, against torch's `groups=C` Conv2d.

The main JAX columns run under facejax's default XLA:CPU flags
(`facejax/xla_flags.py`). With `--xla_flags` it re-runs the JAX side in
subprocesses under each `XLA_FLAGS` value (XLA:CPU library-call switches such
as oneDNN / XNNPACK / YNNPACK; `jaxlib-default` = jaxlib's own defaults,
without facejax's flags) and prints one JAX column (fwd / f+b ms) per setting.

Usage:
  python benchmarks/ops_bench.py
  python benchmarks/ops_bench.py --reps 10 --batch 32
  python benchmarks/ops_bench.py --ops depthwise       # only the ops whose name contains it
  python benchmarks/ops_bench.py --xla_flags="jaxlib-default;--xla_cpu_use_onednn=true"
"""

import argparse
import json
import os
import subprocess
import sys

import numpy as np

# Sibling modules: `python benchmarks/<name>.py` puts this folder on sys.path.
# _common sets facejax's default XLA:CPU flags, before anything computes with JAX.
import _common

# (name, kind, H, W, C_in, C_out or None, kernel (kh, kw), stride)
OPS = [
    ("conv3x3 56x48 64->64 (sphereface)", "conv", 56, 48, 64, 64, (3, 3), 1),
    ("conv3x3 28x24 128->128 (sphereface)", "conv", 28, 24, 128, 128, (3, 3), 1),
    ("conv3x3 14x12 256->256 (sphereface)", "conv", 14, 12, 256, 256, (3, 3), 1),
    ("conv3x3 7x6 512->512 (sphereface)", "conv", 7, 6, 512, 512, (3, 3), 1),
    ("conv3x3 56x56 64->64 (iresnet)", "conv", 56, 56, 64, 64, (3, 3), 1),
    ("conv3x3 28x28 128->128 (iresnet)", "conv", 28, 28, 128, 128, (3, 3), 1),
    ("conv3x3 7x7 512->512 (iresnet)", "conv", 7, 7, 512, 512, (3, 3), 1),
    ("conv1x1 24x24 192->64 (inception)", "conv", 24, 24, 192, 64, (1, 1), 1),
    ("conv3x3 12x12 96->128 (inception)", "conv", 12, 12, 96, 128, (3, 3), 1),
    ("conv5x5 12x12 16->32 (inception)", "conv", 12, 12, 16, 32, (5, 5), 1),
    ("conv1x7 8x8 128->128 (irv1 block17)", "conv", 8, 8, 128, 128, (1, 7), 1),
    ("conv7x1 8x8 128->128 (irv1 block17)", "conv", 8, 8, 128, 128, (7, 1), 1),
    ("LRN 24x24x192 reduce_window (facejax)", "lrn", 24, 24, 192, None, None, 1),
    ("LRN 24x24x192 banded matmul", "lrn_band", 24, 24, 192, None, None, 1),
    ("L2 pool 3x3/1 12x12x320", "l2pool", 12, 12, 320, None, (3, 3), 1),
    ("max pool 3x3/2 48x48x64 flax (reduce_window)", "maxpool_flax", 48, 48, 64, None, (3, 3), 2),
    ("max pool 3x3/2 48x48x64 facejax (slices)", "maxpool", 48, 48, 64, None, (3, 3), 2),
    ("BatchNorm train 24x24x192", "bn", 24, 24, 192, None, None, 1),
    ("depthwise 3x3 56x56x128 lax grouped conv", "dwconv_lax", 56, 56, 128, 128, (3, 3), 1),
    ("depthwise 3x3 56x56x128 facejax (shifted taps)", "dwconv", 56, 56, 128, 128, (3, 3), 1),
    ("depthwise 3x3/2 56x56x128 lax grouped conv", "dwconv_lax", 56, 56, 128, 128, (3, 3), 2),
    ("depthwise 3x3/2 56x56x128 facejax (shifted taps)", "dwconv", 56, 56, 128, 128, (3, 3), 2),
    ("depthwise 3x3 14x14x512 lax grouped conv", "dwconv_lax", 14, 14, 512, 512, (3, 3), 1),
    ("depthwise 3x3 14x14x512 facejax (shifted taps)", "dwconv", 14, 14, 512, 512, (3, 3), 1),
]


def conv_macs(op, batch):
  _, kind, h, w, cin, cout, k, s = op
  if kind.startswith("dwconv"):
    return batch * (h // s) * (w // s) * cin * k[0] * k[1]
  if kind != "conv":
    return None
  return batch * (h // s) * (w // s) * cin * cout * k[0] * k[1]


def jax_runners(op, batch):
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  from facejax.models import layers

  _, kind, h, w, cin, cout, k, s = op
  x = jax.random.normal(jax.random.key(0), (batch, h, w, cin), jnp.float32)
  if kind == "conv":
    module = nn.Conv(cout, k, strides=s, padding="SAME", use_bias=True)
  elif kind in ("dwconv_lax", "dwconv"):
    conv = nn.Conv if kind == "dwconv_lax" else layers.Conv
    module = conv(cout, k, strides=s, padding=((1, 1), (1, 1)), feature_group_count=cin,
                  use_bias=False)
  elif kind == "lrn":
    module = layers.LocalResponseNorm()
  elif kind == "lrn_band":
    module = BandedLRN()
  elif kind == "l2pool":
    module = layers.L2Pool(window=3, stride=s, padding=1)
  elif kind == "maxpool_flax":
    module = _MaxPool()
  elif kind == "maxpool":
    module = _FacejaxMaxPool()
  elif kind == "bn":
    module = nn.BatchNorm(use_running_average=False)
  variables = module.init(jax.random.key(1), x)
  mutable = ["batch_stats"] if "batch_stats" in variables else False

  def apply(v, x):
    out = module.apply(v, x, mutable=mutable)
    return out[0] if mutable else out

  fwd = jax.jit(apply)

  def loss(v, x):
    return jnp.sum(apply(v, x))

  bwd = jax.jit(jax.grad(loss, argnums=(0, 1)) if jax.tree.leaves(variables.get("params", {}))
                else jax.grad(loss, argnums=1))
  fwd_c = fwd.lower(variables, x).compile()
  bwd_c = bwd.lower(variables, x).compile()
  return (lambda: jax.block_until_ready(fwd_c(variables, x)),
          lambda: jax.block_until_ready(bwd_c(variables, x)))


def _banded_lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
  import jax.numpy as jnp
  c = x.shape[-1]
  idx = np.arange(c)
  lo = (size - 1) // 2
  # band[c', c] = 1 when c' is in the window centred on c (same window as
  # layers.LocalResponseNorm: lo below, size-1-lo above).
  band = ((idx[:, None] >= idx[None, :] - lo) & (idx[:, None] <= idx[None, :] + size - 1 - lo))
  window_sum = jnp.einsum("bhwc,cd->bhwd", jnp.square(x), jnp.asarray(band, x.dtype))
  return x * jnp.power(k + (alpha / size) * window_sum, -beta)


def _define_modules():
  import flax.linen as nn

  class BandedLRN(nn.Module):  # pylint: disable=redefined-outer-name

    @nn.compact
    def __call__(self, x):
      return _banded_lrn(x)

  class MaxPool(nn.Module):

    @nn.compact
    def __call__(self, x):
      return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

  class FacejaxMaxPool(nn.Module):

    @nn.compact
    def __call__(self, x):
      from facejax.models import layers
      return layers.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))

  return BandedLRN, MaxPool, FacejaxMaxPool


BandedLRN = _MaxPool = _FacejaxMaxPool = None


def torch_runners(op, batch):
  import torch
  from torch import nn
  import torch.nn.functional as F

  _, kind, h, w, cin, cout, k, s = op
  x = torch.randn(batch, cin, h, w).contiguous(memory_format=torch.channels_last)
  if kind == "conv":
    module = nn.Conv2d(cin, cout, k, stride=s, padding=(k[0] // 2, k[1] // 2))
  elif kind in ("dwconv_lax", "dwconv"):
    module = nn.Conv2d(cin, cout, k, stride=s, padding=1, groups=cin, bias=False)
  elif kind in ("lrn", "lrn_band"):
    module = nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)
  elif kind == "l2pool":
    module = lambda t: torch.sqrt(F.avg_pool2d(t.square(), 3, s, 1) * 9.0 + 1e-6)  # noqa: E731
  elif kind in ("maxpool", "maxpool_flax"):
    module = lambda t: F.max_pool2d(t, 3, 2, 1)  # noqa: E731
  elif kind == "bn":
    module = nn.BatchNorm2d(cin)
  if isinstance(module, nn.Module):
    module = module.to(memory_format=torch.channels_last).train()
  xg = x.clone().requires_grad_(True)

  def fwd():
    with torch.no_grad():
      module(x)

  def bwd():
    xg.grad = None
    module(xg).sum().backward()

  return fwd, bwd


def jax_only(batch, reps):
  """JAX medians per op: {name: [fwd_s, fwd_bwd_s]} (for the XLA_FLAGS subprocesses)."""
  res = {}
  for op in OPS:
    f, b = jax_runners(op, batch)
    t = _common.interleaved({"f": f, "b": b}, 2, reps)
    res[op[0]] = [t["f"], t["b"]]
  return res


def main(argv=None):
  global BandedLRN, _MaxPool, _FacejaxMaxPool
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch", type=int, default=32)
  p.add_argument("--reps", type=int, default=7, help="timed repetitions (median)")
  p.add_argument("--xla_flags", default="",
                 help="';'-separated XLA_FLAGS settings to add as extra JAX columns")
  p.add_argument("--ops", default="", help="only the ops whose name contains this")
  p.add_argument("--jax_only_json", action="store_true", help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  OPS[:] = [op for op in OPS if args.ops in op[0]]
  BandedLRN, _MaxPool, _FacejaxMaxPool = _define_modules()

  if args.jax_only_json:
    print("JSON " + json.dumps(jax_only(args.batch, args.reps)))
    return

  import jax
  import torch
  torch.set_num_threads(os.cpu_count())
  print("== Op benchmark: JAX (XLA:CPU, NHWC) vs PyTorch (channels_last) ==")
  for line in _common.environment_lines({
      "jax": f"{jax.__version__} backend={jax.default_backend()}",
      "torch": f"{torch.__version__} num_threads={torch.get_num_threads()}"}):
    print(line)
  print(f"batch {args.batch}, {args.reps} timed reps (median), JAX/torch interleaved\n")

  extra = [f for f in args.xla_flags.split(";") if f.strip()]
  extra_res = []
  for flags in extra:
    env = dict(os.environ, XLA_FLAGS=flags)
    if flags == "jaxlib-default":  # jaxlib's own defaults, without facejax's flags
      env.update(XLA_FLAGS="", FACEJAX_KEEP_XLA_FLAGS="1")
    out = subprocess.run([sys.executable, __file__, "--jax_only_json", "--batch", str(args.batch),
                          "--reps", str(args.reps), "--ops", args.ops], env=env, capture_output=True, text=True,
                         check=True).stdout
    extra_res.append(json.loads(out.split("JSON ", 1)[1]))

  rows = []
  for op in OPS:
    jf, jb = jax_runners(op, args.batch)
    tf, tb = torch_runners(op, args.batch)
    t = _common.interleaved({"jf": jf, "tf": tf, "jb": jb, "tb": tb}, 2, args.reps)
    macs = conv_macs(op, args.batch)
    row = [op[0], f"{t['jf'] * 1e3:.2f}", f"{t['tf'] * 1e3:.2f}", f"{t['tf'] / t['jf']:.2f}",
           f"{t['jb'] * 1e3:.2f}", f"{t['tb'] * 1e3:.2f}", f"{t['tb'] / t['jb']:.2f}",
           f"{2 * macs / t['jf'] / 1e9:.1f} / {2 * macs / t['tf'] / 1e9:.1f}" if macs else ""]
    for r in extra_res:
      row.append(f"{r[op[0]][0] * 1e3:.2f} / {r[op[0]][1] * 1e3:.2f}")
    rows.append(row)
  headers = ["op", "jax fwd ms", "torch fwd ms", "fwd ratio", "jax f+b ms", "torch f+b ms",
             "f+b ratio", "fwd GFLOP/s jax/torch"]
  headers += [f"jax fwd/f+b ms [{f}]" for f in extra]
  print("== Results (ratio = torch time / JAX time, >1: JAX faster) ==")
  _common.print_table(headers, rows)
  print(f"load average at end: {_common.loadavg()}")


if __name__ == "__main__":
  main()
