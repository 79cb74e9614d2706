"""EMA of the weights, gradient accumulation and the polynomial schedule, against
hand-worked references; EMA resume is bit-exact and a changed EMA setting is refused."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import common
from facejax import checkpointing, optimizers, train
from train_test import _config


def test_polynomial_warmup_schedule_is_arcface_torchs():
  cfg = common.optimizer("sgd", 0.1, schedule=dict(name="polynomial", warmup_steps=10,
                                                   power=1.0))
  schedule = optimizers.create_learning_rate_schedule(cfg, 110)
  for t in (0, 3, 10, 47, 109, 110):
    # PolynomialLRWarmup: base t / w during warm-up, then base (1 - (t - w) / (T - w)).
    want = 0.1 * t / 10 if t < 10 else 0.1 * (1 - (t - 10) / 100)
    assert float(schedule(t)) == pytest.approx(want, abs=1e-7), t


def test_accumulated_steps_apply_the_mean_gradient_once():
  cfg = common.optimizer("sgd", 0.5, momentum=0.9, accumulate_steps=2)
  tx = optimizers.create_optimizer(cfg, 100)
  params = {"w": jnp.array([1.0, -2.0])}
  state = tx.init(params)
  g1, g2 = {"w": jnp.array([0.2, 0.4])}, {"w": jnp.array([-0.6, 1.0])}
  u1, state = tx.update(g1, state, params)
  assert not np.any(np.asarray(u1["w"]))  # the first micro-step only accumulates
  u2, state = tx.update(g2, state, params)
  # One SGD-momentum step (empty trace) on the mean gradient.
  np.testing.assert_allclose(u2["w"], -0.5 * (np.array([0.2, 0.4]) + [-0.6, 1.0]) / 2,
                             rtol=1e-6)
  # The schedule counts updates: 100 steps of 2 micro-steps each is 50 updates.
  cfg = common.optimizer("sgd", 1.0, schedule=dict(name="polynomial", warmup_steps=0),
                         accumulate_steps=2)
  tx = optimizers.create_optimizer(cfg, 100)
  state = tx.init(params)
  for _ in range(50):  # 25 updates: half way down the decay
    _, state = tx.update(g1, state, params)
  u, _ = tx.update(g1, state, params)
  _, state2 = tx.update(g1, state, params)
  u, _ = tx.update(g1, state2, params)
  np.testing.assert_allclose(u["w"], -(1 - 25 / 50) * np.array([0.2, 0.4]), rtol=1e-5)


def test_ema_follows_tfs_rule_and_is_what_evaluation_sees(smoke_config):
  c = _config(smoke_config, 3)
  c.ema_decay = 0.9
  from facejax.models import create_model
  model = create_model(c.model)
  tx = optimizers.create_optimizer(c.optimizer, c.num_train_steps)
  mesh = train.make_mesh()
  state = train.create_sharded_train_state(c, model, tx, jax.random.key(0), mesh)
  step = train.make_jitted_step(c, model, tx, mesh)
  rng = np.random.default_rng(0)
  ema = jax.device_get(state.params)
  for t in range(3):
    batch = {"image": rng.normal(size=(c.batch_size, 32, 32, 3)).astype(np.float32),
             "label": np.repeat(np.arange(c.num_identities), c.images_per_identity).astype(
                 np.int32), "mask": np.ones(c.batch_size, bool)}
    state, _ = step(state, train.shard_batch(batch, mesh))
    d = min(0.9, (1 + t) / (10 + t))  # TF ExponentialMovingAverage with num_updates
    ema = jax.tree.map(lambda e, p: d * e + (1 - d) * np.asarray(p), ema,
                       jax.device_get(state.params))
  for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(jax.device_get(state.ema_params))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert jax.tree.leaves(state.eval_vars()["params"])[0] is jax.tree.leaves(state.ema_params)[0]
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.ema_params),
                                                      jax.tree.leaves(state.params)))
  back = state.with_checkpoint(state.eval_vars(), state.train_vars())
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_ema_run_resumes_bit_exact_and_a_changed_setting_is_refused(smoke_config, tmp_path):
  c = _config(smoke_config, 4)
  c.ema_decay = 0.99
  straight = train.train_and_evaluate(c, str(tmp_path / "a"))
  c2 = _config(smoke_config, 2)
  c2.ema_decay = 0.99
  train.train_and_evaluate(c2, str(tmp_path / "b"))
  resumed = train.train_and_evaluate(c, str(tmp_path / "b"))
  for a, b in zip(jax.tree.leaves((straight.params, straight.ema_params, straight.opt_state)),
                  jax.tree.leaves((resumed.params, resumed.ema_params, resumed.opt_state))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  off = _config(smoke_config, 6)
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="ema_decay=0.0"):
    train.train_and_evaluate(off, str(tmp_path / "b"))
  assert checkpointing.make_manager(str(tmp_path / "b"), read_only=True).latest_step() == 4
