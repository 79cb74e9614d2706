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

Scale. The FaceNet paper mines semi-hard negatives in batches of ~1,800
(about 40 faces per identity). Batch-all and semi-hard never form the
``[B, B, B]`` triplet cube (23 GB as float32 at B = 1,800; the compiled
loss and gradient of the cube version need 47 GB there, 3 TB at 7,200):
each anchor's negative distances are sorted once, and every anchor-positive
pair is resolved by a binary search in its anchor's sorted row (plus a
prefix sum for batch-all). Time is ``O(B^2 log B)``, memory ``O(B^2)``: on
one XLA:CPU device, ``value_and_grad`` of either loss needs 0.19-0.20 GB at
B = 1,800 and 3.1-3.2 GB at B = 7,200 (``memory_analysis``: temp + argument
+ output), batch-hard 0.07 and 1.4 GB. Values, counts and gradients are
those of the cube formulation, ties included (see ``benchmarks/README.md``,
"Triplet mining at scale", and ``tests/triplet_losses_test.py``). The sort
has a custom VJP (:func:`_sort_rows`), so these two losses support reverse
mode (``jax.grad``, ``jax.vjp``) but not forward mode (``jax.jvp``,
``jax.jacfwd``); the trainer only uses the former.

Sharding. The trainer jits the loss on the global ``[B, D]`` embedding
matrix whose rows are sharded over a 1-D ``"data"`` mesh; nothing in this
module names a mesh. XLA's SPMD partitioner all-gathers the (transposed)
embeddings ``[D, B]`` (1,800 x 128 x 4 B = 0.9 MB; 3.7 MB at 7,200) and the
labels, mask and squared norms (``[B]`` each, the norms read off the Gram
diagonal), and each of the ``n``
devices computes only its own row block ``[B/n, B]`` of the distance
matrix. Everything after that is per anchor, i.e. per row: the sort, the
binary searches and the prefix sums run on that block with no further
communication. Only the scalar sums behind the loss and metrics are
all-reduced, and in the backward pass the ``[B, D]`` partial gradient of the
gathered embeddings (plus a ``[B]`` one for the squared norms) is
all-reduced. Per-device memory is therefore ~1/n of the single-device
figure: on a 4-device mesh, loss and gradient need 0.05 GB per device at
B = 1,800 and 0.79-0.80 GB at B = 7,200 (0.29 for batch-hard); the
distance block is ``[450, 1800]`` resp. ``[1800, 7200]`` float32. This was
read from the HLO of ``jax.jit(...).lower(...).compile()`` on 4 fake CPU
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``: the dot
output and the sort operand are ``[B/4, B]``, and the only collectives are
the ones named above), which ``benchmarks/mining_bench.py`` prints.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

Metrics = dict[str, jax.Array]
TripletLossFn = Callable[..., tuple[jax.Array, Metrics]]

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


def _float_sort_keys(x):
  """Same-width ints whose order is the float order of ``x`` (an involution).

  ``jnp.sort`` on floats compares through a total-order comparator that
  XLA:CPU runs about 5x slower than a plain integer sort (565 against 116
  ms for 1,800 rows of 1,800), so rows are sorted as integers: for a
  non-negative float the IEEE bit pattern already orders like the value;
  negative floats get their magnitude bits flipped.
  """
  int_dtype = jnp.dtype(f"int{jnp.dtype(x.dtype).itemsize * 8}")
  bits = jax.lax.bitcast_convert_type(x, int_dtype)
  return jnp.where(bits < 0, bits ^ jnp.iinfo(int_dtype).max, bits)


def _sort_values(x):
  """``jnp.sort(x, axis=-1)``, exactly, as an integer sort of :func:`_float_sort_keys`."""
  keys = jnp.sort(_float_sort_keys(x), axis=-1)
  keys = jnp.where(keys < 0, keys ^ jnp.iinfo(keys.dtype).max, keys)
  return jax.lax.bitcast_convert_type(keys, x.dtype)


