"""OpenFace nn4.small2 against its published parameter count and a hand MAC count."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from facejax.losses import batch_all_triplet_loss
from facejax.models import create_model
from facejax.models.openface import POOLING_GEOMETRIES, NN4Small2, _pad_to, _pool3x3

GEOMETRIES = ("def", "v1")


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _shapes(model, size=96):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


def _np_variables(model, size, seed=0):
  """Variables drawn on the host like the module's init (Torch-default uniform
  kernels, zero biases, BN identity): compiling `model.init` for this many
  tensors takes ~30 s on a loaded 2-core machine, this takes milliseconds."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == "kernel":
      bound = 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.uniform(-bound, bound, leaf.shape), jnp.float32)
    return jnp.ones(leaf.shape) if name in ("scale", "var") else jnp.zeros(leaf.shape)

  return jax.tree_util.tree_map_with_path(draw, _shapes(model, size))


# Per unit: k*k*cin*cout weights + cout conv bias + 2*cout BN gamma/beta.
# stem: conv1 9,408+64+128 = 9,600; conv2 4,096+192 = 4,288; conv3 110,592+576 = 111,168.
# 3a (in 192): 3x3r 18,720 + 3x3 110,976 + 5x5r 3,120 + 5x5 12,896 + proj 6,240 + 1x1 12,480.
# 3b (in 256): 24,864 + 110,976 + 8,288 + 51,392 + 16,576 + 16,576.
# 3c (in 320): 41,344 + 295,680 + 10,336 + 51,392.
# 4a (in 640): 61,728 + 166,464 + 20,576 + 51,392 + 82,304 + 164,608.
# 4e (in 640): 102,880 + 369,408 + 41,152 + 205,184.
# 5a (in 1024): 98,592 + 332,928 + proj 98,592 + 1x1 262,912.
# 5b (in 736): 70,944 + 332,928 + 70,944 + 189,184.   Linear 736*128 + 128 = 94,336.
_EXPECTED = {
    "conv1": 9_600, "conv2": 4_288, "conv3": 111_168,
    "inception_3a": 164_432, "inception_3b": 228_672, "inception_3c": 398_752,
    "inception_4a": 547_072, "inception_4e": 718_624, "inception_5a": 793_024,
    "inception_5b": 664_000, "linear": 94_336,
}


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_param_count_matches_openface(geometry):
  shapes = _shapes(NN4Small2(pooling_geometry=geometry))
  per_layer = {k: _count(v) for k, v in shapes["params"].items()}
  assert per_layer == _EXPECTED
  # OpenFace's published count (docs and def header): BN running stats excluded.
  assert _count(shapes["params"]) == sum(_EXPECTED.values()) == 3_733_968
  # 2 running stats per BN channel (not parameters).
  assert _count(shapes["batch_stats"]) == 9_312


