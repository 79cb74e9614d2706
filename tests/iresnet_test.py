"""IResNet and MobileFaceNet against SCALE.md §5's counts and a numpy block.

Counts use jax.eval_shape only (no compute); anything that executes uses
`width` < 1 or few blocks so it compiles in seconds on 2 CPU cores.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from facejax.models import MobileFaceNet, MobileFaceNetLarge, create_model, flops
from facejax.models.iresnet import BLOCKS, IBasicBlock, IResNet


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _shapes(model, size=112):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


def _iresnet_params_by_hand(blocks, emb=512):
  """Layer arithmetic of arcface_torch's iresnet (BN = gamma + beta, PReLU per channel)."""
  n = 9 * 3 * 64 + 2 * 64 + 64  # stem conv, bn1, prelu
  c_in = 64
  for n_blocks, c in zip(blocks, (64, 128, 256, 512)):
    for b in range(n_blocks):
      i = c_in if b == 0 else c
      n += 2 * i + 9 * i * c + 2 * c + c + 9 * c * c + 2 * c  # bn1 conv1 bn2 prelu conv2 bn3
      if b == 0:
        n += i * c + 2 * c  # downsample conv1x1 + bn
    c_in = c
  return n + 2 * 512 + 7 * 7 * 512 * emb + emb + 2 * emb  # bn2, fc (+bias), features BN1d


# SCALE.md §5 "Sizes (computed)": parameters incl. the frozen BN1d gamma, BN buffers, GMACs.
PUBLISHED = {18: (24_025_600, 14_720, 2.610), 34: (34_139_328, 25_856, 4.460),
             50: (43_590_848, 38_144, 6.309), 100: (65_156_160, 69_632, 12.090),
             200: (118_833_920, 136_064, 23.419)}


@pytest.mark.parametrize("depth", sorted(BLOCKS))
def test_iresnet_param_counts_match_published(depth):
  published, buffers, _ = PUBLISHED[depth]
  assert _iresnet_params_by_hand(BLOCKS[depth]) == published
  shapes = _shapes(create_model(ml_collections.ConfigDict({"name": f"iresnet{depth}"})))
  # The BN1d gamma is frozen at 1 in arcface_torch: here it is not a parameter.
  assert _count(shapes["params"]) == published - 512
  # BN running mean and variance (torch's num_batches_tracked not counted).
  assert _count(shapes["batch_stats"]) == buffers


def _gmacs(model, size=112):
  return flops.multiply_adds(model, (size, size, 3)) / 1e9


@pytest.mark.parametrize("depth", sorted(BLOCKS))
def test_iresnet_multiply_adds_match_published(depth):
  assert round(_gmacs(IResNet(depth=depth)), 3) == PUBLISHED[depth][2]


def test_mobilefacenet_param_counts_and_macs_match_published():
  assert _count(_shapes(MobileFaceNet())["params"]) == 2_059_520
  assert _count(_shapes(MobileFaceNetLarge())["params"]) == 6_314_880
  assert round(_gmacs(MobileFaceNet()), 3) == 0.438
  assert round(_gmacs(MobileFaceNetLarge()), 2) == 1.82


def _np_conv(x, w, stride, pad):
  """Direct convolution, NHWC x HWIO, symmetric zero padding (torch's Conv2d)."""
  x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  kh, kw, _, co = w.shape
  ho = (x.shape[1] - kh) // stride + 1
  wo = (x.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, co))
  for i in range(ho):
    for j in range(wo):
      patch = x[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
      out[:, i, j] = np.einsum("bhwc,hwco->bo", patch, w)
  return out


def _np_bn(x, p, s, eps=1e-5):
  scale = p.get("scale", np.ones_like(p["bias"]))
  return (x - s["mean"]) / np.sqrt(s["var"] + eps) * scale + p["bias"]


def test_basic_block_matches_numpy_torch_semantics():
  # Random BN statistics and affine so every BN matters; eval mode.
  block = IBasicBlock(6, stride=2)
  x = jax.random.normal(jax.random.key(1), (2, 7, 6, 4))
  variables = block.init(jax.random.key(2), x, train=False)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype),
                           variables)
  out = np.asarray(block.apply(variables, x, train=False))
  p = jax.tree.map(np.asarray, variables["params"])
  s = jax.tree.map(np.asarray, variables["batch_stats"])
  xn = np.asarray(x, np.float64)
  y = _np_bn(xn, p["bn1"], s["bn1"])
  y = _np_conv(y, p["conv1"]["kernel"], 1, 1)
  y = _np_bn(y, p["bn2"], s["bn2"])
  y = np.where(y >= 0, y, p["prelu"]["alpha"] * y)
  y = _np_conv(y, p["conv2"]["kernel"], 2, 1)  # the stride is on the second conv
  y = _np_bn(y, p["bn3"], s["bn3"])
  sc = _np_bn(_np_conv(xn, p["downsample_conv"]["kernel"], 2, 0), p["downsample_bn"],
              s["downsample_bn"])
  assert out.shape == (2, 4, 3, 6)
  np.testing.assert_allclose(out, y + sc, rtol=1e-4, atol=1e-4)


def test_small_iresnet_trains_a_step_and_bf16_runs():
  model = IResNet(blocks=(1, 1, 1, 1), width=0.25, embedding_dim=32)
  x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))  # any size >= 16 works
  variables = model.init(jax.random.key(1), x)
  (emb, feats), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert emb.shape == feats.shape == (4, 32) and feats.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
  assert not jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)),
                                       updates["batch_stats"], variables["batch_stats"]))
  emb16, _ = IResNet(blocks=(1, 1, 1, 1), width=0.25, embedding_dim=32,
                     dtype=jnp.bfloat16).apply(variables, x)
  emb32, _ = model.apply(variables, x)
  # bf16 convolutions, float32 head: embeddings agree to bf16 resolution.
  assert float(jnp.max(jnp.abs(emb16 - emb32))) < 0.05


def test_mobilefacenet_needs_112_input():
  with pytest.raises(ValueError, match="7x7 final map"):
    _shapes(MobileFaceNet(), size=96)
