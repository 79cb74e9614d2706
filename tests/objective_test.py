"""The loss objectives inside the trainer: heads, centers, config errors."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from facejax import train
from facejax.losses import make_objective
from facejax.models import create_model


def _setup(smoke_config, loss, learning_rate=0.1, **loss_kwargs):
  c = smoke_config.copy_and_resolve_references()
  c.loss = ml_collections.ConfigDict(dict(name=loss, **loss_kwargs))
  model = create_model(c.model)
  objective = make_objective(c.loss, num_classes=5, feature_dim=model.embedding_dim)
  tx = optax.sgd(learning_rate)
  state = train.create_train_state(c, model, tx, jax.random.key(0), objective)
  rng = np.random.default_rng(0)
  h, w = (c.data.image_size,) * 2
  batch = {"image": jnp.asarray(rng.normal(size=(8, h, w, 3)), jnp.float32),
           "label": jnp.asarray([0, 0, 1, 1, 2, 2, 3, 0], jnp.int32),
           "mask": jnp.asarray([True] * 7 + [False])}
  step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, objective=objective))
  return c, model, state, batch, step


def test_center_update_follows_the_rule_not_the_optimizer(smoke_config):
  alpha = 0.5
  _, model, state, batch, step = _setup(smoke_config, "center", center_weight=0.1,
                                        center_alpha=alpha, features="embedding")
  centers = np.asarray(state.loss_state["centers"]["centers"])
  assert centers.shape == (5, model.embedding_dim) and not centers.any()
  variables = state.model_vars()
  apply = functools.partial(model.apply, train=True, rngs={"dropout": jax.random.key(0)})
  (emb, _), _ = apply(variables, batch["image"], mutable=["batch_stats"])
  emb = np.asarray(emb)
  new_state, _ = step(state, batch)
  # Hand rule (Wen et al.): c_j -= alpha * sum_{i: y_i = j} (c_j - x_i) / (1 + n_j),
  # over valid rows only (the padded row 7 has label 0 but must not count).
  expected = centers.copy()
  labels, mask = np.asarray(batch["label"]), np.asarray(batch["mask"])
  for j in range(5):
    rows = (labels == j) & mask
    delta = (centers[j] - emb[rows]).sum(0) / (1 + rows.sum())
    expected[j] = centers[j] - alpha * delta
  new_centers = np.asarray(new_state.loss_state["centers"]["centers"])
  np.testing.assert_allclose(new_centers, expected, atol=1e-6)
  assert not new_centers[4].any()  # class 4 absent: unchanged
  # The optimizer moved the classifier head.
  assert np.abs(np.asarray(new_state.head["kernel"] - state.head["kernel"])).max() > 0


@pytest.mark.parametrize("loss,learning_rate,kwargs", [
    ("softmax", 0.1, {"features": "features"}),
    # Scale 16 multiplies the logit gradients: a smaller step.
    ("arcface", 0.01, {"scale": 16.0, "margin": 0.3}),
    ("a_softmax", 0.1, {"features": "features", "margin_m": 4}),
])
def test_classification_step_lowers_the_loss_on_a_fixed_batch(smoke_config, loss, learning_rate,
                                                               kwargs):
  _, _, state, batch, step = _setup(smoke_config, loss, learning_rate, **kwargs)
  losses = []
  for _ in range(6):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0], losses


def test_objective_config_errors_name_the_key():
  with pytest.raises(ValueError, match="config.loss.name='cosfase'"):
    make_objective(ml_collections.ConfigDict(dict(name="cosfase")), num_classes=5, feature_dim=8)
  with pytest.raises(ValueError, match="config.loss.features='logits'"):
    make_objective(ml_collections.ConfigDict(dict(name="softmax", features="logits")),
                   num_classes=5, feature_dim=8)
  with pytest.raises(ValueError, match="at least 2 training identities"):
    make_objective(ml_collections.ConfigDict(dict(name="softmax")), num_classes=1, feature_dim=8)


def test_shuffle_sampling_rejected_for_triplets(smoke_config):
  c = smoke_config.copy_and_resolve_references()
  c.data.sampling = "shuffle"
  with pytest.raises(ValueError, match="config.data.sampling='shuffle'"):
    train.validate_config(c, 1)