def _macs(geometry, dense):
  """Conv/Linear multiply-adds at 96x96; dense=False skips taps on zero padding."""
  def taps(n, k, s):  # (output size, kernel taps inside the input along one axis)
    p = (k - 1) // 2
    out = (n + 2 * p - k) // s + 1
    return out, sum(1 for o in range(out) for i in range(k) if 0 <= o * s - p + i < n)

  total = 0

  def conv(n, k, cin, cout, s=1):
    nonlocal total
    out, t = taps(n, k, s)
    total += cin * cout * (k * k * out * out if dense else t * t)
    return out

  n = conv(96, 7, 3, 64, 2)   # 48: 9,408 weights * 2,304 = 21.7M
  n = (n - 1) // 2 + 1        # pool1 -> 24
  conv(n, 1, 64, 64)          # 2.4M
  conv(n, 3, 64, 192)         # 63.7M
  n = (n - 1) // 2 + 1        # pool2 -> 12
  modules = [  # name, cin, #1x1, #3x3r, #3x3, #5x5r, #5x5, proj, stride
      ("3a", 192, 64, 96, 128, 16, 32, 32, 1), ("3b", 256, 64, 96, 128, 32, 64, 64, 1),
      ("3c", 320, 0, 128, 256, 32, 64, 0, 2), ("4a", 640, 256, 96, 192, 32, 64, 128, 1),
      ("4e", 640, 0, 160, 256, 64, 128, 0, 2), ("5a", 1024, 256, 96, 384, 0, 0, 96, 1),
      ("5b", 736, 256, 96, 384, 0, 0, 96, 1)]
  for name, cin, n1, n3r, n3, n5r, n5, proj, stride in modules:
    _, pool_stride, pool_pad = POOLING_GEOMETRIES[geometry][name]
    conv(n, 1, cin, n3r)
    out = conv(n, 3, n3r, n3, stride)
    if n5:
      conv(n, 1, cin, n5r)
      conv(n, 5, n5r, n5, stride)
    if proj:  # the projection runs on the (possibly smaller) pooled map
      conv((n + 2 * pool_pad - 3) // pool_stride + 1, 1, cin, proj)
    if n1:
      conv(n, 1, cin, n1)
    n = out
  return total + 736 * 128


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_flops_match_hand_count(geometry):
  # No published MAC figure for nn4.small2 (NETS.md §3.2 gives ~207M, which
  # runs the pool projections at full resolution). Our dense per-layer count:
  # def: stem 87,736,320; 3a 23,519,232; 3b 32,014,336 (proj on 10x10);
  #      3c 19,832,832; 4a 17,973,248 (proj on 4x4); 4e 10,321,920;
  #      5a 6,328,320 (proj on 1x1); 5b 5,953,536; linear 94,208 = 203,773,952.
  # v1: the projections run on 5x5 (3a), 4x4 (3b), 2x2 (4a), 1x1 (5a, 5b)
  #      = 200,118,272.
  dense = {"def": 203_773_952, "v1": 200_118_272}[geometry]
  assert _macs(geometry, dense=True) == dense
  model = NN4Small2(pooling_geometry=geometry)
  x = jnp.zeros((1, 96, 96, 3), jnp.float32)
  xla_macs = jax.jit(model.apply).lower(_shapes(model), x).cost_analysis()["flops"] / 2
  assert abs(xla_macs - dense) / dense < 0.10, xla_macs
  # XLA skips taps on zero padding (conv1's 7x7 p3 most of all) and adds the
  # elementwise BN/LRN/pool work (~1%): pin it between those two bounds.
  sparse = _macs(geometry, dense=False)
  assert sparse <= xla_macs < 1.02 * sparse, (xla_macs, sparse)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_embeddings_are_unit_norm_128d(geometry):
  model = NN4Small2(pooling_geometry=geometry)
  x = jax.random.uniform(jax.random.key(1), (3, 96, 96, 3))
  variables = _np_variables(model, 96)
  e, _ = jax.jit(model.apply)(variables, x)
  assert e.shape == (3, 128) and e.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(np.asarray(e), axis=1), 1.0, atol=1e-5)
  assert np.all(np.isfinite(np.asarray(e)))


# (input size, expected pooled size) of each pool branch at 96x96 (NETS.md §3.3).
_POOLED = {
    "def": {"3a": (12, 12), "3b": (12, 10), "3c": (12, 6), "4a": (6, 4), "4e": (6, 3),
            "5a": (3, 1), "5b": (3, 3)},
    "v1": {"3a": (12, 5), "3b": (12, 4), "3c": (12, 5), "4a": (6, 2), "4e": (6, 2),
           "5a": (3, 1), "5b": (3, 1)},
}


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_pool_branch_sizes_follow_table(geometry):
  for name, (n, pooled) in _POOLED[geometry].items():
    out = _pool3x3(jnp.ones((1, n, n, 2)), *POOLING_GEOMETRIES[geometry][name])
    assert out.shape == (1, pooled, pooled, 2), name