@jax.custom_vjp
def _sort_rows(x):
  """``jnp.sort(x, axis=-1)`` for ``[R, N]`` float (no NaN), with a tie-symmetric gradient.

  The cotangent of a sorted position goes to the input element(s) holding
  that value; when several inputs are tied, each gets the *mean* cotangent
  of the tied run of sorted positions. This is the convention of the JVP
  of ``jnp.min``/``jnp.max`` (which split the derivative equally between
  tied extrema), so a loss that reads one sorted position splits its
  gradient between tied negatives exactly as the ``[B, B, B]`` min/max
  formulation did; ``jnp.sort``'s own rule would give it all to one of
  them. Being a single-operand integer sort, it also carries no
  permutation: the backward pass finds each input's run by binary search.
  """
  return _sort_values(x)


def _sort_rows_fwd(x):
  sorted_x = _sort_values(x)
  return sorted_x, (x, sorted_x)


def _sort_rows_bwd(residuals, cotangent):
  x, sorted_x = residuals
  n = sorted_x.shape[-1]
  # Runs of equal values: run_sum[k] sums the cotangent from k's run start
  # to k (a segmented prefix sum, so untied positions get their own
  # cotangent back exactly), and run_last[k] is the last position of k's run.
  differs = sorted_x[:, 1:] != sorted_x[:, :-1]
  edge = jnp.ones_like(differs[:, :1])
  starts_run = jnp.concatenate([edge, differs], axis=1)
  ends_run = jnp.concatenate([differs, edge], axis=1)

  def segmented_add(a, b):
    return a[0] | b[0], jnp.where(b[0], b[1], a[1] + b[1])

  _, run_sum = jax.lax.associative_scan(segmented_add, (starts_run, cotangent), axis=1)
  positions = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), sorted_x.shape)
  run_last = jax.lax.cummin(jnp.where(ends_run, positions, n), axis=1, reverse=True)

  first = _prefix_length(sorted_x, lambda s: s < x, n)  # Run start of each x[r, j].
  last = jnp.take_along_axis(run_last, first, axis=1, mode="clip")
  total = jnp.take_along_axis(run_sum, last, axis=1, mode="clip")
  return (total / (last - first + 1).astype(total.dtype),)


_sort_rows.defvjp(_sort_rows_fwd, _sort_rows_bwd)


def _sorted_negatives(dist, neg_mask):
  """Each anchor's negative distances, sorted ascending.

  Returns ``(sorted_neg [B, B], num_neg [B] int32)``: row ``a`` holds the
  ``num_neg[a]`` distances ``d(a, n)`` of its negatives in ascending order,
  then ``+inf`` in place of every non-negative (positives, itself, padded
  rows), which therefore sort last and fail every ``d < t`` test. This sort
  and one binary search per anchor-positive pair are the ``O(B^2 log B)``
  time, ``O(B^2)`` memory replacement of the ``[B, B, B]`` triplet cube.
  """
  inf = jnp.asarray(jnp.inf, dist.dtype)
  sorted_neg = _sort_rows(jnp.where(neg_mask, dist, inf))
  return sorted_neg, jnp.sum(neg_mask, axis=-1, dtype=jnp.int32)


