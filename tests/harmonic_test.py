"""Harmonic embeddings: the loss against brute-force triplets over both versions' rows, the
v1 reference net against a direct forward pass of v1's checkpoint, and a short harmonic run."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from triplet_losses_test import ref_batch_all, ref_semi_hard
from facejax import checkpointing, errors, train
from facejax.losses import harmonic_triplet_loss, make_objective
from facejax.losses import harmonic
from facejax.models import create_model


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("mining,reference", [("semi_hard", ref_semi_hard),
                                              ("batch_all", ref_batch_all)])
def test_loss_is_the_triplet_loss_over_the_rows_of_both_versions(mining, reference):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(4), 3).astype(np.int32)
  mask = np.ones(12, bool)
  mask[5] = False  # a padded row: out of both versions
  v2 = _unit(rng.normal(size=(12, 8))).astype(np.float32)
  v1 = _unit(v2 + 0.8 * rng.normal(size=(12, 8))).astype(np.float32)
  loss, metrics = harmonic_triplet_loss(v2, v1, labels, mask, mining=mining, margin=0.2)
  want, want_metrics = reference(np.concatenate([v2, v1]), np.concatenate([labels, labels]),
                                 np.concatenate([mask, mask]), 0.2)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert int(metrics["num_valid_triplets"]) == want_metrics["num_valid_triplets"]
  # The cross-version triplets matter: v2's rows alone give another loss.
  alone, _ = reference(v2, labels, mask, 0.2)
  assert abs(alone - want) > 1e-3

  grad_v1 = jax.grad(lambda r: harmonic_triplet_loss(v2, r, labels, mask, mining=mining)[0])(v1)
  grad_v2 = jax.grad(lambda e: harmonic_triplet_loss(e, v1, labels, mask, mining=mining)[0])(v2)
  assert not np.any(np.asarray(grad_v1))  # v1 is fixed
  assert np.any(np.asarray(grad_v2)[mask]) and not np.any(np.asarray(grad_v2)[~mask])


def test_config_keys_are_checked_by_name():
  with pytest.raises(errors.ConfigError, match=r"config.loss.v1_workdir: missing"):
    make_objective(ml_collections.ConfigDict({"name": "harmonic"}), num_classes=0,
                   feature_dim=0)
  with pytest.raises(errors.ConfigError, match=r"config.loss.mining='hardest'"):
    make_objective(ml_collections.ConfigDict({"name": "harmonic", "v1_workdir": "/x",
                                              "mining": "hardest"}), num_classes=0,
                   feature_dim=0)
  # `mining` is one of its keys (a triplet head's comes from the name): only the typo is named.
  with pytest.raises(errors.ConfigError) as e:
    make_objective(ml_collections.ConfigDict({"name": "harmonic", "v1_workdir": "/x",
                                              "mining": "batch_all", "margn": 0.2}),
                   num_classes=0, feature_dim=0)
  assert "config.loss.margn: unknown key" in str(e.value) and "mining" not in str(e.value)


def _save_v1(config, workdir, seed):
  """An initialised v1 net saved as the trainer saves a step."""
  model = create_model(config.model)
  size = config.data.image_size
  variables = model.init(jax.random.key(seed), jnp.zeros((1, size, size, 3)), train=False)
  model_vars = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  manager = checkpointing.make_manager(workdir, async_save=False)
  checkpointing.save(manager, 5, model_vars, {"step": jnp.array(5, jnp.int32)},
                     checkpointing.checkpoint_meta(config, 5), force=True)
  manager.wait_until_finished()
  manager.close()
  return model, model_vars


def _harmonic(smoke_config, v1_workdir, steps=2):
  c = smoke_config.copy_and_resolve_references()
  c.num_train_steps = steps
  c.checkpoint.every_steps = steps
  c.evals = {}
  c.loss = ml_collections.ConfigDict({"name": "harmonic", "v1_workdir": v1_workdir,
                                      "margin": 0.2})
  return c


@pytest.mark.slow  # about a minute: .ci/run's slow line runs it
def test_reference_is_v1s_forward_pass_and_a_harmonic_run_trains(smoke_config, tmp_path):
  v1_config = smoke_config.copy_and_resolve_references()
  v1_config.model.conv_width = 0.25  # v1 may be another net (same input and embedding size)
  v1_workdir = str(tmp_path / "v1")
  v1_model, v1_vars = _save_v1(v1_config, v1_workdir, seed=3)
  c = _harmonic(smoke_config, v1_workdir)
  images = jax.random.normal(jax.random.key(1), (6, 32, 32, 3))
  got = harmonic.reference_embedder(c, train.make_mesh())(images)
  want = v1_model.apply(v1_vars, images, train=False)[0]
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)

  state = train.train_and_evaluate(c, str(tmp_path / "v2"))
  assert int(state.step) == 2
  manager = checkpointing.make_manager(str(tmp_path / "v2"), read_only=True)
  assert manager.latest_step() == 2


def test_a_v1_of_another_input_or_embedding_size_is_refused_naming_the_key(smoke_config,
                                                                           tmp_path):
  with pytest.raises(errors.ConfigError, match="holds no checkpoint"):
    harmonic.reference_embedder(_harmonic(smoke_config, str(tmp_path / "none")),
                                train.make_mesh())
  other = smoke_config.copy_and_resolve_references()
  other.data.image_size = 40
  other.model.embedding_dim = 16
  _save_v1(other, str(tmp_path / "v1"), seed=0)
  with pytest.raises(errors.ConfigError) as e:
    harmonic.reference_embedder(_harmonic(smoke_config, str(tmp_path / "v1")), train.make_mesh())
  assert "v1 takes (40, 40) images" in str(e.value) and "v1 embeds in 16-D" in str(e.value)


def test_cross_version_table_rows_are_lfw_evaluations_of_each_pairing(smoke_config, tmp_path):
  from facejax.evaluation import harmonic as harmonic_eval  # pylint: disable=import-outside-toplevel
  from facejax.evaluation import lfw_eval  # pylint: disable=import-outside-toplevel
  c = smoke_config.copy_and_resolve_references()
  w1, w2 = str(tmp_path / "v1"), str(tmp_path / "v2")
  _save_v1(c, w1, seed=1)
  _save_v1(c, w2, seed=2)
  protocol = "dev_test_10fold"
  rows, info = harmonic_eval.cross_version_rows(c, w1, c, w2, protocol=protocol)
  assert [r.name for r in rows] == ["v1 / v1", "v2 / v2", "v1 / v2", "v2 / v1"]
  assert info["num_pairs"] == 1000 and info["v1_step"] == info["v2_step"] == 5
  for row, workdir in zip(rows[:2], (w1, w2)):
    want = lfw_eval.evaluate_lfw(c, workdir=workdir, protocol=protocol, subtract_mean=False,
                                 write=False)
    assert row.accuracy == pytest.approx(want.accuracy, abs=1e-9)
    assert row.auc == pytest.approx(want.verification.auc, abs=1e-9)
  # One net on both sides: every pairing is that net's own evaluation.
  same, _ = harmonic_eval.cross_version_rows(c, w1, c, w1, protocol=protocol)
  assert len({(r.accuracy, r.auc) for r in same}) == 1
  assert same[0].accuracy == pytest.approx(rows[0].accuracy, abs=1e-9)
  # Two unrelated random nets: their cross pairs carry no identity.
  assert abs(rows[2].auc - 0.5) < 0.1 and abs(rows[3].auc - 0.5) < 0.1