def test_l2_pool_and_centred_pad():
  x = np.random.default_rng(0).normal(size=(1, 6, 6, 2)).astype(np.float32)
  y = np.asarray(_pool3x3(jnp.asarray(x), "l2", 3, 0))
  ref = np.sqrt((x.reshape(1, 2, 3, 2, 3, 2) ** 2).sum(axis=(2, 4)))
  np.testing.assert_allclose(y, ref, rtol=1e-5)
  # Gradient on an all-zero window is finite (eps inside the sqrt).
  g = jax.grad(lambda v: _pool3x3(v, "l2", 1, 0).sum())(jnp.zeros((1, 3, 3, 1)))
  assert np.all(np.isfinite(np.asarray(g)))
  # Torch DepthConcat: floor(diff/2) before, the rest after (v1 3a: 5 -> 12 = 3 + 5 + 4).
  p = np.asarray(_pad_to(jnp.ones((1, 5, 5, 1)), 12, 12))[0, :, 6, 0]
  np.testing.assert_array_equal(p, [0] * 3 + [1] * 5 + [0] * 4)


def test_rejects_small_inputs_and_unknown_geometry():
  with pytest.raises(ValueError, match="at least 65"):
    _shapes(NN4Small2(), size=64)
  _shapes(NN4Small2(), size=65)
  with pytest.raises(ValueError, match="pooling_geometry"):
    _shapes(NN4Small2(pooling_geometry="nope"))


def test_registry_builds_both_geometries():
  m = create_model(ml_collections.ConfigDict(
      {"name": "nn4_small2", "pooling_geometry": "v1", "embedding_dim": 64, "dtype": "bfloat16"}))
  assert isinstance(m, NN4Small2) and m.pooling_geometry == "v1" and m.dtype == jnp.bfloat16


def _fixed_batch(size=72):
  # 4 identities x 2 images: a noise "face" per identity plus small per-image noise.
  k1, k2 = jax.random.split(jax.random.key(3))
  base = jax.random.uniform(k1, (4, 1, size, size, 3))
  x = base + 0.3 * jax.random.normal(k2, (4, 2, size, size, 3))
  return x.reshape(8, size, size, 3), jnp.repeat(jnp.arange(4), 2), jnp.ones(8, bool)


def test_training_steps_lower_loss_on_fixed_batch():
  # 72x72 keeps 5a/5b at 3x3 (as at 96) while halving the cost.
  model = NN4Small2(embedding_dim=32)
  x, labels, mask = _fixed_batch()
  variables = _np_variables(model, 72)
  tx = optax.adam(1e-3)

  def loss_fn(params, stats):
    (emb, _), upd = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                mutable=["batch_stats"])
    return batch_all_triplet_loss(emb, labels, mask, margin=0.2)[0], upd["batch_stats"]

  @jax.jit
  def step(params, stats, opt_state):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  losses = []
  for _ in range(5):  # step i returns the loss of the params before its update
    params, stats, opt_state, loss = step(params, stats, opt_state)
    losses.append(float(loss))
  assert np.isfinite(losses).all() and losses[0] > 0
  assert losses[-1] < 0.7 * losses[0], losses


def test_batch_stats_update_in_train_and_are_used_in_eval():
  model = NN4Small2(embedding_dim=16)
  x = _fixed_batch()[0]
  variables = _np_variables(model, 72)
  apply_train = jax.jit(lambda v, x: model.apply(
      v, x, train=True, mutable=["batch_stats", "intermediates"],
      capture_intermediates=lambda mdl, _: mdl.path == ("conv1", "conv")))
  (e_train, _), updates = apply_train(variables, x)
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree.leaves(changed))
  # Torch momentum 0.1 (flax 0.9): running mean = 0.9 * 0 + 0.1 * batch mean.
  conv1_out = np.asarray(updates["intermediates"]["conv1"]["conv"]["__call__"][0])
  np.testing.assert_allclose(np.asarray(updates["batch_stats"]["conv1"]["bn"]["mean"]),
                             0.1 * conv1_out.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-6)
  apply_eval = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  e_eval = apply_eval(variables, x)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(e_eval), axis=1), 1.0, atol=1e-5)
  # Eval uses the running averages (init: mean 0, var 1), not the batch stats.
  assert not np.allclose(np.asarray(e_train), np.asarray(e_eval), atol=1e-3)
  # ... and is per-example: a different batch companion does not change it.
  np.testing.assert_allclose(np.asarray(apply_eval(variables, x[:2]))[0],
                             np.asarray(e_eval)[0], atol=1e-5)