def _prefix_length(sorted_rows, holds, num_queries: int):
  """Vectorised binary search over sorted rows.

  Args:
    sorted_rows: ``[R, N]`` float, each row ascending.
    holds: maps ``values [R, Q]`` (for query ``q`` of row ``r``, some entry
      of row ``r``) to bool ``[R, Q]``. For each query it must be monotone
      along the row: True on a prefix, then False.
    num_queries: ``Q``.

  Returns:
    ``[R, Q]`` int32 in ``[0, N]``: the length of the prefix on which
    ``holds`` is True. With ``holds = lambda s: s <= t`` this is
    ``searchsorted(row, t, side="right")``. An arbitrary predicate is taken
    instead of a threshold so that batch-all can count with the *same*
    float expression ``d_ap - d_an + margin > 0`` as the loss, and not with
    ``d_an < d_ap + margin``, which rounds differently at the boundary.
    No gradient flows through the result (an integer).
  """
  rows, n = sorted_rows.shape
  sorted_rows = jax.lax.stop_gradient(sorted_rows)
  bits = n.bit_length()

  # Branchless: try to extend the prefix by each power of two, largest
  # first; ceil(log2(n + 1)) steps reach any length in 0..n. A fori_loop,
  # not unrolled: XLA:CPU then reuses one set of [R, Q] buffers (the
  # unrolled loop needed ~3x the temporary memory and was no faster).
  def extend(i, length):
    candidate = length + jnp.left_shift(1, bits - 1 - i)
    value = jnp.take_along_axis(
        sorted_rows, jnp.minimum(candidate, n) - 1, axis=1, mode="promise_in_bounds"
    )
    return jnp.where((candidate <= n) & holds(value), candidate, length)

  return jax.lax.fori_loop(0, bits, extend, jnp.zeros((rows, num_queries), jnp.int32))


def _centred_prefix_sums(sorted_neg, num_neg):
  """Exclusive prefix sums of each row's sorted negative distances.

  Returns ``(prefix [B, B + 1], centre [B, 1])`` with
  ``prefix[a, k] = sum_{j < k} (sorted_neg[a, j] - centre[a])``, so the sum
  of the ``k`` smallest negative distances of ``a`` is
  ``prefix[a, k] + k * centre[a]``.

  The ``+inf`` tail is replaced by 0 (a prefix of negatives never reaches
  it, and ``inf - inf`` would poison the gradient). Each row is centred on
  its median negative (without gradient; it cancels mathematically) to keep
  the float32 sums small: uncentred, 7,200 distances near 2 sum to ~1.4e4,
  whose rounding step (1e-3) would be a visible part of a hinge sum.
  """
  batch = sorted_neg.shape[-1]
  in_row = jnp.arange(batch)[None, :] < num_neg[:, None]
  median = jnp.take_along_axis(
      sorted_neg, jnp.maximum(num_neg - 1, 0)[:, None] // 2, axis=1, mode="clip"
  )
  centre = jax.lax.stop_gradient(jnp.where(num_neg[:, None] > 0, median, 0.0))
  centred = jnp.where(in_row, sorted_neg - centre, jnp.zeros_like(sorted_neg))
  prefix = jnp.cumsum(centred, axis=-1)
  return jnp.pad(prefix, ((0, 0), (1, 0))), centre


