"""Loss heads as Flax modules: each owns its weights and returns `(loss, metrics)`.

A head is what the train step calls on the net's two outputs, once per step:

  (loss, metrics), state = head.apply(
      {"params": head_params, **head_state}, embedding, features,
      labels=labels, mask=mask, step=step, mutable=list(head_state))

* `embedding` [B, D] float32 is the net's unit-norm output, `features` [B, D]
  the same vectors before the normalisation (`models.layers.normalized_embedding`).
* `labels` [B] int32 class ids, `mask` [B] bool (False for a padded row),
  `step` scalar int32 (A-Softmax anneals its lambda with it).
* "params" (a classifier's `kernel` [D, C] and `bias` [C]) are trained by the
  optimizer beside the net's. Any other collection is moved by the head's
  own rule inside the same apply: the center-loss centers ("centers").

A head's constructor fields are the keys of `config.loss` (less `name`) plus
`num_classes` and `feature_dim`; `objective.make_objective` builds one from the
config and names a bad key. Classification heads read `features` ("embedding":
the unit-norm output; "features": the pre-normalisation bottleneck, as in
davidsandberg's softmax and SphereFace's fc5). Triplet losses always use the
embedding. The loss arithmetic is the tested functions of `classification`,
`angular_margin` and `triplet`; a head only holds the weights and the wiring.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.losses import classification
from facejax.losses._masked import Metrics
from facejax.losses.angular_margin import _MARGIN_DEFAULTS
from facejax.losses.triplet import TRIPLET_LOSSES

FEATURE_SOURCES = ("embedding", "features")

_glorot = nn.initializers.glorot_uniform()


class HeadArgumentError(ValueError):
  """Bad values given to a head's constructor; `problems` has one message per field."""

  def __init__(self, problems: list[str]):
    self.problems = tuple(problems)
    super().__init__("; ".join(self.problems))


class Head(nn.Module):
  """A loss head: `__call__(embedding, features, *, labels, mask, step) -> (loss, metrics)`.

  Subclasses state their allowed values in `_choices` and lower bounds in
  `_minimum`; the constructor checks those and the fields' types, because a
  config value reaches the head unchecked (Flax does not check dataclass types).
  """
  _choices: ClassVar[dict[str, tuple]] = {}
  _minimum: ClassVar[dict[str, float]] = {}
  # Triplets need P x K batches: >= 2 images of each identity in a batch.
  needs_pk_batches: ClassVar[bool] = False

  def __post_init__(self):
    problems = _field_problems(self)
    if problems:
      raise HeadArgumentError(problems)
    super().__post_init__()

  def __call__(self, embedding: jax.Array, features: jax.Array, *, labels: jax.Array,
               mask: jax.Array, step: jax.Array) -> tuple[jax.Array, Metrics]:
    raise NotImplementedError

  def sample(self, labels: jax.Array, mask: jax.Array) -> jax.Array | None:
    """The rows of the head's weight this step trains ([N, k] per-shard indices, see
    `losses.partial_fc`), or None: every weight is used and trained."""
    del labels, mask
    return None


def _field_problems(head: Head) -> list[str]:
  """One message per field whose value has the wrong type or is out of range."""
  hints = typing.get_type_hints(type(head))
  problems = []
  for field in dataclasses.fields(head):
    if field.name in ("parent", "name"):
      continue
    value, kind = getattr(head, field.name), hints.get(field.name)
    wrong = ((kind is bool and not isinstance(value, bool))
             or (kind is int and (isinstance(value, bool) or not isinstance(value, int)))
             or (kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))))
             or (kind is str and not isinstance(value, str)))
    if wrong:
      problems.append(f"{field.name}={value!r} ({type(value).__name__}): must be "
                      f"{'an' if kind is int else 'a'} {kind.__name__}")
    elif field.name in head._choices and value not in head._choices[field.name]:
      problems.append(f"{field.name}={value!r} is not one of {head._choices[field.name]}")
    elif field.name in head._minimum and value < head._minimum[field.name]:
      problems.append(f"{field.name}={value!r}: must be >= {head._minimum[field.name]}")
  return problems


class TripletHead(Head):
  """A triplet loss (`mining`: a `triplet.TRIPLET_LOSSES` name) on the embedding; no weights."""
  mining: str
  margin: float
  _choices: ClassVar[dict[str, tuple]] = {"mining": tuple(TRIPLET_LOSSES)}
  _minimum: ClassVar[dict[str, float]] = {"margin": 0.0}
  needs_pk_batches: ClassVar[bool] = True

  def __call__(self, embedding, features, *, labels, mask, step):
    del features, step  # triplets compare unit vectors, and nothing is scheduled
    return TRIPLET_LOSSES[self.mining](embedding, labels, mask, margin=self.margin)


class ClassifierHead(Head):
  """What every classification head has: the class count, the input width and source."""
  num_classes: int
  feature_dim: int
  features: str = "embedding"
  _choices: ClassVar[dict[str, tuple]] = {"features": FEATURE_SOURCES}
  _minimum: ClassVar[dict[str, float]] = {"num_classes": 2, "feature_dim": 1}

  def _input(self, embedding: jax.Array, features: jax.Array) -> jax.Array:
    """The [B, D] rows this head classifies, per `self.features`."""
    return features if self.features == "features" else embedding

  def _kernel(self) -> jax.Array:
    """[D, C] float32, Glorot-uniform, whatever the net's compute dtype."""
    return self.param("kernel", _glorot, (self.feature_dim, self.num_classes), jnp.float32)


