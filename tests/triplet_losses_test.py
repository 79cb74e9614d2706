"""Tests for facejax.losses.triplet.

The references below are deliberately naive: float64, explicit Python loops
over anchors, positives and negatives, distances computed from coordinate
differences (not the Gram matrix), so they share no code or structure with the
vectorised JAX implementation they check.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from facejax.losses import (
    TRIPLET_LOSSES,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    get_triplet_loss,
    pairwise_squared_distances,
    semi_hard_triplet_loss,
)

ATOL = 1e-5
# Every random batch is padded (mask=False) to this many rows so that all
# tests share one compiled executable per loss; XLA compilation, not the
# arithmetic, dominates the runtime of these tests on CPU.
PHYSICAL_BATCH = 24
METRIC_KEYS = (
    "fraction_active",
    "num_valid_triplets",
    "num_active_triplets",
    "mean_positive_distance",
    "mean_negative_distance",
)


# ---------------------------------------------------------------------------
# Brute-force numpy references.
# ---------------------------------------------------------------------------


def _ref_dist(x):
  x = np.asarray(x, np.float64)
  n = x.shape[0]
  d = [[0.0] * n for _ in range(n)]
  for i in range(n):
    for j in range(n):
      diff = x[i] - x[j]
      d[i][j] = float(np.sum(diff * diff))
  return d


def _is_pos(a, p, labels, mask):
  return bool(mask[a] and mask[p] and a != p and labels[a] == labels[p])


def _is_neg(a, n, labels, mask):
  return bool(mask[a] and mask[n] and labels[a] != labels[n])


def _ref_mean_distances(d, labels, mask):
  b = len(labels)
  pos_sum, pos_cnt, neg_sum, neg_cnt = 0.0, 0, 0.0, 0
  for a in range(b):
    for j in range(b):
      if _is_pos(a, j, labels, mask):
        pos_sum += d[a][j]
        pos_cnt += 1
      if _is_neg(a, j, labels, mask):
        neg_sum += d[a][j]
        neg_cnt += 1
  return (
      pos_sum / pos_cnt if pos_cnt else 0.0,
      neg_sum / neg_cnt if neg_cnt else 0.0,
  )


def _ref_metrics(d, labels, mask, num_valid, num_active):
  mean_pos, mean_neg = _ref_mean_distances(d, labels, mask)
  return {
      "fraction_active": num_active / num_valid if num_valid else 0.0,
      "num_valid_triplets": num_valid,
      "num_active_triplets": num_active,
      "mean_positive_distance": mean_pos,
      "mean_negative_distance": mean_neg,
  }


def ref_batch_all(x, labels, mask, margin):
  d = _ref_dist(x)
  b = len(labels)
  total, num_valid, num_active = 0.0, 0, 0
  for a in range(b):
    for p in range(b):
      if not _is_pos(a, p, labels, mask):
        continue
      for n in range(b):
        if not _is_neg(a, n, labels, mask):
          continue
        num_valid += 1
        value = max(d[a][p] - d[a][n] + margin, 0.0)
        if value > 0.0:
          num_active += 1
          total += value
  loss = total / max(num_active, 1)
  return loss, _ref_metrics(d, labels, mask, num_valid, num_active)


def ref_semi_hard(x, labels, mask, margin):
  d = _ref_dist(x)
  b = len(labels)
  total, num_valid, num_active = 0.0, 0, 0
  for a in range(b):
    for p in range(b):
      if not _is_pos(a, p, labels, mask):
        continue
      nearest_farther = None  # Smallest d(a,n) with d(a,n) > d(a,p).
      largest = None  # Fallback: largest d(a,n) over all negatives.
      for n in range(b):
        if not _is_neg(a, n, labels, mask):
          continue
        dn = d[a][n]
        if largest is None or dn > largest:
          largest = dn
        if dn > d[a][p] and (nearest_farther is None or dn < nearest_farther):
          nearest_farther = dn
      if largest is None:  # Anchor has no negative: pair excluded.
        continue
      chosen = nearest_farther if nearest_farther is not None else largest
      num_valid += 1
      value = max(d[a][p] - chosen + margin, 0.0)
      if value > 0.0:
        num_active += 1
      total += value
  loss = total / max(num_valid, 1)
  return loss, _ref_metrics(d, labels, mask, num_valid, num_active)


def ref_batch_hard(x, labels, mask, margin):
  d = _ref_dist(x)
  b = len(labels)
  total, num_valid, num_active = 0.0, 0, 0
  for a in range(b):
    hardest_pos = None
    for p in range(b):
      if _is_pos(a, p, labels, mask):
        if hardest_pos is None or d[a][p] > hardest_pos:
          hardest_pos = d[a][p]
    hardest_neg = None
    for n in range(b):
      if _is_neg(a, n, labels, mask):
        if hardest_neg is None or d[a][n] < hardest_neg:
          hardest_neg = d[a][n]
    if hardest_pos is None or hardest_neg is None:
      continue
    num_valid += 1
    value = max(hardest_pos - hardest_neg + margin, 0.0)
    if value > 0.0:
      num_active += 1
    total += value
  loss = total / max(num_valid, 1)
  return loss, _ref_metrics(d, labels, mask, num_valid, num_active)


REFERENCES = {
    "batch_all": ref_batch_all,
    "semi_hard": ref_semi_hard,
    "batch_hard": ref_batch_hard,
}
LOSS_NAMES = tuple(REFERENCES)

JITTED = {name: jax.jit(fn) for name, fn in TRIPLET_LOSSES.items()}
JITTED_GRADS = {
    name: jax.jit(jax.grad(lambda e, l, m, margin, fn=fn: fn(e, l, m, margin)[0]))
    for name, fn in TRIPLET_LOSSES.items()
}


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------


def _l2_normalise(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def pad_batch(x, labels, mask, size=PHYSICAL_BATCH, fill=3.0):
  """Append padded rows (junk embeddings, label 0, mask False) up to ``size``."""
  extra = size - x.shape[0]
  assert extra >= 0
  x = np.concatenate([x, np.full((extra, x.shape[1]), fill, x.dtype)])
  labels = np.concatenate([labels, np.zeros(extra, np.int32)])
  mask = np.concatenate([mask, np.zeros(extra, bool)])
  return x, labels, mask


def make_batch(seed, batch_size, dim=8, mask_fraction=0.2):
  """Random batch mixing singleton identities, multi-image identities and
  padded rows (whose labels may collide with real ones on purpose), then
  padded further to ``PHYSICAL_BATCH`` rows."""
  rng = np.random.default_rng(seed)
  labels = []
  identity = 0
  while len(labels) < batch_size:
    # About a third of the identities have a single image.
    count = int(rng.choice([1, 2, 3, 4], p=[0.35, 0.3, 0.2, 0.15]))
    labels.extend([identity] * count)
    identity += 1
  labels = np.array(labels[:batch_size], np.int32)
  rng.shuffle(labels)
  mask = rng.random(batch_size) >= mask_fraction
  x = _l2_normalise(rng.normal(size=(batch_size, dim))).astype(np.float32)
  # Padded rows hold junk; it must not matter.
  x[~mask] = rng.normal(scale=5.0, size=(int((~mask).sum()), dim))
  return pad_batch(x, labels, mask)


def _assert_matches(name, x, labels, mask, margin):
  loss, metrics = JITTED[name](jnp.asarray(x), jnp.asarray(labels), jnp.asarray(mask), margin)
  ref_loss, ref_metrics = REFERENCES[name](x, labels, mask, margin)
  assert loss.shape == ()
  assert loss.dtype == jnp.float32
  np.testing.assert_allclose(float(loss), ref_loss, rtol=0, atol=ATOL)
  assert set(metrics) == set(METRIC_KEYS)
  for key in METRIC_KEYS:
    assert metrics[key].shape == (), key
    assert np.isfinite(np.asarray(metrics[key])), key
    np.testing.assert_allclose(
        float(metrics[key]), ref_metrics[key], rtol=0, atol=ATOL, err_msg=key
    )
  return loss, metrics, ref_loss, ref_metrics


# ---------------------------------------------------------------------------
# Tests.
# ---------------------------------------------------------------------------


def test_pairwise_squared_distances_matches_bruteforce_and_is_clamped():
  rng = np.random.default_rng(0)
  x = _l2_normalise(rng.normal(size=(16, 8))).astype(np.float32)
  # Near-duplicates: the Gram expansion |x|^2 + |y|^2 - 2<x,y> cancels and
  # can come out slightly negative in float32 without the clamp.
  near = (x + rng.normal(scale=1e-5, size=x.shape)).astype(np.float32)
  x = np.concatenate([x, near])
  x[3] = x[5]  # An exact duplicate as well.
  d = np.asarray(pairwise_squared_distances(jnp.asarray(x)))
  assert d.shape == (32, 32) and d.dtype == np.float32
  np.testing.assert_allclose(d, np.array(_ref_dist(x)), rtol=1e-5, atol=ATOL)
  assert (d >= 0).all()
  assert (np.diag(d) == 0).all()
  assert d[3, 5] == 0.0 and d[5, 3] == 0.0
  np.testing.assert_allclose(d, d.T, atol=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize(
    "seed,batch_size,margin",
    [(0, 12, 0.2), (1, 16, 0.2), (2, 20, 0.5), (3, 24, 0.2), (4, 24, 1.0), (5, 17, 0.3)],
)
def test_matches_reference_on_random_batches(name, seed, batch_size, margin):
  x, labels, mask = make_batch(seed, batch_size)
  # The batch must actually exercise what the test claims to cover.
  counts = {int(l): int(np.sum((labels == l) & mask)) for l in labels[mask]}
  assert 1 in counts.values(), "want a singleton identity"
  assert max(counts.values()) >= 2, "want identities with positives"
  assert (~mask).any(), "want padded rows"
  # float32 vs float64 rounding (~1e-7) must not flip a comparison or a
  # relu; seeds are fixed, so this documents rather than filters.
  assert _kink_gap(x, labels, mask, margin) > 1e-5
  _, metrics, _, ref_metrics = _assert_matches(name, x, labels, mask, margin)
  assert ref_metrics["num_valid_triplets"] > 0
  assert ref_metrics["num_active_triplets"] > 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_unnormalised_embeddings(name):
  rng = np.random.default_rng(7)
  x = rng.normal(scale=0.6, size=(14, 8)).astype(np.float32)
  labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 5, 5, 6], np.int32)
  mask = np.ones(14, bool)
  mask[[2, 11]] = False
  _assert_matches(name, *pad_batch(x, labels, mask), 0.2)


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize(
    "case", ["all_masked", "all_singletons", "single_identity", "one_valid_row"]
)
def test_degenerate_batches_give_zero_loss_finite_metrics_and_grads(name, case):
  rng = np.random.default_rng(11)
  b = PHYSICAL_BATCH
  x = _l2_normalise(rng.normal(size=(b, 8))).astype(np.float32)
  labels = np.repeat(np.arange(b // 2, dtype=np.int32), 2)
  mask = np.ones(b, bool)
  if case == "all_masked":
    mask[:] = False
  elif case == "all_singletons":
    labels = np.arange(b, dtype=np.int32)
  elif case == "single_identity":
    labels = np.zeros(b, np.int32)  # Positives but no negatives.
  elif case == "one_valid_row":
    mask[:] = False
    mask[4] = True

  loss, metrics, _, _ = _assert_matches(name, x, labels, mask, 0.2)
  assert float(loss) == 0.0
  assert int(metrics["num_valid_triplets"]) == 0
  assert int(metrics["num_active_triplets"]) == 0
  assert float(metrics["fraction_active"]) == 0.0

  grad = np.asarray(JITTED_GRADS[name](jnp.asarray(x), labels, mask, 0.2))
  assert np.isfinite(grad).all()
  np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_padded_rows_are_ignored_even_if_nan(name):
  x, labels, mask = make_batch(3, 20)
  x[~mask] = np.nan
  labels[~mask] = labels[mask][0]  # Collide with a real identity on purpose.
  loss, _, _, _ = _assert_matches(name, x, labels, mask, 0.2)
  assert np.isfinite(float(loss)) and float(loss) > 0

  grad = np.asarray(JITTED_GRADS[name](jnp.asarray(x), labels, mask, 0.2))
  assert np.isfinite(grad).all()
  np.testing.assert_array_equal(grad[~mask], 0.0)
  assert np.abs(grad[mask]).sum() > 0


def test_hand_worked_example():
  # 1-D points, squared distances, margin 0.2.
  #   idx  x      label  mask
  #   0    0.0    0      yes   A0
  #   1    1.0    0      yes   A1
  #   2    1.8    1      yes   B0
  #   3   -1.05   1      yes   B1
  #   4    0.5    2      yes   C  (singleton: never an anchor, only a negative)
  #   5    1.5    1      no    padded; would add label-1 pairs if counted
  # Relevant squared distances:
  #   d(A0,A1)=1      d(B0,B1)=2.85^2=8.1225
  #   d(A0,B0)=3.24   d(A0,B1)=1.1025  d(A0,C)=0.25
  #   d(A1,B0)=0.64   d(A1,B1)=4.2025  d(A1,C)=0.25
  #   d(B0,C)=1.69    d(B1,C)=2.4025
  #
  # Semi-hard (TF rule: nearest negative farther than the positive, else the
  # farthest negative):
  #   (A0,A1): d_ap=1; negatives farther than 1: B1 (1.1025), B0 (3.24)
  #            -> nearest B1 (inside the band 1 < 1.1025 < 1.2);
  #            loss 1 - 1.1025 + 0.2 = 0.0975
  #   (A1,A0): d_ap=1; farther: only B1 (4.2025) -> loss max(-3.0025, 0) = 0
  #   (B0,B1): d_ap=8.1225; no negative is farther (3.24, 0.64, 1.69)
  #            -> fallback largest = A0 (3.24); loss 8.1225-3.24+0.2 = 5.0825
  #   (B1,B0): d_ap=8.1225; none farther (1.1025, 4.2025, 2.4025)
  #            -> fallback largest = A1 (4.2025); loss 8.1225-4.2025+0.2 = 4.12
  #   mean over the 4 pairs = 9.3 / 4 = 2.325; 3 of 4 active.
  #
  # Batch-hard (hardest positive, nearest negative):
  #   A0: 1 - 0.25 + 0.2 = 0.95        A1: 1 - 0.25 + 0.2 = 0.95
  #   B0: 8.1225 - 0.64 + 0.2 = 7.6825  B1: 8.1225 - 1.1025 + 0.2 = 7.22
  #   mean = 16.8025 / 4 = 4.200625; 4 of 4 active.
  #
  # Batch-all (d_ap + 0.2 - d_an for every negative):
  #   (A0,A1): 1.2 - {3.24, 1.1025, 0.25}    -> 0.0975, 0.95          = 1.0475
  #   (A1,A0): 1.2 - {0.64, 4.2025, 0.25}    -> 0.56, 0.95            = 1.51
  #   (B0,B1): 8.3225 - {3.24, 0.64, 1.69}   -> 5.0825, 7.6825, 6.6325 = 19.3975
  #   (B1,B0): 8.3225 - {1.1025, 4.2025, 2.4025} -> 7.22, 4.12, 5.92   = 17.26
  #   12 valid, 10 active; loss = 39.215 / 10 = 3.9215.
  #
  # Mean positive distance = (1 + 1 + 8.1225 + 8.1225) / 4 = 4.56125.
  # Mean negative distance = sum of the 8 unordered negative pairs / 8
  #   = 13.7775 / 8 = 1.7221875.
  x = np.array([[0.0], [1.0], [1.8], [-1.05], [0.5], [1.5]], np.float32)
  labels = np.array([0, 0, 1, 1, 2, 1], np.int32)
  mask = np.array([True, True, True, True, True, False])
  expected = {
      "semi_hard": (2.325, 4, 3),
      "batch_hard": (4.200625, 4, 4),
      "batch_all": (3.9215, 12, 10),
  }
  for name, (exp_loss, exp_valid, exp_active) in expected.items():
    loss, metrics, ref_loss, _ = _assert_matches(name, x, labels, mask, 0.2)
    np.testing.assert_allclose(float(loss), exp_loss, atol=ATOL, err_msg=name)
    np.testing.assert_allclose(ref_loss, exp_loss, atol=ATOL, err_msg=name)
    assert int(metrics["num_valid_triplets"]) == exp_valid, name
    assert int(metrics["num_active_triplets"]) == exp_active, name
    np.testing.assert_allclose(float(metrics["fraction_active"]), exp_active / exp_valid, atol=ATOL)
    np.testing.assert_allclose(float(metrics["mean_positive_distance"]), 4.56125, atol=ATOL)
    np.testing.assert_allclose(float(metrics["mean_negative_distance"]), 1.7221875, atol=ATOL)


def test_semi_hard_tie_is_not_farther():
  # TF's rule needs d(a,n) > d(a,p) *strictly*; a negative tied with the
  # positive must not be picked when a strictly farther one exists.
  #   points (1-D): a=0 (label 0), p=1 (label 0), n1=-1 (label 1),
  #                 n2=1.05 (label 1); all distances below are exact-ish.
  #   (a,p):   d_ap=1; negatives n1: 1 (tie), n2: 1.1025 -> farther: n2 only
  #            -> loss 1 - 1.1025 + 0.2 = 0.0975   (">=" would pick n1: 0.2)
  #   (p,a):   d_ap=1; negatives n1: 4, n2: 0.0025 -> farther: n1 -> loss 0
  #   (n1,n2): d_ap=2.05^2=4.2025; negatives a: 1, p: 4 -> none farther
  #            -> fallback largest 4 -> loss 4.2025 - 4 + 0.2 = 0.4025
  #   (n2,n1): d_ap=4.2025; negatives a: 1.1025, p: 0.0025 -> fallback
  #            1.1025 -> loss 4.2025 - 1.1025 + 0.2 = 3.3
  #   mean = 3.8 / 4 = 0.95; 3 of 4 pairs active.
  x = np.array([[0.0], [1.0], [-1.0], [1.05]], np.float32)
  labels = np.array([0, 0, 1, 1], np.int32)
  mask = np.ones(4, bool)
  # Padded to the hand-worked example's shape to reuse its compilation.
  x, labels, mask = pad_batch(x, labels, mask, size=6, fill=0.25)
  loss, metrics, _, _ = _assert_matches("semi_hard", x, labels, mask, 0.2)
  np.testing.assert_allclose(float(loss), 0.95, atol=ATOL)
  assert int(metrics["num_valid_triplets"]) == 4
  assert int(metrics["num_active_triplets"]) == 3


def _kink_gap(x, labels, mask, margin):
  """Smallest distance to a non-differentiable point of any of the losses:
  ties between two distances from the same anchor (argmin/argmax and the
  semi-hard comparison switch there) and zeros of d_ap - d_an + margin
  (relu kink)."""
  d = _ref_dist(x)
  b = len(labels)
  gap = math.inf
  for a in range(b):
    if not mask[a]:
      continue
    row = [d[a][j] for j in range(b) if mask[j] and j != a]
    for i in range(len(row)):
      for j in range(i + 1, len(row)):
        gap = min(gap, abs(row[i] - row[j]))
    for p in range(b):
      if not _is_pos(a, p, labels, mask):
        continue
      for n in range(b):
        if _is_neg(a, n, labels, mask):
          gap = min(gap, abs(d[a][p] - d[a][n] + margin))
  return gap


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradients_match_finite_differences(name):
  rng = np.random.default_rng(2)
  labels = np.array([0, 0, 0, 1, 1, 2, 2, 3], np.int32)
  mask = np.array([True, True, True, True, True, True, False, True])
  margin = 0.5
  x = _l2_normalise(rng.normal(size=(8, 4)))
  # Far from every kink relative to eps, so finite differences are valid.
  assert _kink_gap(x, labels, mask, margin) > 1e-2
  fn = TRIPLET_LOSSES[name]
  # float64 so that central differences with a small eps are accurate.
  with jax.enable_x64(True):
    loss = jax.jit(lambda e: fn(e, jnp.asarray(labels), jnp.asarray(mask), margin)[0])
    xj = jnp.asarray(x, jnp.float64)
    assert loss(xj).dtype == jnp.float64
    assert float(loss(xj)) > 0  # Non-trivial gradient.
    check_grads(loss, (xj,), order=1, modes=("rev",), eps=1e-6, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_jit_matches_eager(name):
  fn = TRIPLET_LOSSES[name]
  jitted = JITTED[name]
  x, labels, mask = make_batch(1, 16)
  args = (jnp.asarray(x), jnp.asarray(labels), jnp.asarray(mask))
  eager = fn(*args, 0.2)  # Op-by-op dispatch, no jit.
  for margin in (0.2, 0.5):  # Margin is traced: one compilation for both.
    compiled = jitted(*args, margin)
    if margin == 0.2:
      np.testing.assert_allclose(float(compiled[0]), float(eager[0]), atol=ATOL)
      for key in METRIC_KEYS:
        np.testing.assert_allclose(float(compiled[1][key]), float(eager[1][key]), atol=ATOL)
    ref_loss, _ = REFERENCES[name](x, labels, mask, margin)
    np.testing.assert_allclose(float(compiled[0]), ref_loss, atol=ATOL)
  # All-padded batch under jit, value and gradient.
  zeros = (jnp.zeros(PHYSICAL_BATCH, jnp.int32), jnp.zeros(PHYSICAL_BATCH, bool))
  out = jitted(jnp.ones((PHYSICAL_BATCH, 8)), *zeros, 0.2)
  assert float(out[0]) == 0.0
  grad = JITTED_GRADS[name](jnp.ones((PHYSICAL_BATCH, 8)), *zeros, 0.2)
  assert np.isfinite(np.asarray(grad)).all()


def test_registry_and_lookup():
  assert set(TRIPLET_LOSSES) == {"batch_all", "semi_hard", "batch_hard"}
  assert get_triplet_loss("batch_all") is batch_all_triplet_loss
  assert get_triplet_loss("semi_hard") is semi_hard_triplet_loss
  assert get_triplet_loss("batch_hard") is batch_hard_triplet_loss
  with pytest.raises(ValueError) as excinfo:
    get_triplet_loss("semihard")
  message = str(excinfo.value)
  assert "'semihard'" in message
  for valid in ("batch_all", "semi_hard", "batch_hard"):
    assert valid in message


# ---------------------------------------------------------------------------
# Medium batches: loss, metrics and gradients against a dense reference.
# ---------------------------------------------------------------------------

MEDIUM_BATCH = 96


def ref_dense(name, x, labels, mask, margin):
  """Brute-force float64 ``(loss, metrics, d loss / d x)`` over the explicit triplet cube.

  Independent of the implementation's sort-and-search: every triplet (or
  mined pair / anchor) is scored on ``[B, B, B]`` (or ``[B, B]``) arrays of
  coordinate-difference distances. The gradient is written out by hand:
  ``dL/dd[a, j]`` from the active terms, where a choice among *tied*
  distances (semi-hard's chosen negative, batch-hard's hardest positive and
  negative) splits its derivative equally between them (the JVP convention
  of ``jnp.min``/``jnp.max``), and the relu contributes nothing at exactly
  0; then ``dL/dx_i = 2 sum_j (G_ij + G_ji) (x_i - x_j)``. This holds for
  the implementation's Gram-matrix distances as long as no two valid rows
  coincide (its clamp at 0 would halve a zero distance's derivative).
  """
  labels, mask = np.asarray(labels), np.asarray(mask, bool)
  # Padded rows take no part; zeroed so their junk (NaN) cannot reach sums.
  x = np.where(mask[:, None], np.asarray(x, np.float64), 0.0)
  b = len(labels)
  diff = x[:, None, :] - x[None, :, :]
  d = np.sum(diff * diff, axis=-1)
  both = mask[:, None] & mask[None, :]
  same = labels[:, None] == labels[None, :]
  pos = both & same & ~np.eye(b, dtype=bool)
  neg = both & ~same
  g = np.zeros((b, b))  # d loss / d d[a, j].
  if name == "batch_all":
    triplet = pos[:, :, None] & neg[:, None, :]
    raw = d[:, :, None] - d[:, None, :] + margin
    active = triplet & (raw > 0)
    num_valid, num_active = int(triplet.sum()), int(active.sum())
    denom = max(num_active, 1)
    loss = np.where(active, raw, 0.0).sum() / denom
    g += active.sum(2) / denom
    g -= active.sum(1) / denom
  elif name == "semi_hard":
    has_neg = neg.any(1)
    farther = neg[:, None, :] & (d[:, None, :] > d[:, :, None])  # [a, p, n]
    nearest = np.where(farther, d[:, None, :], np.inf).min(2)
    largest = np.where(neg, d, -np.inf).max(1)
    chosen = np.where(farther.any(2), nearest, largest[:, None])
    pair = pos & has_neg[:, None]
    raw = d - chosen + margin
    active = pair & (raw > 0)
    num_valid, num_active = int(pair.sum()), int(active.sum())
    denom = max(num_valid, 1)
    loss = np.where(active, raw, 0.0).sum() / denom
    tied = neg[:, None, :] & (d[:, None, :] == chosen[:, :, None])  # [a, p, n]
    share = tied / np.maximum(tied.sum(2, keepdims=True), 1)
    g += active / denom
    g -= np.sum(active[:, :, None] * share, axis=1) / denom
  elif name == "batch_hard":
    hardest_pos = np.where(pos, d, -np.inf).max(1)
    hardest_neg = np.where(neg, d, np.inf).min(1)
    anchor = pos.any(1) & neg.any(1)
    raw = np.where(anchor, hardest_pos - hardest_neg + margin, 0.0)
    active = anchor & (raw > 0)
    num_valid, num_active = int(anchor.sum()), int(active.sum())
    denom = max(num_valid, 1)
    loss = np.where(active, raw, 0.0).sum() / denom
    tied_pos = pos & (d == hardest_pos[:, None])
    tied_neg = neg & (d == hardest_neg[:, None])
    g += active[:, None] * tied_pos / np.maximum(tied_pos.sum(1, keepdims=True), 1) / denom
    g -= active[:, None] * tied_neg / np.maximum(tied_neg.sum(1, keepdims=True), 1) / denom
  else:
    raise ValueError(name)
  sym = g + g.T
  grad = 2.0 * (sym.sum(1)[:, None] * x - sym @ x)
  metrics = {
      "fraction_active": num_active / num_valid if num_valid else 0.0,
      "num_valid_triplets": num_valid,
      "num_active_triplets": num_active,
      "mean_positive_distance": d[pos].mean() if pos.any() else 0.0,
      "mean_negative_distance": d[neg].mean() if neg.any() else 0.0,
  }
  return loss, metrics, np.where(mask[:, None], grad, 0.0)


def _ref_pairs(x, labels, mask):
  """float64 squared distances [B, B] and the valid/positive/negative pair masks."""
  x = np.where(mask[:, None], np.asarray(x, np.float64), 0.0)
  diff = x[:, None, :] - x[None, :, :]
  d = np.sum(diff * diff, axis=-1)
  b = len(labels)
  both = mask[:, None] & mask[None, :]
  same = labels[:, None] == labels[None, :]
  pos = both & same & ~np.eye(b, dtype=bool)
  neg = both & ~same
  return d, b, both, pos, neg


def _ref_ties(x, labels, mask, margin):
  """What a batch exercises: counts of tied choices and of exact kinks."""
  d, b, both, pos, neg = _ref_pairs(x, labels, mask)
  triplet = pos[:, :, None] & neg[:, None, :]
  raw = d[:, :, None] - d[:, None, :] + margin
  farther = neg[:, None, :] & (d[:, None, :] > d[:, :, None])
  nearest = np.where(farther, d[:, None, :], np.inf).min(2)
  tied_nearest = (neg[:, None, :] & (d[:, None, :] == nearest[:, :, None])).sum(2)
  largest = np.where(neg, d, -np.inf).max(1)
  tied_largest = (neg & (d == largest[:, None])).sum(1)
  no_farther = pos & neg.any(1)[:, None] & ~farther.any(2)
  return {
      # Semi-hard picks among >= 2 equal negatives (nearest farther / fallback).
      "tied_nearest_farther": int(np.sum(pos & (tied_nearest > 1))),
      "tied_fallback": int(np.sum(no_farther & (tied_largest[:, None] > 1))),
      # d(a,n) == d(a,p): not "farther" (semi-hard's strict test).
      "negative_tied_with_positive": int(np.sum(triplet & (d[:, None, :] == d[:, :, None]))),
      # Hinge exactly 0: neither active nor differentiated.
      "hinge_exactly_zero": int(np.sum(triplet & (raw == 0))),
      "no_farther_pairs": int(no_farther.sum()),
      "pos_pairs": int(pos.sum()),
  }


def _kink_gap_dense(x, labels, mask, margin):
  """Vectorised :func:`_kink_gap` (distance to the nearest tie or relu kink)."""
  d, b, both, pos, neg = _ref_pairs(x, labels, mask)
  gap = np.inf
  for a in np.flatnonzero(mask):
    row = np.sort(d[a, both[a] & (np.arange(b) != a)])
    if row.size > 1:
      gap = min(gap, np.diff(row).min())
    kinks = d[a, pos[a]][:, None] - d[a, neg[a]][None, :] + margin
    if kinks.size:
      gap = min(gap, np.abs(kinks).min())
  return gap


def make_medium_batch(seed, *, dyadic, dim, size=MEDIUM_BATCH, mask_fraction=0.1):
  """``size`` rows of P x K-style identities (1 to 8 images each, some singletons)
  with padded rows holding NaN. ``dyadic``: coordinates in {-1/2, ..., 1/2} step
  1/4 and distinct rows, so every distance, comparison and hinge is exact in
  float32 and float64 and ties (equal distances, hinges of exactly 0) abound;
  otherwise random unit vectors."""
  rng = np.random.default_rng(seed)
  labels, identity = [], 0
  while len(labels) < size:
    labels.extend([identity] * int(rng.choice([1, 2, 3, 4, 6, 8])))
    identity += 1
  labels = np.array(labels[:size], np.int32)
  rng.shuffle(labels)
  mask = rng.random(size) >= mask_fraction
  if dyadic:
    # Rows 0-3 are planted so that semi-hard's fallback meets a tie: anchor
    # +1/2 (all coordinates) has its positive -1/2 at the largest distance
    # there is (dim), so no negative is farther; negatives 2 and 3 are tied
    # at distance dim - 1, farther than any other (for this seed).
    planted = np.full((4, dim), -2)
    planted[0] = 2
    planted[2, -1] = 2
    planted[3, 0] = 2
    powers = 5 ** np.arange(dim)
    free = np.setdiff1d(np.arange(5**dim), (planted + 2) @ powers)
    grid = rng.choice(free, size=size - 4, replace=False)  # Distinct rows.
    digits = np.concatenate([planted + 2, (grid[:, None] // powers[None, :]) % 5])
    x = ((digits - 2) / 4.0).astype(np.float32)
    labels[:4] = labels.max() + np.array([1, 1, 2, 3])
    mask[:4] = True
  else:
    x = _l2_normalise(rng.normal(size=(size, dim))).astype(np.float32)
  x[~mask] = np.nan
  return x, labels, mask


def _loss_and_grad(name):
  fn = TRIPLET_LOSSES[name]
  return jax.jit(jax.value_and_grad(lambda e, l, m, margin: fn(e, l, m, margin), has_aux=True))


def _assert_matches_dense(name, x, labels, mask, margin, dtype):
  (loss, metrics), grad = _loss_and_grad(name)(
      jnp.asarray(x, dtype), jnp.asarray(labels), jnp.asarray(mask), margin
  )
  ref_loss, ref_metrics, ref_grad = ref_dense(name, x, labels, mask, margin)
  assert loss.dtype == dtype and grad.dtype == dtype
  np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5, atol=1e-7)
  for key in ("num_valid_triplets", "num_active_triplets"):
    assert metrics[key].dtype == jnp.int32
    assert int(metrics[key]) == ref_metrics[key], key
  for key in ("fraction_active", "mean_positive_distance", "mean_negative_distance"):
    assert metrics[key].dtype == jnp.float32
    np.testing.assert_allclose(float(metrics[key]), ref_metrics[key], rtol=1e-5, err_msg=key)
  grad = np.asarray(grad, np.float64)
  assert np.isfinite(grad).all()
  np.testing.assert_array_equal(grad[~mask], 0.0)
  scale = np.abs(ref_grad).max()
  assert scale > 0
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-5 * scale)
  return ref_metrics


@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("margin", [0.25, 0.5])
def test_medium_batch_with_exact_ties_matches_dense_reference(name, margin):
  x, labels, mask = make_medium_batch(10, dyadic=True, dim=6)
  ties = _ref_ties(x, labels, mask, margin)
  # The batch must exercise every tie rule the implementation has to honour.
  assert ties["tied_nearest_farther"] > 10, ties
  assert ties["tied_fallback"] > 0, ties
  assert ties["negative_tied_with_positive"] > 10, ties
  assert ties["hinge_exactly_zero"] > 10, ties
  counts = np.bincount(labels[mask])
  assert (counts == 1).any() and counts.max() >= 6
  ref_metrics = _assert_matches_dense(name, x, labels, mask, margin, jnp.float32)
  assert ref_metrics["num_active_triplets"] > 0
  if name != "batch_hard":  # Hardest-triplet mining leaves every anchor active here.
    assert ref_metrics["num_active_triplets"] < ref_metrics["num_valid_triplets"]


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_medium_batch_random_float64_matches_dense_reference(name):
  x, labels, mask = make_medium_batch(11, dyadic=False, dim=16)
  margin = 0.2
  # float64 end to end: no comparison of the implementation can round the
  # other way from the reference's (the nearest kink is far above 1e-15).
  assert _kink_gap_dense(x, labels, mask, margin) > 1e-9
  with jax.enable_x64(True):
    ref_metrics = _assert_matches_dense(name, x, labels, mask, margin, jnp.float64)
  assert ref_metrics["num_active_triplets"] > 0


@pytest.mark.parametrize("name", ["batch_all", "semi_hard"])
def test_memory_is_quadratic_not_cubic(name):
  # Compiled, never run: at B = 1,024 a [B, B, B] float32 tensor is 4.3 GB,
  # 1,024x a [B, B] one. The loss and its gradient must stay within a few
  # dozen [B, B] buffers.
  b, dim = 1024, 128
  args = (
      jax.ShapeDtypeStruct((b, dim), jnp.float32),
      jax.ShapeDtypeStruct((b,), jnp.int32),
      jax.ShapeDtypeStruct((b,), jnp.bool_),
      0.2,
  )
  compiled = _loss_and_grad(name).lower(*args).compile()
  temp = compiled.memory_analysis().temp_size_in_bytes
  assert temp < 32 * b * b * 4, temp / (b * b * 4)