def batch_all_triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    margin: float = 0.2,
) -> tuple[jax.Array, Metrics]:
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

  No ``[B, B, B]`` tensor is formed. For a fixed ``(a, p)`` the active
  negatives are exactly the ``c`` nearest negatives of ``a`` (the hinge is
  decreasing in ``d(a,n)``), so with each anchor's negatives sorted once,
  ``c`` comes from a binary search and the hinge sum over negatives is
  ``c * (d(a,p) + margin) - (sum of the c smallest d(a,n))``, read from a
  prefix sum. Memory is ``O(B^2)``, time ``O(B^2 log B)``. The value,
  counts and gradient equal those of the explicit sum over triplets (up to
  float rounding of the sums): each active triplet contributes ``+1`` to
  ``d(a,p)``'s and ``-1`` to ``d(a,n)``'s derivative, divided by the number
  of active triplets. Tied negatives are either all active or all not, so
  ties need no special care.

  Args: as every loss here (module docstring); ``margin`` may be traced.

  Returns:
    ``(loss, metrics)``: scalar loss; ``num_valid_triplets`` and
    ``num_active_triplets`` count triplets, ``fraction_active`` is their
    ratio (0 when there are no valid triplets). The int32 counts overflow
    beyond 2^31 valid triplets (e.g. B = 7,200 with more than 42 images per
    identity).
  """
  dist, pos_mask, neg_mask = _prepare(embeddings, labels, mask)
  sorted_neg, num_neg = _sorted_negatives(dist, neg_mask)
  batch = dist.shape[0]
  d_ap = jax.lax.stop_gradient(dist)
  # num_active_neg[a, p]: how many negatives of `a` give (a, p, n) a positive
  # hinge; the +inf tail never does.
  num_active_neg = _prefix_length(sorted_neg, lambda d_an: d_ap - d_an + margin > 0.0, batch)
  prefix, centre = _centred_prefix_sums(sorted_neg, num_neg)
  # Sum of the num_active_neg nearest d(a,n), less num_active_neg * centre.
  nearest_sum = jnp.take_along_axis(prefix, num_active_neg, axis=1, mode="clip")
  hinge_sum = num_active_neg.astype(dist.dtype) * (dist + margin - centre) - nearest_sum
  hinge_sum = jnp.where(pos_mask, hinge_sum, jnp.zeros_like(hinge_sum))

  num_valid = jnp.sum(jnp.where(pos_mask, num_neg[:, None], 0), dtype=jnp.int32)
  num_active = jnp.sum(jnp.where(pos_mask, num_active_neg, 0), dtype=jnp.int32)
  loss = jnp.sum(hinge_sum) / jnp.maximum(num_active, 1).astype(dist.dtype)
  return loss, _metrics(dist, pos_mask, neg_mask, num_valid, num_active)


def semi_hard_triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    margin: float = 0.2,
) -> tuple[jax.Array, Metrics]:
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

  Each anchor's negatives are sorted once; the nearest farther negative is
  then a binary search for ``d(a,p)`` in that row, so memory is ``O(B^2)``
  and time ``O(B^2 log B)``. When several negatives are tied at the chosen
  distance, the gradient is split equally between them (see
  :func:`_sort_rows`), as the JVP of ``jnp.min``/``jnp.max`` in the
  ``[B, B, B]`` formulation did.

  Args: as every loss here (module docstring); ``margin`` may be traced.

  Returns:
    ``(loss, metrics)``: here "triplets" are anchor-positive pairs (each
    mined to one triplet): ``num_valid_triplets`` counts valid pairs whose
    anchor has at least one negative, ``num_active_triplets`` those with
    positive loss, ``fraction_active`` their ratio.
  """
  dist, pos_mask, neg_mask = _prepare(embeddings, labels, mask)
  sorted_neg, num_neg = _sorted_negatives(dist, neg_mask)
  batch = dist.shape[0]
  has_neg = num_neg > 0
  last = jnp.maximum(num_neg - 1, 0)[:, None]  # [a, 1]: the largest negative.
  d_ap = jax.lax.stop_gradient(dist)

  # first_farther[a, p]: sorted position of the nearest negative with
  # d(a,n) > d(a,p), or num_neg[a] if there is none.
  first_farther = _prefix_length(sorted_neg, lambda d_an: d_an <= d_ap, batch)
  has_farther = first_farther < num_neg[:, None]
  chosen_pos = jnp.where(has_farther, first_farther, last)
  chosen = jnp.take_along_axis(sorted_neg, chosen_pos, axis=1, mode="clip")  # [a, p]
  chosen = jnp.where(has_neg[:, None], chosen, jnp.zeros_like(chosen))

  pair_valid = pos_mask & has_neg[:, None]
  raw = dist - chosen + margin
  return _hinge_loss(raw, pair_valid, dist, pos_mask, neg_mask, divide_by_active=False)


def batch_hard_triplet_loss(
    embeddings: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    margin: float = 0.2,
) -> tuple[jax.Array, Metrics]:
  """Batch-hard triplet loss (Hermans, Beyer & Leibe, 2017).

  Each anchor forms one triplet from its hardest positive (largest
  ``d(a,p)``) and hardest negative (smallest ``d(a,n)``) in the batch; the
  loss is ``max(d_ap - d_an + margin, 0)`` averaged over anchors that are
  unpadded and have at least one positive and one negative. Anchors of
  singleton identities (no positive) or of a batch with a single identity
  (no negative) are skipped rather than scored against a fill value.

  Args: as every loss here (module docstring); ``margin`` may be traced.

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


TRIPLET_LOSSES: dict[str, TripletLossFn] = {
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
