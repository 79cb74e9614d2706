"""Trainer: sharded step == single-device step, bit-exact resume, config checks."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax import checkpointing, train
from facejax.data import input_pipeline

HERE = os.path.dirname(__file__)


# Batch-all is continuous in the embeddings, so the two meshes agree to float
# rounding. Semi-hard mining is not: on an untrained net many negatives sit
# within 1e-7 of the anchor-positive distance, and the meshes' different
# rounding (XLA:CPU's Eigen convs split the batch differently) can flip which
# negative is picked, which moves the loss by ~1e-4 and compounds over steps,
# so that case runs one step with a looser tolerance. A per-shard mining bug
# would instead change the number of valid triplets and the loss by far more
# (each shard would see 1/4 of the negatives).
@pytest.mark.parametrize("loss,model,steps,rtol,param_tol", [
    ("semi_hard", "plain", 1, 1e-3, 1e-3),
    # BatchNorm at a batch of 8 (4 rows per device pair) divides by small
    # stds: the conv kernels pick up rounding differences that depend on the
    # CPU's Eigen paths (up to 4e-5 seen on an AMD EPYC, <1e-5 on Intel).
    # Per-shard batch statistics would change the normalised activations
    # themselves (each device would see 2 rows), not their last bits.
    ("batch_all", "bn", 3, 1e-5, 1e-4),
    # Classification heads: the softmax + center loss (centers updated from
    # the global batch, identical on every device) and an angular margin.
    # Cross-entropy gradients are ~10x the triplet ones, and BatchNorm at a
    # batch of 8 divides them by small stds, so the conv kernels under the BN
    # layers pick up ~3e-4 of rounding difference in 3 steps. The centers and
    # the head are checked at 1e-5 below.
    ("center", "bn", 3, 1e-5, 1e-3),
    ("arcface", "plain", 3, 1e-5, 1e-5),
])
def test_four_device_step_matches_one_device(loss, model, steps, rtol, param_tol):
  # With BatchNorm, the 4-device batch statistics must equal the global-batch
  # ones (the params and running stats after 3 SGD steps are compared).
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, os.path.join(HERE, "sharded_step_check.py"), loss, model,
                        str(steps)],
                       capture_output=True, text=True, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  # Mining saw the global batch on both meshes: same number of triplets.
  assert r["num_valid_4"] == r["num_valid_1"] > 0
  np.testing.assert_allclose(r["losses_4"], r["losses_1"], rtol=rtol, atol=1e-6)
  assert r["max_param_diff"] < param_tol
  assert r["head_and_centers_diff"] < 1e-5
  if loss == "center":
    assert r["centers_moved"]


def _config(smoke_config, steps):
  c = smoke_config.copy_and_resolve_references()
  c.num_train_steps = steps
  c.checkpoint.every_steps = 2
  c.evals = {}
  return c


class _Crash(Exception):
  pass


def test_resume_after_crash_is_bit_exact(smoke_config, tmp_path, monkeypatch):
  steps = 9
  straight = train.train_and_evaluate(_config(smoke_config, steps), str(tmp_path / "a"))

  real = input_pipeline.train_batches

  def crashing(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      # Batch 7 is read while step 6 runs (2 batches are prefetched to the
      # device), so the run dies after step 5: the step-4 checkpoint survives.
      if i == 7:
        raise _Crash()
      yield batch

  monkeypatch.setattr(input_pipeline, "train_batches", crashing)
  with pytest.raises(_Crash):
    train.train_and_evaluate(_config(smoke_config, steps), str(tmp_path / "b"))
  manager = checkpointing.make_manager(str(tmp_path / "b"), read_only=True)
  assert manager.latest_step() == 4
  monkeypatch.setattr(input_pipeline, "train_batches", real)
  resumed = train.train_and_evaluate(_config(smoke_config, steps), str(tmp_path / "b"))

  assert int(resumed.step) == int(straight.step) == steps
  for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree.leaves(straight.opt_state), jax.tree.leaves(resumed.opt_state)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_config_checks_name_the_key(smoke_config, tmp_path):
  c = smoke_config.copy_and_resolve_references()
  c.batch_size = c.batch_size + 1
  with pytest.raises(ValueError, match="config.batch_size"):
    train.train_and_evaluate(c, str(tmp_path))
  c = smoke_config.copy_and_resolve_references()
  c.data.min_images_per_identity = 1
  with pytest.raises(ValueError, match="config.data.min_images_per_identity"):
    train.validate_config(c, 1)
  with pytest.raises(ValueError, match="divisible"):
    train.validate_config(smoke_config, 5)


def test_incompatible_checkpoint_is_refused(smoke_config, tmp_path):
  train.train_and_evaluate(_config(smoke_config, 2), str(tmp_path))
  c = _config(smoke_config, 4)
  c.model.embedding_dim = 16
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="embedding_dim=32.*embedding_dim=16"):
    train.train_and_evaluate(c, str(tmp_path))


def test_bfloat16_compute_keeps_float32_params_and_stays_close(smoke_config):
  rng = np.random.default_rng(0)
  c = smoke_config
  batch = {"image": rng.normal(size=(c.batch_size, 32, 32, 3)).astype(np.float32),
           "label": np.repeat(np.arange(c.num_identities), c.images_per_identity).astype(np.int32),
           "mask": np.ones(c.batch_size, bool)}
  losses = {}
  for dtype in ("float32", "bfloat16"):
    cfg = c.copy_and_resolve_references()
    cfg.model.dtype = dtype
    from facejax import optimizers
    from facejax.models import create_model
    mesh = train.make_mesh()
    model = create_model(cfg.model)
    tx = optimizers.create_optimizer(cfg.optimizer, cfg.num_train_steps)
    state = train.create_train_state(cfg, model, tx, jax.random.key(0))
    step = train.make_jitted_step(cfg, model, tx, mesh)
    for _ in range(3):
      state, metrics = step(state, train.shard_batch(batch, mesh))
    losses[dtype] = float(metrics["loss"])
    assert all(p.dtype == np.float32 for p in jax.tree.leaves(state.params))
    # Optimizer moments stay float32 too (only the step counters are ints).
    opt_floats = [x for x in jax.tree.leaves(state.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert opt_floats and all(x.dtype == np.float32 for x in opt_floats)
    assert np.isfinite(losses[dtype])
  assert abs(losses["bfloat16"] - losses["float32"]) < 0.02, losses


def test_tuple_valued_model_keys_do_not_block_resume(smoke_config):
  # Orbax's JSON meta stores tuples as lists; the check must not see a change.
  c = smoke_config.copy_and_resolve_references()
  with c.unlocked():  # a key the locked base does not have
    c.model.extra = (1, 2)
  meta = json.loads(json.dumps(checkpointing.checkpoint_meta(c, 3)))
  checkpointing.check_compatible(meta, c, "ckpt")
  c.model.extra = (1, 3)
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="model.extra"):
    checkpointing.check_compatible(meta, c, "ckpt")
