"""Partial FC (facejax/losses/partial_fc.py) on one device, against independent references.

* r = 1: the full combined-margin head (`CombinedMarginHead`, kernel = weight[:C].T):
  loss and gradients.
* r < 1: numpy's margin softmax over exactly the rows the head says it sampled; every
  positive sampled, k rows per shard, padding rows never in the softmax.
* A train step on the gathered slice (`optimizer_step`: gather, update, scatter) equals
  the dense step (the head gathering inside the loss, dense autodiff gradient) with
  numpy's SGD-momentum on the sampled rows, and leaves every other row and its
  momentum untouched.
The sharded (8-device) checks are in `partial_fc_sharded_test.py`.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from facejax.losses import CombinedMarginHead, make_objective
from facejax.losses.partial_fc import (PartialFCHead, gather_trainable, optimizer_step,
                                       sample_rows)

C, D, B = 300, 8, 12


def _batch(seed=0, classes=C):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, D)).astype(np.float32)
  y = rng.integers(0, classes, B).astype(np.int32)
  mask = np.ones(B, bool)
  mask[-1] = False
  return jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask)


def _head(**kw):
  loss = dict(name="partial_fc", row_multiple=128, **kw)
  # 4 row shards on one device: the arithmetic of a 4-device mesh, unsharded.
  return make_objective(ml_collections.ConfigDict(loss), num_classes=C, feature_dim=D,
                        num_shards=4)


@pytest.mark.parametrize("margins", [(1.0, 0.5, 0.0), (1.0, 0.0, 0.4), (0.9, 0.4, 0.15)])
def test_full_rate_equals_the_full_margin_head(margins):
  m1, m2, m3 = margins
  head = _head(m1=m1, m2=m2, m3=m3, scale=32.0)
  assert head.rows == 384 and head.samples_per_shard(B) == 96
  x, y, mask = _batch()
  w = head.init({"params": jax.random.key(0)}, x, x, labels=y, mask=mask, step=0)["params"]
  full = CombinedMarginHead(num_classes=C, feature_dim=D, features="features", scale=32.0,
                            m1=m1, m2=m2, m3=m3)

  def pfc(w, x):
    return head.apply({"params": w}, x, x, labels=y, mask=mask, step=0)[0]

  def ref(w, x):
    return full.apply({"params": {"kernel": w["weight"][:C].T}}, x, x, labels=y, mask=mask,
                      step=0)[0]

  (l1, (gw1, gx1)), (l2, (gw2, gx2)) = (jax.value_and_grad(f, argnums=(0, 1))(w, x)
                                        for f in (pfc, ref))
  np.testing.assert_allclose(l1, l2, rtol=1e-6)
  np.testing.assert_allclose(gx1, gx2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gw1["weight"][:C], gw2["weight"][:C], rtol=1e-5, atol=1e-6)
  assert not np.any(np.asarray(gw1["weight"][C:]))  # padding rows get nothing


def _numpy_sampled_loss(x, y, mask, weight, rows, scale, m1, m2, m3):
  """Margin softmax over the given rows only (an independent float64 reference)."""
  x = np.asarray(x, np.float64)[np.asarray(mask)]
  y = np.asarray(y)[np.asarray(mask)]
  w = np.asarray(weight, np.float64)[rows]
  cos = np.clip((x / np.linalg.norm(x, axis=1, keepdims=True))
                @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T, -1, 1)
  pos = np.searchsorted(rows, y)
  assert np.all(rows[pos] == y)
  theta = np.arccos(np.clip(cos[np.arange(len(y)), pos], -1 + 1e-7, 1 - 1e-7))
  logits = scale * cos
  logits[np.arange(len(y)), pos] = scale * (np.cos(m1 * theta + m2) - m3)
  logits -= logits.max(1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  return -logp[np.arange(len(y)), pos].mean()


def test_sampled_loss_matches_numpy_over_the_sampled_rows():
  head = _head(sample_rate=0.2)
  k = head.samples_per_shard(B)
  assert k == max(int(0.2 * 96), B) == 19
  x, y, mask = _batch(1)
  w = head.init({"params": jax.random.key(0)}, x, x, labels=y, mask=mask, step=0)["params"]
  loss, metrics = head.apply({"params": w}, x, x, labels=y, mask=mask, step=0,
                             rngs={"sample": jax.random.key(7)})
  # The rows the head drew inside its call are the ones `sample` gives for the same key.
  index = head.apply({}, y, mask, rngs={"sample": jax.random.key(7)}, method="sample")
  rows = np.sort((np.arange(4)[:, None] * 96 + np.asarray(index)).ravel())
  assert len(rows) == 4 * k == int(metrics["sampled_classes"])
  per_shard = np.bincount(rows // 96, minlength=4)
  assert list(per_shard) == [k] * 4
  assert set(np.asarray(y)[np.asarray(mask)]) <= set(rows)  # every positive is sampled
  real = rows[rows < C]
  assert len(real) == len(rows) - np.sum(rows >= C)
  ref = _numpy_sampled_loss(x, y, mask, w["weight"], real, 64.0, 1.0, 0.5, 0.0)
  np.testing.assert_allclose(float(loss), ref, rtol=1e-5)


def test_sample_is_a_function_of_the_key_and_uniform_over_negatives():
  labels = jnp.array([5, 17, 200], jnp.int32)
  mask = jnp.ones(3, bool)
  kw = dict(num_classes=C, num_shards=4, rows_per_shard=96, k=10)
  a = sample_rows(jax.random.key(1), labels, mask, **kw)
  b = sample_rows(jax.random.key(1), labels, mask, **kw)
  c = sample_rows(jax.random.key(2), labels, mask, **kw)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  assert np.all(np.diff(np.asarray(a), axis=1) > 0)  # sorted, no repeats
  # Shard 3 holds rows 288..383, of which 288..299 are real: padding only when short.
  assert np.all(np.asarray(a[3]) + 288 < C)
  # Negatives are uniform: over many keys each real row of shard 1 (no positive) is drawn
  # about k / 96 of the time.
  draws = jax.vmap(lambda key: sample_rows(key, labels, mask, **kw))(
      jax.random.split(jax.random.key(3), 2000))
  counts = np.bincount(np.asarray(draws[:, 1]).ravel(), minlength=96)
  expected = 2000 * 10 / 96
  assert abs(counts.mean() - expected) < 1e-9 and counts.min() > 0.7 * expected
  assert counts.max() < 1.3 * expected


def test_sliced_step_equals_the_dense_step_on_the_sampled_rows():
  head = _head(sample_rate=0.1)
  x, y, mask = _batch(2)
  w = head.init({"params": jax.random.key(0)}, x, x, labels=y, mask=mask, step=0)["params"]
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))
  trainable = {"model": {}, "head": w}
  # A first step with momentum already non-zero everywhere, so "unchanged" means something.
  opt_state = jax.tree.map(lambda a: a + 0.01 if a.dtype == jnp.float32 else a,
                           tx.init(trainable))
  key = jax.random.key(4)

  # The reference: the dense gradient of the head's own sampled call.
  dense = jax.grad(lambda t: head.apply({"params": t["head"]}, x, x, labels=y, mask=mask,
                                        step=0, rngs={"sample": key})[0])(trainable)
  dense_w = np.asarray(dense["head"]["weight"], np.float64)

  # The trainer's step: the slice's loss, gradient and optimizer update (at half the
  # learning rate, the trainer's rollback scale), written back.
  index = head.apply({}, y, mask, rngs={"sample": key}, method="sample")
  rows, _ = gather_trainable(tx, trainable, opt_state, index)
  assert rows["head"]["weight"].shape == (4, head.samples_per_shard(B), D)

  def loss_fn(t, head_kwargs):
    assert t["head"]["weight"].shape == rows["head"]["weight"].shape
    return head.apply({"params": t["head"]}, x, x, labels=y, mask=mask, step=0,
                      **head_kwargs)[0], None

  new, new_state, _, _, _ = optimizer_step(tx, trainable, opt_state, loss_fn, index,
                                           update_scale=0.5)

  sampled = np.zeros(384, bool)
  sampled[(np.arange(4)[:, None] * 96 + np.asarray(index)).ravel()] = True
  assert not np.any(dense_w[~sampled])  # the dense gradient agrees on which rows are used
  w0 = np.asarray(w["weight"], np.float64)
  old_m = np.asarray(opt_state[1][0].trace["head"]["weight"], np.float64)
  m = 0.9 * old_m + dense_w + 5e-4 * w0
  new_w = np.asarray(new["head"]["weight"])
  new_m = np.asarray(new_state[1][0].trace["head"]["weight"])
  np.testing.assert_array_equal(new_w[~sampled], np.asarray(w["weight"])[~sampled])
  np.testing.assert_array_equal(new_m[~sampled], old_m[~sampled].astype(np.float32))
  np.testing.assert_allclose(new_m[sampled], m[sampled], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(new_w[sampled], (w0 - 0.05 * m)[sampled], rtol=1e-5, atol=1e-7)


def test_bad_settings_name_the_key():
  from facejax.errors import ConfigError
  with pytest.raises(ConfigError, match="sample_rate=1.5"):
    _head(sample_rate=1.5)
  with pytest.raises(ConfigError, match="row_multiple=100 is not a multiple of the 3 devices"):
    make_objective(ml_collections.ConfigDict(dict(name="partial_fc", row_multiple=100)),
                   num_classes=C, feature_dim=D, num_shards=3)
  assert isinstance(_head(), PartialFCHead)


def test_accumulated_sampled_steps_update_the_union_of_their_rows_once():
  """optax.MultiSteps over a sampled head: two micro-steps sample other rows; the update at
  the second applies their mean dense gradient to the union of both samples, and every other
  row keeps its weight and momentum bit for bit."""
  head = _head(sample_rate=0.1)
  (x1, y1, m1), (x2, y2, m2) = _batch(2), _batch(3)
  w = head.init({"params": jax.random.key(0)}, x1, x1, labels=y1, mask=m1, step=0)["params"]
  tx = optax.MultiSteps(optax.chain(optax.add_decayed_weights(5e-4),
                                    optax.sgd(0.1, momentum=0.9)), every_k_schedule=2)
  tx = tx.gradient_transformation()
  trainable = {"model": {}, "head": w}
  state = tx.init(trainable)
  inner = jax.tree.map(lambda a: a + 0.01 if a.dtype == jnp.float32 else a,
                       state.inner_opt_state)  # momentum non-zero everywhere
  state = state._replace(inner_opt_state=inner)
  keys = jax.random.key(5), jax.random.key(6)

  def dense_grad(x, y, mask, key):
    g = jax.grad(lambda t: head.apply({"params": t["head"]}, x, x, labels=y, mask=mask,
                                      step=0, rngs={"sample": key})[0])(trainable)
    return np.asarray(g["head"]["weight"], np.float64)

  sampled = np.zeros(384, bool)
  t, s = trainable, state
  for (x, y, mask), key in zip([(x1, y1, m1), (x2, y2, m2)], keys):
    index = head.apply({}, y, mask, rngs={"sample": key}, method="sample")
    sampled[(np.arange(4)[:, None] * 96 + np.asarray(index)).ravel()] = True

    def loss_fn(p, head_kwargs, x=x, y=y, mask=mask):
      return head.apply({"params": p["head"]}, x, x, labels=y, mask=mask, step=0,
                        **head_kwargs)[0], None

    t, s, _, _, _ = optimizer_step(tx, t, s, loss_fn, index, update_scale=0.5)
    if key is keys[0]:  # the first micro-step only accumulates
      np.testing.assert_array_equal(np.asarray(t["head"]["weight"]), np.asarray(w["weight"]))
  assert 0 < sampled.sum() < 384

  mean_g = (dense_grad(x1, y1, m1, keys[0]) + dense_grad(x2, y2, m2, keys[1])) / 2
  assert not np.any(mean_g[~sampled])
  w0 = np.asarray(w["weight"], np.float64)
  old_m = np.asarray(inner[1][0].trace["head"]["weight"], np.float64)
  m = 0.9 * old_m + mean_g + 5e-4 * w0
  new_w = np.asarray(t["head"]["weight"])
  new_m = np.asarray(s.inner_opt_state[1][0].trace["head"]["weight"])
  np.testing.assert_array_equal(new_w[~sampled], np.asarray(w["weight"])[~sampled])
  np.testing.assert_array_equal(new_m[~sampled], old_m[~sampled].astype(np.float32))
  np.testing.assert_allclose(new_m[sampled], m[sampled], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(new_w[sampled], (w0 - 0.05 * m)[sampled], rtol=1e-5, atol=1e-7)
  assert not np.any(np.asarray(s.acc_grads["head"]["weight"]))  # reset for the next window
