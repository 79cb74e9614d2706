"""NN1 against the FaceNet paper's Table 1 figures and basic embedding invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax.models import NN1, LocalResponseNorm, MaxoutDense, create_model
import ml_collections


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def test_param_count_matches_paper():
  # Paper Table 1: 140M. Our exact count, from the layer table by hand:
  # convs 9,472+4,160+110,784+37,056+663,936+147,840+884,992+65,792+590,080
  #       +65,792+590,080 = 3,169,984; fc1 12544*8192+8192 = 102,768,640;
  #       fc2 4096*8192+8192 = 33,562,624; fc7128 4096*128+128 = 524,416.
  shapes = jax.eval_shape(NN1().init, jax.random.key(0), jnp.zeros((1, 220, 220, 3)))
  n = _count(shapes)
  assert n == 3_169_984 + 102_768_640 + 33_562_624 + 524_416
  assert abs(n - 140e6) / 140e6 < 0.01


def _analytic_macs(h):
  """Multiply-adds of NN1's convs and FCs at input h x h, from the paper's table."""
  convs = [  # (k, cin, cout, output size)
      (7, 3, 64, 110), (1, 64, 64, 55), (3, 64, 192, 55), (1, 192, 192, 28),
      (3, 192, 384, 28), (1, 384, 384, 14), (3, 384, 256, 14), (1, 256, 256, 14),
      (3, 256, 256, 14), (1, 256, 256, 14), (3, 256, 256, 14)]
  assert h == 220
  macs = sum(k * k * ci * co * s * s for k, ci, co, s in convs)
  return macs + 12544 * 8192 + 4096 * 8192 + 4096 * 128


def test_flops_match_paper():
  model = NN1()
  x = jnp.zeros((1, 220, 220, 3), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)
  cost = jax.jit(model.apply).lower(params, x).cost_analysis()
  xla_macs = cost["flops"] / 2
  # XLA counts 2 flops per multiply-add and skips taps that land on zero
  # padding, so it sits a few percent under the dense count (1.606 G).
  assert abs(_analytic_macs(220) - 1.606e9) / 1.606e9 < 0.002
  assert abs(xla_macs - 1.6e9) / 1.6e9 < 0.05, xla_macs
  assert xla_macs < _analytic_macs(220)


def test_embeddings_are_unit_norm_and_shaped():
  model = NN1(embedding_dim=64, maxout_features=32, conv_width=0.25)
  x = jax.random.normal(jax.random.key(1), (3, 64, 64, 3))
  params = model.init(jax.random.key(0), x)
  e, features = model.apply(params, x)
  assert e.shape == (3, 64) and e.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(np.asarray(e), axis=1), 1.0, atol=1e-5)
  # The second output is the same vectors before the normalisation.
  assert features.shape == (3, 64)
  np.testing.assert_allclose(
      np.asarray(features) / np.linalg.norm(np.asarray(features), axis=1, keepdims=True),
      np.asarray(e), atol=1e-6)


def test_fc1_fan_in_follows_table():
  # pool4 output 7x7x256 = 12544 inputs to fc1, which has 8192 linear units.
  shapes = jax.eval_shape(NN1().init, jax.random.key(0), jnp.zeros((1, 220, 220, 3)))
  assert shapes["params"]["fc1"]["linear"]["kernel"].shape == (12544, 8192)
  assert shapes["params"]["conv3"]["kernel"].shape == (3, 3, 192, 384)


def test_lrn_matches_numpy_formula():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 3, 3, 7)).astype(np.float32) * 10
  size, alpha, beta, k = 5, 1e-2, 0.75, 1.0
  y = LocalResponseNorm(size, alpha, beta, k).apply({}, jnp.asarray(x))
  ref = np.empty_like(x)
  for c in range(7):
    lo, hi = max(0, c - 2), min(7, c + 3)
    s = np.sum(x[..., lo:hi] ** 2, axis=-1)
    ref[..., c] = x[..., c] / (k + alpha / size * s) ** beta
  np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5)


def test_maxout_takes_max_of_adjacent_pairs():
  layer = MaxoutDense(3, num_pieces=2)
  x = jnp.arange(4.0).reshape(1, 4)
  params = layer.init(jax.random.key(0), x)
  y = layer.apply(params, x)
  w = params["params"]["linear"]["kernel"]
  b = params["params"]["linear"]["bias"]
  lin = np.asarray(x @ w + b).reshape(3, 2)
  np.testing.assert_allclose(np.asarray(y)[0], lin.max(axis=1), rtol=1e-6)


def test_registry_rejects_unknown_names_and_keys():
  with pytest.raises(ValueError, match="config.model.name"):
    create_model(ml_collections.ConfigDict({"name": "nope"}))
  with pytest.raises(ValueError, match="config.model"):
    create_model(ml_collections.ConfigDict({"name": "nn1", "bogus": 1}))
  m = create_model(ml_collections.ConfigDict({"name": "nn1", "embedding_dim": 32, "dtype": "bfloat16"}))
  assert m.embedding_dim == 32 and m.dtype == jnp.bfloat16


def test_batch_norm_variant_keeps_stats_and_uses_them_at_eval():
  model = NN1(embedding_dim=16, maxout_features=16, conv_width=0.125, batch_norm=True)
  x = jax.random.normal(jax.random.key(2), (6, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  assert "batch_stats" in variables and "bias" not in variables["params"]["conv1"]
  (e_train, _), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree.leaves(changed))
  e_eval, _ = model.apply(variables, x, train=False)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(e_train), axis=1), 1.0, atol=1e-5)
  # Eval mode uses the running averages, so it differs from the batch-stats output.
  assert not np.allclose(np.asarray(e_train), np.asarray(e_eval))
