"""Divergence guard: real NaN and collapse runs are caught, and stop or roll back as configured."""

import logging

import jax
import numpy as np
import pytest

from configs import common
from facejax import checkpointing, train


def _config(smoke_config, *, loss, lr, steps=8, action="stop", schedule="constant", **schedule_kw):
  c = smoke_config.copy_and_resolve_references()
  c.num_train_steps = steps
  c.checkpoint.every_steps = 2
  c.checkpoint.max_to_keep = 10
  c.evals = {}
  c.loss.name = loss
  c.optimizer = common.optimizer("sgd", lr, schedule=dict(name=schedule, warmup_steps=0,
                                                          **schedule_kw))
  c.divergence.action = action
  return c


def test_guard_reasons_against_hand_made_metrics():
  guard = train.DivergenceGuard(min_embedding_spread=1e-4)
  fine = {"loss": 0.2, "grad_norm": 1.0, "embedding_spread": 0.9}
  assert guard.reason(fine) is None
  assert "non-finite loss nan" in guard.reason(dict(fine, loss=np.nan))
  assert "non-finite loss inf" in guard.reason(dict(fine, loss=np.inf))
  assert "gradient norm nan" in guard.reason(dict(fine, grad_norm=np.nan))
  assert "embedding collapse: spread 5e-05" in guard.reason(dict(fine, embedding_spread=5e-5))


def test_exploding_learning_rate_stops_naming_the_step_and_last_good_checkpoint(
    smoke_config, tmp_path):
  # Steps 1-4 at lr 0.01, then the "step" schedule multiplies it by 1e32:
  # step 5 blows the weights up and step 6 sees a NaN loss.
  c = _config(smoke_config, loss="semi_hard", lr=0.01, schedule="step", boundaries=(4,),
              decay_factor=1e32)
  with pytest.raises(train.DivergenceError, match="step 6: non-finite loss nan.*"
                     "last good checkpoint: step 4"):
    train.train_and_evaluate(c, str(tmp_path))
  # The diverged state was never saved.
  assert checkpointing.make_manager(str(tmp_path), read_only=True).all_steps() == [2, 4]


def test_hardest_negative_collapse_is_detected(smoke_config, tmp_path):
  # FaceNet §3.2's failure: batch-hard mining at a high learning rate maps
  # every face to one point after a single step (loss = margin, spread 0).
  c = _config(smoke_config, loss="batch_hard", lr=30.0)
  with pytest.raises(train.DivergenceError, match="step 2: embedding collapse: spread"):
    train.train_and_evaluate(c, str(tmp_path))


def test_rollback_restores_the_last_good_step_and_lowers_the_learning_rate(
    smoke_config, tmp_path, caplog):
  c = _config(smoke_config, loss="semi_hard", lr=0.01, schedule="step", action="rollback",
              boundaries=(4,), decay_factor=1e32)
  c.divergence.rollback_lr_factor = 1e-32  # back to 0.01 after the boundary
  with caplog.at_level(logging.WARNING):
    state = train.train_and_evaluate(c, str(tmp_path))
  assert "Rollback 1/3: back to step 4 with the learning rate x1e-32" in caplog.text
  assert int(state.step) == 8
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
  manager = checkpointing.make_manager(str(tmp_path), read_only=True)
  meta = checkpointing.restore_meta(manager, 8)
  assert meta["rollbacks"] == 1 and meta["lr_scale"] == pytest.approx(1e-32)

  # Steps 5-8 after the rollback ran at lr 0.01 from the step-4 state: the
  # same as a run that never had the 1e32 boundary (bit-exact, same batches).
  ref = _config(smoke_config, loss="semi_hard", lr=0.01, schedule="step", boundaries=(4,),
                decay_factor=1.0)
  straight = train.train_and_evaluate(ref, str(tmp_path / "ref"))
  for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


def test_rollbacks_are_bounded(smoke_config, tmp_path):
  c = _config(smoke_config, loss="batch_hard", lr=30.0, steps=4, action="rollback")
  c.divergence.update(rollback_lr_factor=0.9, max_rollbacks=2)  # still collapses every time
  with pytest.raises(train.DivergenceError, match="embedding collapse"):
    train.train_and_evaluate(c, str(tmp_path))
