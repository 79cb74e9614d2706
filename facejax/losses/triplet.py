"""Triplet losses for metric learning on face embeddings (FaceNet-style).

All losses share the signature::

    loss, metrics = fn(embeddings, labels, mask, margin=0.2)

with

* ``embeddings``: ``[B, D]`` float. Normally L2-normalised by the model head,
  but nothing here relies on that.
* ``labels``: ``[B]`` int32 identity ids.
* ``mask``: ``[B]`` bool. ``False`` marks a padded row (used to give every
  batch a static shape for ``jit``/``pmap``). A padded row never takes part in
  any triplet, neither as anchor, positive nor negative, and its embedding
  values (even NaN/inf) cannot leak into the loss or the gradients.

and return a scalar ``loss`` (float32 for float32/bf16 inputs, float64 for
float64 inputs) plus a ``metrics`` dict of scalar arrays: float32
``fraction_active``, ``mean_positive_distance``, ``mean_negative_distance``
and int32 ``num_valid_triplets``, ``num_active_triplets`` (see :func:`_metrics`
and each loss for what counts as a "triplet" there).

Everything is written with masks and ``jnp.where`` rather than Python
branching or boolean indexing, so the functions trace once under ``jax.jit``
for a given batch shape. Masked reductions are always "sanitised" (the
+/-inf fill of an empty reduction is replaced by a finite value before any
arithmetic), so degenerate batches (all rows padded, only singleton
identities, a single identity) give a loss of exactly 0, finite metrics and
finite (zero) gradients instead of NaN.

Distances are *squared* Euclidean. Besides matching the FaceNet paper this
keeps gradients finite at zero distance, which a plain ``sqrt`` would not.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp

Metrics = Dict[str, jax.Array]
TripletLossFn = Callable[..., Tuple[jax.Array, Metrics]]

__all__ = [
    "pairwise_squared_distances",
    "batch_all_triplet_loss",
    "semi_hard_triplet_loss",
    "batch_hard_triplet_loss",
    "TRIPLET_LOSSES",
    "get_triplet_loss",
]


def pairwise_squared_distances(x: jax.Array) -> jax.Array:
  """Squared Euclidean distance between every pair of rows of ``x``.

  Args:
    x: ``[B, D]`` float array.

  Returns:
    ``[B, B]`` array (dtype of ``x``), ``out[i, j] = ||x_i - x_j||^2``.

  Uses ``|x_i|^2 + |x_j|^2 - 2 <x_i, x_j>`` so the whole matrix comes from one
  matmul (MXU/tensor-core friendly, ``O(B^2)`` memory instead of the
  ``O(B^2 D)`` of broadcasting differences). The expansion suffers from
  cancellation, so the result is clamped at 0 (it can otherwise come out
  slightly negative for (near-)identical rows) and the diagonal is set to
  exactly 0, which callers rely on when comparing against other distances.
  """
  x = jnp.asarray(x)
  gram = x @ x.T
  sq_norms = jnp.diagonal(gram)
  dist = sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram
  dist = jnp.maximum(dist, 0.0)
  return jnp.where(jnp.eye(x.shape[0], dtype=bool), jnp.zeros_like(dist), dist)


# ---------------------------------------------------------------------------
# Shared helpers.
# ---------------------------------------------------------------------------


def _prepare(embeddings, labels, mask):
  """Common preprocessing shared by all losses.

  Returns ``(dist [B,B], pos_mask [B,B] bool, neg_mask [B,B] bool)``.

  Embeddings are upcast to at least float32 (float64 stays float64, which
  finite-difference gradient checks rely on). Padded rows are zeroed
  *before* the Gram matrix: their values would otherwise enter every row's
  gradient through the matmul backward pass (``0 * NaN = NaN``), even
  though the forward pass masks them out.
  """
  mask = jnp.asarray(mask).astype(bool)
  labels = jnp.asarray(labels)
  embeddings = jnp.asarray(embeddings)
  # At least float32: the Gram expansion cancels catastrophically in bf16.
  embeddings = embeddings.astype(jnp.promote_types(embeddings.dtype, jnp.float32))
  embeddings = jnp.where(mask[:, None], embeddings, jnp.zeros_like(embeddings))
  dist = pairwise_squared_distances(embeddings)

  batch = labels.shape[0]
  both_valid = mask[:, None] & mask[None, :]
  same = labels[:, None] == labels[None, :]
  not_self = ~jnp.eye(batch, dtype=bool)
  pos_mask = both_valid & same & not_self  # (a, p): a != p, same identity.
  neg_mask = both_valid & ~same  # (a, n): different identity.
  return dist, pos_mask, neg_mask


def _masked_mean(values, mask):
  """Mean of ``values`` over ``mask``; 0 (not NaN) for an empty mask."""
  count = jnp.sum(mask, dtype=jnp.int32)
  total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
  return total / jnp.maximum(count, 1).astype(total.dtype)


def _masked_min(values, mask, axis):
  """Min over ``axis`` restricted to ``mask``; returns ``(min, any)``.

  Empty reductions give 0 (with ``any=False``) instead of +inf so that the
  result can be used in arithmetic without producing inf/NaN gradients.
  """
  inf = jnp.asarray(jnp.inf, values.dtype)
  any_ = jnp.any(mask, axis=axis)
  out = jnp.min(jnp.where(mask, values, inf), axis=axis)
  return jnp.where(any_, out, jnp.zeros_like(out)), any_


def _masked_max(values, mask, axis):
  """Max over ``axis`` restricted to ``mask``; returns ``(max, any)``.

  Same empty-reduction convention as :func:`_masked_min`.
  """
  inf = jnp.asarray(jnp.inf, values.dtype)
  any_ = jnp.any(mask, axis=axis)
  out = jnp.max(jnp.where(mask, values, -inf), axis=axis)
  return jnp.where(any_, out, jnp.zeros_like(out)), any_


def _metrics(dist, pos_mask, neg_mask, num_valid, num_active) -> Metrics:
  """Assemble the metrics dict shared by all losses.

  ``num_valid``/``num_active`` are int32 counts (exact for any realistic
  batch, unlike float32 which loses integers above 2^24 ~ a 256^3 triplet
  cube). ``fraction_active`` is float32 and 0 when nothing is valid.
  Mean distances are over *ordered* valid pairs and are logged to watch
  for embedding collapse (both going to 0) independent of the loss value.
  ``lax.stop_gradient`` is applied since metrics are never differentiated.
  """
  num_valid = num_valid.astype(jnp.int32)
  num_active = num_active.astype(jnp.int32)
  fraction = num_active.astype(jnp.float32) / jnp.maximum(num_valid, 1).astype(jnp.float32)
  metrics = {
      "fraction_active": fraction,
      "num_valid_triplets": num_valid,
      "num_active_triplets": num_active,
      "mean_positive_distance": _masked_mean(dist, pos_mask).astype(jnp.float32),
      "mean_negative_distance": _masked_mean(dist, neg_mask).astype(jnp.float32),
  }
  return jax.tree_util.tree_map(jax.lax.stop_gradient, metrics)


# ---------------------------------------------------------------------------
# Losses.
# ---------------------------------------------------------------------------


def _hinge_loss(raw, valid, dist, pos_mask, neg_mask, *, divide_by_active: bool):
  """Mean hinge [raw]_+ over `valid` entries, with the shared metrics.

  Batch-all averages over active triplets (zero-loss ones would dilute the
  signal as training progresses); the mined losses average over all valid
  triplets, as TF's semi-hard loss does.
  """
  per_triplet = jnp.where(valid, jax.nn.relu(raw), jnp.zeros_like(raw))
  num_valid = jnp.sum(valid, dtype=jnp.int32)
  num_active = jnp.sum(per_triplet > 0.0, dtype=jnp.int32)
  denominator = num_active if divide_by_active else num_valid
  loss = jnp.sum(per_triplet) / jnp.maximum(denominator, 1).astype(dist.dtype)
  return loss, _metrics(dist, pos_mask, neg_mask, num_valid, num_active)


def batch_all_triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    margin: float = 0.2,
) -> Tuple[jax.Array, Metrics]:
  """Batch-all triplet loss: every valid triplet in the batch contributes.

  A triplet ``(a, p, n)`` is valid when all three rows are unpadded,
  ``a != p``, ``labels[a] == labels[p]`` and ``labels[n] != labels[a]``. Its
  loss is ``max(d(a,p) - d(a,n) + margin, 0)`` and it is *active* when that
  is strictly positive.

  Normalisation follows the common batch-all convention: the summed loss is
  divided by the number of **active** triplets (at least 1), not by the
  number of valid ones. As training progresses most triplets become easy
  (zero loss); averaging over all of them would shrink the gradient towards
  zero, whereas averaging over the active ones keeps its scale tied to the
  triplets that still carry signal.

  Materialises a ``[B, B, B]`` tensor, so memory is cubic in the batch size.

  Args:
    embeddings: ``[B, D]`` float32.
    labels: ``[B]`` int32 identity ids.
    mask: ``[B]`` bool, False for padded rows.
    margin: scalar margin ``alpha`` (may be traced).

  Returns:
    ``(loss, metrics)``: scalar loss; ``num_valid_triplets`` and
    ``num_active_triplets`` count triplets, ``fraction_active`` is their
    ratio (0 when there are no valid triplets).
  """
  dist, pos_mask, neg_mask = _prepare(embeddings, labels, mask)
  # valid[a, p, n] = pos(a, p) & neg(a, n); neg(a, n) already implies n != a
  # and n != p (different label from a, hence from p).
  valid = pos_mask[:, :, None] & neg_mask[:, None, :]
  raw = dist[:, :, None] - dist[:, None, :] + margin
  return _hinge_loss(raw, valid, dist, pos_mask, neg_mask, divide_by_active=True)


def semi_hard_triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    margin: float = 0.2,
) -> Tuple[jax.Array, Metrics]:
  """Semi-hard negative mining (FaceNet), following TF's reference rule.

  For every valid anchor-positive pair ``(a, p)`` exactly one negative
  ``n*`` is chosen, with the same rule as TensorFlow Addons'
  ``triplet_semihard_loss``:

  * among the negatives of ``a`` strictly farther than the positive
    (``d(a,n) > d(a,p)``), the nearest one;
  * if there is none, the negative of ``a`` with the **largest** ``d(a,n)``
    (the least-hard negative that is still harder than the positive).

  The FaceNet band also requires ``d(a,n) < d(a,p) + margin``; that upper
  bound needs no explicit test, because a negative outside the band already
  yields ``d(a,p) - d(a,n) + margin <= 0``, i.e. zero loss, and picking the
  *nearest* farther negative means an in-band one is chosen whenever it
  exists.

  The per-pair loss ``max(d(a,p) - d(a,n*) + margin, 0)`` is averaged over
  all valid anchor-positive pairs (TF convention: zero-loss pairs count in
  the denominator). Unlike TF, pairs whose anchor has no valid negative at
  all are excluded instead of being scored against a meaningless fill value.

  Args:
    embeddings: ``[B, D]`` float32.
    labels: ``[B]`` int32 identity ids.
    mask: ``[B]`` bool, False for padded rows.
    margin: scalar margin ``alpha`` (may be traced).

  Returns:
    ``(loss, metrics)``: here "triplets" are anchor-positive pairs (each
    mined to one triplet): ``num_valid_triplets`` counts valid pairs whose
    anchor has at least one negative, ``num_active_triplets`` those with
    positive loss, ``fraction_active`` their ratio.
  """
  dist, pos_mask, neg_mask = _prepare(embeddings, labels, mask)
  d_ap = dist[:, :, None]  # [a, p, 1]
  d_an = dist[:, None, :]  # [a, 1, n]
  farther = neg_mask[:, None, :] & (d_an > d_ap)  # [a, p, n]
  nearest_farther, has_farther = _masked_min(
      jnp.broadcast_to(d_an, farther.shape), farther, axis=-1
  )  # [a, p]
  largest_neg, has_neg = _masked_max(dist, neg_mask, axis=-1)  # [a]
  chosen = jnp.where(has_farther, nearest_farther, largest_neg[:, None])

  pair_valid = pos_mask & has_neg[:, None]
  raw = dist - chosen + margin
  return _hinge_loss(raw, pair_valid, dist, pos_mask, neg_mask, divide_by_active=False)


def batch_hard_triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    margin: float = 0.2,
) -> Tuple[jax.Array, Metrics]:
  """Batch-hard triplet loss (Hermans, Beyer & Leibe, 2017).

  Each anchor forms one triplet from its hardest positive (largest
  ``d(a,p)``) and hardest negative (smallest ``d(a,n)``) in the batch; the
  loss is ``max(d_ap - d_an + margin, 0)`` averaged over anchors that are
  unpadded and have at least one positive and one negative. Anchors of
  singleton identities (no positive) or of a batch with a single identity
  (no negative) are skipped rather than scored against a fill value.

  Args:
    embeddings: ``[B, D]`` float32.
    labels: ``[B]`` int32 identity ids.
    mask: ``[B]`` bool, False for padded rows.
    margin: scalar margin ``alpha`` (may be traced).

  Returns:
    ``(loss, metrics)``: here "triplets" are anchors: ``num_valid_triplets``
    counts usable anchors, ``num_active_triplets`` those with positive loss,
    ``fraction_active`` their ratio.
  """
  dist, pos_mask, neg_mask = _prepare(embeddings, labels, mask)
  hardest_pos, has_pos = _masked_max(dist, pos_mask, axis=-1)  # [a]
  hardest_neg, has_neg = _masked_min(dist, neg_mask, axis=-1)  # [a]
  anchor_valid = has_pos & has_neg  # Implies the anchor row is unpadded.

  raw = hardest_pos - hardest_neg + margin
  return _hinge_loss(raw, anchor_valid, dist, pos_mask, neg_mask, divide_by_active=False)


TRIPLET_LOSSES: Dict[str, TripletLossFn] = {
    "batch_all": batch_all_triplet_loss,
    "semi_hard": semi_hard_triplet_loss,
    "batch_hard": batch_hard_triplet_loss,
}


def get_triplet_loss(name: str) -> TripletLossFn:
  """Look up a triplet loss by its config name (a key of ``TRIPLET_LOSSES``).

  Raises:
    ValueError: for an unknown name; the message lists the valid names so
      a typo in a config fails loudly at startup rather than mid-run.
  """
  try:
    return TRIPLET_LOSSES[name]
  except (KeyError, TypeError):
    valid = ", ".join(sorted(TRIPLET_LOSSES))
    raise ValueError(f"Unknown triplet loss {name!r}; valid names are: {valid}.") from None
