"""Classification losses for face embeddings: softmax, center loss and angular margins.

Every loss has the signature ``loss, metrics = fn(features, labels, mask, head, ...)`` with

* ``features``: ``[B, D]`` float (bf16/float32/float64), the un-normalised embedding.
* ``labels``: ``[B]`` int32 class ids in ``[0, C)``; padded rows may hold anything.
* ``mask``: ``[B]`` bool, False for a padded row. As in :mod:`facejax.losses.triplet`, padded
  rows are zeroed before any matmul, so even NaN/inf values there cannot reach the loss or the
  gradients (the matmul backward pass would otherwise compute ``0 * NaN = NaN``).
* ``head``: ``{"kernel": [D, C]}`` (margin heads) or ``{"kernel": [D, C], "bias": [C]}``
  (plain softmax head): the params of the modules in :mod:`facejax.losses.heads`.

The loss is a scalar mean over valid rows: float32 for bf16/float32 features, float64 for
float64 ones (finite-difference gradient checks rely on that). With no valid row it is exactly
0 with zero, finite gradients. Metrics are scalar arrays with gradients stopped.

Everything is written with one-hot masks and ``jnp.where`` (no boolean indexing, no Python
branching on values), so each function traces once per batch shape under ``jax.jit``.

The angular-margin losses live in :mod:`facejax.losses.angular_margin` and are re-exported here,
so this module is the single entry point for every name in :data:`CLASSIFICATION_LOSSES`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from facejax.losses._masked import (
    Metrics,
    Params,
    base_metrics,
    cross_entropy_loss,
    masked_mean,
    prepare,
    stop,
)
from facejax.losses.angular_margin import (
    a_softmax_lambda,
    a_softmax_logits,
    angular_margin_loss,
    arcface_logits,
    combined_margin_logits,
    cosface_logits,
)

__all__ = [
    "CLASSIFICATION_LOSSES",
    "softmax_loss",
    "center_loss_term",
    "update_centers",
    "softmax_center_loss",
    "a_softmax_logits",
    "a_softmax_lambda",
    "cosface_logits",
    "arcface_logits",
    "combined_margin_logits",
    "angular_margin_loss",
]

# Names a config may use for a classification loss: "softmax" is softmax_loss, "center" is
# softmax_center_loss, the others are angular_margin_loss(kind=name).
CLASSIFICATION_LOSSES = ("softmax", "center", "a_softmax", "cosface", "arcface", "combined")


# ---------------------------------------------------------------------------
# Softmax and center loss (Wen et al. 2016).
# ---------------------------------------------------------------------------


def softmax_loss(features, labels, mask, head: Params, **unused) -> tuple[jax.Array, Metrics]:
  """Cross-entropy of ``features @ kernel + bias`` averaged over valid rows.

  Args:
    features: ``[B, D]`` float.
    labels: ``[B]`` int32.
    mask: ``[B]`` bool, False for padded rows.
    head: ``{"kernel": [D, C], "bias": [C]}``.
    **unused: ignored, so a trainer can pass the same keywords (``step``, ...) to every loss.

  Returns:
    ``(loss, metrics)`` with float32 ``accuracy`` (top-1 over valid rows) and int32
    ``num_valid``.
  """
  del unused
  features, labels, mask = prepare(features, labels, mask)
  kernel = jnp.asarray(head["kernel"]).astype(features.dtype)
  logits = features @ kernel + jnp.asarray(head["bias"]).astype(features.dtype)
  loss = cross_entropy_loss(logits, labels, mask)
  return loss, stop(base_metrics(logits, labels, mask))


def center_loss_term(features, labels, mask, centers, center_weight) -> tuple[jax.Array, Metrics]:
  """Center-loss term ``(lambda/2) * mean_i ||x_i - c_{y_i}||^2`` over valid rows.

  The sum over rows is divided by the number of valid rows, as caffe-face's CenterLossLayer
  divides by the batch size, so ``center_weight`` keeps its meaning when the batch size changes.
  The centers get no gradient: they are moved by :func:`update_centers`, not by the optimizer.

  Args:
    features: ``[B, D]`` float.
    labels: ``[B]`` int32.
    mask: ``[B]`` bool, False for padded rows.
    centers: ``[C, D]`` float.
    center_weight: scalar ``lambda`` (may be traced).

  Returns:
    ``(loss, metrics)`` with float32 ``center_distance``, the mean ``||x - c_y||^2``.
  """
  features, labels, mask = prepare(features, labels, mask)
  centers = jax.lax.stop_gradient(jnp.asarray(centers)).astype(features.dtype)
  # mode="clip": a padded row's junk label must not fault or wrap; its row is masked anyway.
  target = jnp.take(centers, labels, axis=0, mode="clip")
  sq_dist = jnp.sum((features - target) ** 2, axis=-1)
  mean_sq_dist = masked_mean(sq_dist, mask)
  loss = 0.5 * center_weight * mean_sq_dist
  return loss, stop({"center_distance": mean_sq_dist.astype(jnp.float32)})


def update_centers(centers, features, labels, mask, alpha) -> jax.Array:
  """One center update of Wen et al.: ``c_j <- c_j - alpha * delta_j`` over valid rows.

  ``delta_j = sum_i 1[y_i = j] (c_j - x_i) / (1 + sum_i 1[y_i = j])``; the ``1 +`` damps classes
  seen once and leaves classes absent from the batch exactly unchanged (``delta_j = 0``).

  Args:
    centers: ``[C, D]`` float.
    features: ``[B, D]`` float (no gradient flows through the update).
    labels: ``[B]`` int32.
    mask: ``[B]`` bool, False for padded rows.
    alpha: scalar center learning rate (may be traced).

  Returns:
    New centers, ``[C, D]`` in the dtype of ``centers``.
  """
  centers = jnp.asarray(centers)
  features, labels, mask = prepare(jax.lax.stop_gradient(features), labels, mask)
  num_classes = centers.shape[0]
  weight = mask.astype(features.dtype)
  # segment_sum is a scatter-add: O(B * D) rather than the O(B * C * D) of a one-hot matmul,
  # which matters with ~10k classes. Out-of-range labels are dropped; padded rows weigh 0.
  counts = jax.ops.segment_sum(weight, labels, num_segments=num_classes)  # [C]
  sums = jax.ops.segment_sum(features * weight[:, None], labels, num_segments=num_classes)
  c = centers.astype(features.dtype)
  delta = (counts[:, None] * c - sums) / (1.0 + counts[:, None])
  return (c - alpha * delta).astype(centers.dtype)


def softmax_center_loss(
    features, labels, mask, head: Params, centers, center_weight
) -> tuple[jax.Array, Metrics]:
  """Softmax loss plus the center-loss term; see :func:`softmax_loss`, :func:`center_loss_term`.

  Returns:
    ``(loss, metrics)``: the union of both metric dicts plus the two parts ``softmax_loss`` and
    ``center_loss`` (float32 scalars).
  """
  sm, sm_metrics = softmax_loss(features, labels, mask, head)
  cl, cl_metrics = center_loss_term(features, labels, mask, centers, center_weight)
  metrics = {**sm_metrics, **cl_metrics,
             "softmax_loss": sm.astype(jnp.float32), "center_loss": cl.astype(jnp.float32)}
  return sm + cl, stop(metrics)
