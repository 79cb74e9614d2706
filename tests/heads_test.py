"""Loss heads as Flax modules: the same numbers as the loss functions, and config errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from facejax import losses
from facejax.errors import ConfigError
from facejax.losses import classification, heads, make_objective


def _batch(seed=0, b=8, d=6, c=4):
  rng = np.random.default_rng(seed)
  features = jnp.asarray(rng.normal(size=(b, d)) * 3.0, jnp.float32)
  embedding = features / jnp.linalg.norm(features, axis=1, keepdims=True)
  labels = jnp.asarray(rng.integers(0, c, size=b), jnp.int32)
  mask = jnp.asarray([True] * (b - 1) + [False])
  return embedding, features, labels, mask


def _apply(head, variables, embedding, features, labels, mask, step=0, mutable=()):
  return head.apply(variables, embedding, features, labels=labels, mask=mask,
                    step=jnp.asarray(step, jnp.int32), mutable=list(mutable))


@pytest.mark.parametrize("name,hparams", [
    ("softmax", {"features": "features"}),
    ("a_softmax", {"features": "features", "margin_m": 3, "lambda_base": 100.0}),
    ("cosface", {"scale": 30.0, "margin": 0.4}),
    ("arcface", {"scale": 30.0, "margin": 0.5, "easy_margin": True}),
    ("combined", {"scale": 30.0, "m1": 1.1, "m2": 0.3, "m3": 0.2}),
])
def test_classifier_heads_equal_the_loss_functions(name, hparams):
  emb, feat, labels, mask = _batch()
  head = make_objective(ml_collections.ConfigDict(dict(name=name, **hparams)), num_classes=4,
                        feature_dim=6)
  variables = losses.init_head(head, jax.random.key(0))
  (loss, metrics), _ = _apply(head, variables, emb, feat, labels, mask, step=50)
  x = feat if hparams.get("features") == "features" else emb
  params = variables["params"]
  if name == "softmax":
    assert set(params) == {"kernel", "bias"}
    want, want_metrics = classification.softmax_loss(x, labels, mask, params)
  else:
    assert set(params) == {"kernel"} and params["kernel"].shape == (6, 4)
    renamed = {"lambda_base": "base"}
    kwargs = {renamed.get(k, k): v for k, v in hparams.items() if k != "features"}
    want, want_metrics = classification.angular_margin_loss(x, labels, mask, params, kind=name,
                                                            step=50, **kwargs)
  np.testing.assert_array_equal(np.asarray(loss), np.asarray(want))
  assert set(metrics) == set(want_metrics)


def test_center_head_moves_its_centers_in_the_same_apply():
  emb, feat, labels, mask = _batch(1)
  head = make_objective(ml_collections.ConfigDict(dict(
      name="center", features="features", center_weight=0.3, center_alpha=0.6)),
      num_classes=4, feature_dim=6)
  variables = losses.init_head(head, jax.random.key(0))
  assert not np.asarray(variables["centers"]["centers"]).any()  # the init batch taught nothing
  variables["centers"]["centers"] = jnp.asarray(
      np.random.default_rng(2).normal(size=(4, 6)), jnp.float32)
  (loss, _), updates = _apply(head, variables, emb, feat, labels, mask, mutable=["centers"])
  # The loss reads the centers before the update; the update is Wen et al.'s rule.
  want, _ = classification.softmax_center_loss(feat, labels, mask, variables["params"],
                                               variables["centers"]["centers"], 0.3)
  np.testing.assert_array_equal(np.asarray(loss), np.asarray(want))
  np.testing.assert_array_equal(
      np.asarray(updates["centers"]["centers"]),
      np.asarray(classification.update_centers(variables["centers"]["centers"], feat, labels,
                                               mask, 0.6)))
  # The centers get no gradient: they are not params.
  grads = jax.grad(lambda p: _apply(head, {**variables, "params": p}, emb, feat, labels, mask,
                                    mutable=["centers"])[0][0])(variables["params"])
  assert set(grads) == {"kernel", "bias"}


def test_triplet_head_has_no_variables_and_uses_the_embedding():
  emb, feat, labels, mask = _batch(3)
  head = make_objective(ml_collections.ConfigDict(dict(name="batch_all", margin=0.3)),
                        num_classes=0, feature_dim=0)
  variables = losses.init_head(head, jax.random.key(0))
  assert variables == {}
  (loss, _), updates = _apply(head, variables, emb, feat * 100.0, labels, mask)
  want, _ = losses.batch_all_triplet_loss(emb, labels, mask, margin=0.3)
  np.testing.assert_array_equal(np.asarray(loss), np.asarray(want))
  assert updates == {}


@pytest.mark.parametrize("config,fragments", [
    (dict(name="arcfase"), ["config.loss.name='arcfase'", "did you mean 'arcface'?"]),
    (dict(name="cosface", scael=30.0), ["config.loss.scael: unknown key for loss 'cosface'",
                                        "did you mean 'scale'?"]),
    (dict(name="semi_hard"), ["config.loss.margin: missing"]),
    (dict(name="semi_hard", margin=0.2, center_alpha=0.5),
     ["config.loss.center_alpha: unknown key", "used only by: center"]),
    (dict(name="softmax", features="logits", margin_m=4),
     ["config.loss.features='logits' is not one of", "config.loss.margin_m: unknown key"]),
    (dict(name="a_softmax", margin_m=4.0), ["config.loss.margin_m=4.0", "must be an int"]),
    (dict(name="arcface", easy_margin=1), ["config.loss.easy_margin=1", "must be a bool"]),
    (dict(name="batch_hard", margin=-0.1), ["config.loss.margin=-0.1", "must be >= 0"]),
])
def test_config_errors_name_the_key(config, fragments):
  with pytest.raises(ConfigError) as info:
    make_objective(ml_collections.ConfigDict(config), num_classes=2, feature_dim=8)
  for fragment in fragments:
    assert fragment in str(info.value), (fragment, str(info.value))


def test_every_loss_name_has_a_head_whose_fields_are_its_config_keys():
  # partial_fc is a head of its own (sharded centers), not a function of `classification`;
  # harmonic is triplets over two nets' embeddings (losses/harmonic.py).
  assert set(heads.HEADS) == (set(losses.TRIPLET_LOSSES) | set(losses.CLASSIFICATION_LOSSES)
                              | {"partial_fc", "harmonic"})
  from facejax.losses.objective import config_keys
  assert config_keys(heads.TripletHead) == {"margin": True}
  assert set(config_keys(heads.CenterHead)) == {"features", "center_weight", "center_alpha"}
  assert set(config_keys(heads.ASoftmaxHead)) == {
      "features", "margin_m", "lambda_base", "lambda_gamma", "lambda_power", "lambda_min"}
  assert set(config_keys(heads.CombinedMarginHead)) == {"features", "scale", "m1", "m2", "m3"}
  assert config_keys(losses.HarmonicTripletHead) == {"v1_workdir": True, "mining": False,
                                                    "margin": False}
  assert set(config_keys(losses.PartialFCHead)) == {"features", "scale", "m1", "m2", "m3",
                                                    "sample_rate", "row_multiple", "init_std"}
