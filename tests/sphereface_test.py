"""SphereFace-20/36/64 against hand-computed parameter and multiply-add counts."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from facejax.losses import batch_all_triplet_loss
from facejax.models import MODELS, SphereFace, create_model

H, W = 112, 96
WIDTHS = (64, 128, 256, 512)
UNITS = {20: (1, 2, 4, 1), 36: (2, 4, 8, 2), 64: (3, 8, 16, 3)}


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _shapes(model):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, H, W, 3)))


def _expected_params(units):
  """Learnable params: opener 3x3 convs + biases, bias-free residual convs, PReLUs, fc5."""
  n, cin = 0, 3
  for u, c in zip(units, WIDTHS):
    n += 9 * cin * c + c + c  # stride-2 opener: weights, bias, PReLU slopes
    n += u * 2 * (9 * c * c + c)  # residual unit: 2 convs + 2 PReLUs, no bias
    cin = c
  return n + 7 * 6 * 512 * 512 + 512  # fc5 on the 7x6x512 map


def test_param_counts_match_hand_arithmetic():
  # SphereFace-20 weights by hand (NETS.md §5.1):
  #   conv1_1 27*64 = 1,728; 1 unit x 2 x 9*64*64 = 73,728
  #   conv2_1 9*64*128 = 73,728; 2 units x 2 x 9*128*128 = 589,824
  #   conv3_1 9*128*256 = 294,912; 4 units x 2 x 9*256*256 = 4,718,592
  #   conv4_1 9*256*512 = 1,179,648; 1 unit x 2 x 9*512*512 = 4,718,592
  #   fc5 21,504*512 = 11,010,048                       -> 22,660,800 weights
  # + learned biases 64+128+256+512+512 = 1,472
  # + PReLU slopes 64*3 + 128*5 + 256*9 + 512*3 = 4,672   -> 22,666,944
  n20 = _count(_shapes(SphereFace(depth=20)))
  assert n20 == 22_660_800 + 1_472 + 4_672 == _expected_params(UNITS[20])
  assert abs(n20 - 22.67e6) / 22.67e6 < 1e-3  # NETS.md [calc] 22.67M
  # SphereFace-36 weights 32,761,536 + biases 1,472 + slopes 64*5+128*9+256*17+512*5 = 8,384.
  # SphereFace-64 weights 48,170,688 + biases 1,472 + slopes 64*7+128*17+256*33+512*7 = 14,656.
  # (NETS.md's 32.78M / 48.20M also count Caffe's frozen-zero residual biases,
  #  7,424 / 13,696 of them, which we omit.)
  n36 = _count(_shapes(SphereFace(depth=36)))
  n64 = _count(_shapes(SphereFace(depth=64)))
  assert n36 == 32_761_536 + 1_472 + 8_384 == _expected_params(UNITS[36])
  assert n64 == 48_170_688 + 1_472 + 14_656 == _expected_params(UNITS[64])
  assert abs(n36 + 7_424 - 32.78e6) / 32.78e6 < 1e-3
  assert abs(n64 + 13_696 - 48.20e6) / 48.20e6 < 1e-3


def test_layer_shapes_and_init_follow_prototxt():
  model = SphereFace(depth=64)
  p = _shapes(model)["params"]
  assert p["fc5"]["kernel"].shape == (7 * 6 * 512, 512)
  assert p["conv1_1"]["kernel"].shape == (3, 3, 3, 64) and "bias" in p["conv1_1"]
  assert "bias" not in p["conv3_2"] and p["relu3_2"]["alpha"].shape == (256,)
  # 64: stage 2 has 8 units -> conv2_1 .. conv2_17 (make_spherenet.py).
  assert "conv2_17" in p and "conv2_18" not in p and "conv3_33" in p and "conv4_7" in p
  # Init statistics do not depend on the input size: a 32x32 input is cheaper.
  v = SphereFace(depth=20, width=0.25).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))["params"]
  np.testing.assert_array_equal(np.asarray(v["relu2_3"]["alpha"]), 0.25)
  np.testing.assert_array_equal(np.asarray(v["conv2_1"]["bias"]), 0.0)
  k = np.asarray(v["conv3_1"]["kernel"])  # Caffe xavier: U(+-sqrt(3 / fan_in))
  bound = np.sqrt(3.0 / (9 * 32))
  assert np.abs(k).max() <= bound and np.abs(k).max() > 0.9 * bound
  assert abs(np.asarray(v["conv3_4"]["kernel"]).std() - 0.01) < 0.001


def _analytic_macs(units, skip_padding):
  """Multiply-adds at 112x96; with `skip_padding`, only taps inside the image."""
  def taps(n, stride):  # (output, tap) pairs along one axis, 3-tap kernel, pad 1
    out = (n - 1) // stride + 1
    return sum(1 for i in range(out) for t in range(3)
               if not skip_padding or 0 <= i * stride - 1 + t < n), out
  h, w, cin, macs = H, W, 3, 0
  for u, c in zip(units, WIDTHS):
    (th, h), (tw, w) = taps(h, 2), taps(w, 2)
    macs += th * tw * cin * c
    th, tw = taps(h, 1)[0], taps(w, 1)[0]
    macs += 2 * u * th * tw * c * c
    cin = c
  return macs + h * w * cin * 512


@pytest.mark.parametrize("depth,published", [(20, 1.75e9), (36, 3.34e9), (64, 6.11e9)])
def test_flops_match_counts(depth, published):
  # Dense counts by hand for 20: 4.64M + 198.18M (stage 1), 49.55M + 396.36M,
  # 49.55M + 792.72M, 49.55M + 198.18M, fc5 11.01M = 1,749,737,472.
  dense = _analytic_macs(UNITS[depth], skip_padding=False)
  assert abs(dense - published) / published < 0.005
  if depth == 20:
    assert dense == 1_749_737_472
  model = SphereFace(depth=depth)
  x = jnp.zeros((1, H, W, 3), jnp.float32)
  xla_macs = jax.jit(model.apply).lower(_shapes(model), x).cost_analysis()["flops"] / 2
  # XLA skips taps on zero padding (7x6 maps lose ~20% of 3x3 taps), so it sits
  # ~9% under the dense figure; against the padding-free count it is exact up
  # to the element-wise PReLU/add flops.
  assert abs(xla_macs - published) / published < 0.10, xla_macs
  valid = _analytic_macs(UNITS[depth], skip_padding=True)
  assert 0 <= xla_macs - valid < 0.01 * valid


def test_embeddings_are_unit_norm_and_shaped():
  x = jax.random.normal(jax.random.key(1), (3, H, W, 3))
  variables = None
  for dtype in ("float32", "bfloat16"):
    model = create_model(ml_collections.ConfigDict(
        {"name": "sphereface20", "embedding_dim": 32, "width": 0.125, "dtype": dtype}))
    assert model.depth == 20
    variables = variables or model.init(jax.random.key(0), x)  # params are float32 for both
    assert "batch_stats" not in variables
    e, _ = model.apply(variables, x, train=True)
    assert e.shape == (3, 32) and e.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(np.asarray(e), axis=1), 1.0, atol=1e-5)
  assert {"sphereface20", "sphereface36", "sphereface64"} <= set(MODELS)
  assert create_model(ml_collections.ConfigDict({"name": "sphereface64"})).stage_units() == (3, 8, 16, 3)


def test_training_steps_lower_loss_on_fixed_batch():
  model = SphereFace(depth=20, width=0.125, embedding_dim=32)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(12, H, W, 3)).astype(np.float32))
  labels = jnp.repeat(jnp.arange(4), 3)
  mask = jnp.ones(12, bool)
  params = model.init(jax.random.key(0), images[:1])["params"]
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  def loss_fn(p):
    emb, _ = model.apply({"params": p}, images, train=True)
    return batch_all_triplet_loss(emb, labels, mask)[0]

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(loss_fn)(p)
    updates, s = tx.update(g, s, p)
    return optax.apply_updates(p, updates), s, loss

  before = float(jax.jit(loss_fn)(params))
  for _ in range(5):
    params, opt_state, _ = step(params, opt_state)
  after = float(jax.jit(loss_fn)(params))
  assert before > 0 and after < 0.8 * before, (before, after)


def test_zeroed_residual_units_are_identities():
  # out = x + PReLU(conv(PReLU(conv(x)))) with nothing after the add: zero
  # residual kernels (no biases there) must leave the opener-only net's output.
  deep, plain = SphereFace(depth=20, width=0.125), SphereFace(units=(0, 0, 0, 0), width=0.125)
  x = jax.random.normal(jax.random.key(3), (2, H, W, 3))
  params = deep.init(jax.random.key(0), x)["params"]
  zeroed = {k: ({"kernel": jnp.zeros_like(v["kernel"])} if k.startswith("conv") and
                not k.endswith("_1") else v) for k, v in params.items()}
  kept = {k: v for k, v in params.items() if k.endswith("_1") or k == "fc5"}
  np.testing.assert_allclose(np.asarray(deep.apply({"params": zeroed}, x)[0]),
                             np.asarray(plain.apply({"params": kept}, x)[0]), atol=1e-6)
  assert not np.allclose(np.asarray(deep.apply({"params": params}, x)[0]),
                         np.asarray(plain.apply({"params": kept}, x)[0]), atol=1e-6)
