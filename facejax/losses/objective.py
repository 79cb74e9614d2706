"""The training objective named by `config.loss`: a triplet, softmax, center or margin loss.

The trainer sees one interface whatever the loss:

* `init(rng) -> (head, loss_state)`. `head` holds the parameters that the
  optimizer trains beside the net's: a classifier `{"kernel", "bias"}` or a
  margin head `{"kernel"}`, or `{}` for triplet losses. `loss_state` holds
  what the loss updates by its own rule: the center-loss centers
  `{"centers": [C, D]}`, or `{}`.
* `loss(embeddings, features, labels, mask, head, loss_state, step) -> (loss, metrics)`.
  Here `embeddings` [B, D] is the net's L2-normalised output and `features`
  [B, D] its pre-normalisation features (the "features" intermediate, see
  `models.layers.normalized_embedding`).
* `update_state(loss_state, features, labels, mask) -> loss_state`: the center
  update of Wen et al. It runs once per step on the global batch, outside the
  optimizer.

`config.loss.features` picks what a classification loss sees: "embedding"
(the unit-norm output) or "features" (the pre-normalisation bottleneck, as in
davidsandberg's softmax and SphereFace's fc5). Triplet losses always use the
embedding. The heads and the centers are training-only: checkpoints keep them
in the "train" item, and evaluation and export load the net alone.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import ml_collections

from facejax.losses import classification
from facejax.losses.triplet import TRIPLET_LOSSES, get_triplet_loss

FEATURE_SOURCES = ("embedding", "features")
# config.loss keys each loss reads (beyond name/features); anything else is a typo.
_HPARAMS = {
    "softmax": (),
    "center": ("center_weight", "center_alpha"),
    "a_softmax": ("margin_m", "lambda_base", "lambda_gamma", "lambda_power", "lambda_min"),
    "cosface": ("scale", "margin"),
    "arcface": ("scale", "margin", "easy_margin"),
    "combined": ("scale", "m1", "m2", "m3"),
}


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str
  uses_features: bool
  init: Callable[[jax.Array], tuple[Any, Any]]
  loss: Callable[..., tuple[jax.Array, dict]]
  update_state: Callable[..., Any]


def _no_state_update(loss_state, features, labels, mask):
  del features, labels, mask
  return loss_state


def make_objective(loss_config: ml_collections.ConfigDict, *, num_classes: int,
                   feature_dim: int) -> Objective:
  """Builds the objective of `config.loss` for `num_classes` identities of `feature_dim`-D features."""
  name = loss_config.name
  if name in TRIPLET_LOSSES:
    triplet = functools.partial(get_triplet_loss(name), margin=loss_config.margin)

    def triplet_loss(embeddings, features, labels, mask, head, loss_state, step):
      del features, head, loss_state, step
      return triplet(embeddings, labels, mask)

    return Objective(name, False, lambda rng: ({}, {}), triplet_loss, _no_state_update)

  if name not in classification.CLASSIFICATION_LOSSES:
    raise ValueError(f"config.loss.name={name!r}: use one of "
                     f"{', '.join(tuple(TRIPLET_LOSSES) + classification.CLASSIFICATION_LOSSES)}")
  source = loss_config.get("features", "embedding")
  if source not in FEATURE_SOURCES:
    raise ValueError(f"config.loss.features={source!r}: use 'embedding' or 'features'")
  if num_classes < 2:
    raise ValueError(f"config.loss.name={name!r} needs at least 2 training identities, "
                     f"the data gave {num_classes}")
  hparams = {k: loss_config[k] for k in _HPARAMS[name] if k in loss_config}

  def pick(embeddings, features):
    return features if source == "features" else embeddings

  if name in ("softmax", "center"):
    def init(rng):
      head = classification.init_softmax_head(rng, feature_dim, num_classes)
      if name == "softmax":
        return head, {}
      return head, {"centers": jax.numpy.zeros((num_classes, feature_dim), jax.numpy.float32)}

    def loss(embeddings, features, labels, mask, head, loss_state, step):
      del step
      x = pick(embeddings, features)
      if name == "softmax":
        return classification.softmax_loss(x, labels, mask, head)
      return classification.softmax_center_loss(
          x, labels, mask, head, loss_state["centers"],
          center_weight=hparams.get("center_weight", 1e-4))

    def update_state(loss_state, features, labels, mask):
      if name == "softmax":
        return loss_state
      # The trainer passes the features the objective reads (`uses_features`).
      return {"centers": classification.update_centers(
          loss_state["centers"], features, labels, mask, alpha=hparams.get("center_alpha", 0.5))}

    return Objective(name, source == "features", init, loss, update_state)

  # config.loss keys -> angular_margin_loss keyword arguments (the A-Softmax
  # annealing keys are prefixed in the config to say what they schedule).
  renamed = {"lambda_base": "base", "lambda_gamma": "gamma", "lambda_power": "power"}
  margin_kwargs = {renamed.get(k, k): v for k, v in hparams.items()}

  def margin_loss(embeddings, features, labels, mask, head, loss_state, step):
    del loss_state
    return classification.angular_margin_loss(pick(embeddings, features), labels, mask, head,
                                              kind=name, step=step, **margin_kwargs)

  return Objective(name, source == "features",
                   lambda rng: (classification.init_margin_head(rng, feature_dim, num_classes), {}),
                   margin_loss, _no_state_update)