class SoftmaxHead(ClassifierHead):
  """Cross-entropy of `x @ kernel + bias` (`classification.softmax_loss`)."""

  @nn.compact
  def __call__(self, embedding, features, *, labels, mask, step):
    del step
    bias = self.param("bias", nn.initializers.zeros, (self.num_classes,), jnp.float32)
    head = {"kernel": self._kernel(), "bias": bias}
    return classification.softmax_loss(self._input(embedding, features), labels, mask, head)


class CenterHead(ClassifierHead):
  """Softmax plus Wen et al.'s center loss; the centers [C, D] live in the "centers" collection.

  The loss reads the centers as they were before this step; then, when the
  "centers" collection is mutable, they move by Wen et al.'s rule
  (`classification.update_centers`) towards this batch's rows, outside the
  gradient. Under jit the batch is the global one, so every replica moves its
  centers identically.
  """
  center_weight: float = 1e-4
  center_alpha: float = 0.5
  _minimum: ClassVar[dict[str, float]] = {**ClassifierHead._minimum, "center_weight": 0.0,
                                          "center_alpha": 0.0}

  @nn.compact
  def __call__(self, embedding, features, *, labels, mask, step):
    del step
    bias = self.param("bias", nn.initializers.zeros, (self.num_classes,), jnp.float32)
    head = {"kernel": self._kernel(), "bias": bias}
    centers = self.variable("centers", "centers", jnp.zeros,
                            (self.num_classes, self.feature_dim), jnp.float32)
    x = self._input(embedding, features)
    loss, metrics = classification.softmax_center_loss(
        x, labels, mask, head, centers.value, center_weight=self.center_weight)
    # At init the batch is a placeholder: the centers start at zero.
    if self.is_mutable_collection("centers") and not self.is_initializing():
      centers.value = classification.update_centers(centers.value, x, labels, mask,
                                                    alpha=self.center_alpha)
    return loss, metrics


class _MarginHead(ClassifierHead):
  """Cross-entropy of angular-margin logits (`angular_margin_loss`); a kernel, no bias.

  No bias: the margin logits are defined by the angle between a row and a
  class column, which a bias would break; the columns are normalised there.
  """
  _kind: ClassVar[str] = ""

  def _margin_kwargs(self) -> dict[str, Any]:
    """This head's hyper-parameters as `angular_margin_loss` keywords."""
    return {k: getattr(self, k) for k in _MARGIN_DEFAULTS[self._kind]}

  @nn.compact
  def __call__(self, embedding, features, *, labels, mask, step):
    return classification.angular_margin_loss(
        self._input(embedding, features), labels, mask, {"kernel": self._kernel()},
        kind=self._kind, step=step, **self._margin_kwargs())


# The margin heads' defaults are those of the logit functions' signatures
# (`angular_margin._MARGIN_DEFAULTS`), so they are stated in one place.
_A, _COS, _ARC, _COMB = (_MARGIN_DEFAULTS[k] for k in ("a_softmax", "cosface", "arcface",
                                                       "combined"))


class ASoftmaxHead(_MarginHead):
  """SphereFace's A-Softmax; lambda anneals as `max(lambda_min, base (1 + gamma step)^-power)`."""
  margin_m: int = _A["margin_m"]
  lambda_base: float = _A["base"]
  lambda_gamma: float = _A["gamma"]
  lambda_power: float = _A["power"]
  lambda_min: float = _A["lambda_min"]
  _kind: ClassVar[str] = "a_softmax"
  _choices: ClassVar[dict[str, tuple]] = {**ClassifierHead._choices, "margin_m": (1, 2, 3, 4)}

  def _margin_kwargs(self):
    # The config prefixes the schedule's keys with "lambda_" to say what they anneal.
    return {"margin_m": self.margin_m, "base": self.lambda_base, "gamma": self.lambda_gamma,
            "power": self.lambda_power, "lambda_min": self.lambda_min}


class CosFaceHead(_MarginHead):
  """CosFace / AM-Softmax: target logit `s (cos(theta) - m)`."""
  scale: float = _COS["scale"]
  margin: float = _COS["margin"]
  _kind: ClassVar[str] = "cosface"


class ArcFaceHead(_MarginHead):
  """ArcFace: target logit `s cos(theta + m)`."""
  scale: float = _ARC["scale"]
  margin: float = _ARC["margin"]
  easy_margin: bool = _ARC["easy_margin"]
  _kind: ClassVar[str] = "arcface"


class CombinedMarginHead(_MarginHead):
  """InsightFace's combined margin: target logit `s (cos(m1 theta + m2) - m3)`."""
  scale: float = _COMB["scale"]
  m1: float = _COMB["m1"]
  m2: float = _COMB["m2"]
  m3: float = _COMB["m3"]
  _kind: ClassVar[str] = "combined"


# config.loss.name -> head class. The triplet names all map to TripletHead,
# whose `mining` is the name itself.
HEADS: dict[str, type[Head]] = {
    **{name: TripletHead for name in TRIPLET_LOSSES},
    "softmax": SoftmaxHead, "center": CenterHead, "a_softmax": ASoftmaxHead,
    "cosface": CosFaceHead, "arcface": ArcFaceHead, "combined": CombinedMarginHead,
}
# "partial_fc" (losses.partial_fc.PartialFCHead) joins when facejax.losses is imported.


def init_head(head: Head, rng: jax.Array) -> dict[str, Any]:
  """The head's variables: {"params": ..., other collections}; `{}` for a triplet head.

  The call runs on a one-row placeholder batch, masked out, so that nothing
  is learnt from it. A triplet head has no weights, so any row width does.
  """
  x = jnp.zeros((1, getattr(head, "feature_dim", 1)), jnp.float32)
  variables = head.init(rng, x, x, labels=jnp.zeros((1,), jnp.int32),
                        mask=jnp.zeros((1,), bool), step=jnp.zeros((), jnp.int32))
  return dict(variables)
