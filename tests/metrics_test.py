"""Tests for facejax.evaluation.metrics (LFW verification protocol)."""

import json
import math

import numpy as np
import pytest
from scipy import interpolate, stats
from sklearn import metrics as skm

from facejax.evaluation import metrics as m


def _random_pairs(n, seed=0, sep=1.0, decimals=None):
  """Balanced random pairs; same ~ N(1, .4), diff ~ N(1 + sep, .4), clipped to [0, 4]."""
  rng = np.random.default_rng(seed)
  issame = rng.random(n) < 0.5
  d = np.where(issame, rng.normal(1.0, 0.4, n), rng.normal(1.0 + sep, 0.4, n))
  d = np.clip(d, 0.0, 4.0)
  if decimals is not None:
    d = np.round(d, decimals)  # creates ties
  return d, issame


def _exact_thresholds(d):
  """Grid reproducing every ROC vertex: below min, midpoints, above max."""
  u = np.unique(d)
  return np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2, [u[-1] + 1.0]])


# ---------------------------------------------------------------------------
# Hand-worked cases.
# ---------------------------------------------------------------------------

# Fold 0: same 0.5, 1.5        diff 1.0, 2.5
# Fold 1: same 0.2, 1.2        diff 0.8, 3.0
HAND_D = np.array([0.5, 1.5, 1.0, 2.5, 0.2, 1.2, 0.8, 3.0])
HAND_S = np.array([True, True, False, False, True, True, False, False])
HAND_F = np.array([0, 0, 0, 0, 1, 1, 1, 1])
HAND_T = np.array([0.0, 1.0, 2.0, 3.0])


def test_accuracy_hand_worked():
  r = m.compute_accuracy_kfold(HAND_D, HAND_S, HAND_F, thresholds=HAND_T)
  # Test fold 0, train on fold 1 (same .2 1.2, diff .8 3.0), correct / 4:
  #   t=0: nothing predicted same -> 2 diffs right                 = 2
  #   t=1: same-pred {.2, .8} -> .2 ok, .8 wrong, 1.2 missed, 3 ok = 2
  #   t=2: same-pred {.2, 1.2, .8} -> 2 same ok + 3.0 ok          = 3
  #   t=3: same-pred {.2, 1.2, .8} (3.0 is not < 3)                = 3
  #   tie 2/3 -> first -> threshold 2.0.
  #   On fold 0 at 2.0: same-pred {.5, 1.5, 1.0} -> .5 ok, 1.5 ok, 1.0 wrong,
  #   2.5 ok -> 3/4 = 0.75.
  # Test fold 1, train on fold 0 (same .5 1.5, diff 1.0 2.5):
  #   t=0: 2;  t=1: {.5} -> .5 ok, 1.5 missed, 1.0 ok, 2.5 ok = 3
  #   t=2: {.5, 1.5, 1.0} -> 3;  t=3: all predicted same -> 2
  #   tie 1/2 -> first -> threshold 1.0.
  #   On fold 1 at 1.0: {.2, .8} -> .2 ok, .8 wrong, 1.2 missed, 3.0 ok = 2/4.
  np.testing.assert_array_equal(r.fold_thresholds, [2.0, 1.0])
  np.testing.assert_allclose(r.fold_accuracies, [0.75, 0.5])
  assert r.accuracy_mean == pytest.approx(0.625)
  assert r.accuracy_std == pytest.approx(0.125)  # ddof=0: |.75-.5|/2
  # All 8 pairs: t=0 -> 4, t=1 -> 5, t=2 -> 6 (4 same + 2.5, 3.0), t=3 -> 5.
  assert r.best_threshold == 2.0


def test_roc_hand_worked():
  fpr, tpr = m.fold_roc_curves(HAND_D, HAND_S, HAND_F, thresholds=HAND_T)
  # Fold 0 (same .5 1.5, diff 1.0 2.5): d < t for t = 0,1,2,3
  #   TPR: 0, 1/2, 1, 1       FPR: 0, 0, 1/2, 1
  # Fold 1 (same .2 1.2, diff .8 3.0):
  #   TPR: 0, 1/2, 1, 1       FPR: 0, 1/2, 1/2, 1/2
  np.testing.assert_allclose(tpr, [[0, 0.5, 1, 1], [0, 0.5, 1, 1]])
  np.testing.assert_allclose(fpr, [[0, 0, 0.5, 1], [0, 0.5, 0.5, 0.5]])
  mfpr, mtpr = m.compute_roc_kfold(HAND_D, HAND_S, HAND_F, thresholds=HAND_T)
  np.testing.assert_allclose(mfpr, [0, 0.25, 0.5, 0.75])
  np.testing.assert_allclose(mtpr, [0, 0.5, 1, 1])


# Fold 0: same 0.5 1.5 2.5      diff 0.9 1.8 3.5 3.9
# Fold 1: same 0.3 1.7 2.25     diff 1.5 2.3 3.0 3.8
VAL_D = np.array([0.5, 1.5, 2.5, 0.9, 1.8, 3.5, 3.9, 0.3, 1.7, 2.25, 1.5, 2.3, 3.0, 3.8])
VAL_S = np.array([1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
VAL_F = np.array([0] * 7 + [1] * 7)
VAL_T = np.array([0.0, 1.0, 2.0, 3.0, 4.0])


def test_val_far_hand_worked_interpolation():
  r = m.compute_val_far_kfold(VAL_D, VAL_S, VAL_F, far_target=0.4, thresholds=VAL_T)
  # Test fold 1, train fold 0 diffs (.9 1.8 3.5 3.9), FAR(t) at t=0..4:
  #   0, 1/4, 2/4, 2/4, 1.  Unique FAR -> LAST threshold of each plateau:
  #   0 -> 0, .25 -> 1, .5 -> 3, 1 -> 4.
  #   FAR .4 lies between (.25, 1) and (.5, 3):
  #   thr = 1 + (.4-.25)/(.5-.25) * (3-1) = 1 + .6*2 = 2.2.
  #   (Keeping the FIRST threshold, .5 -> 2, would give 1.6.)
  #   Fold 1 at 2.2: same < 2.2 {.3 1.7} -> VAL 2/3; diff < 2.2 {1.5} -> FAR 1/4.
  # Test fold 0, train fold 1 diffs (1.5 2.3 3.0 3.8), FAR(t):
  #   0, 0, 1/4, 2/4 (3.0 is not < 3), 1 -> 0->1, .25->2, .5->3, 1->4.
  #   thr = 2 + .6*(3-2) = 2.6.
  #   Fold 0 at 2.6: same {.5 1.5 2.5} -> VAL 1; diff {.9 1.8} -> FAR 2/4.
  np.testing.assert_allclose(r.fold_thresholds, [2.6, 2.2])
  np.testing.assert_allclose(r.fold_vals, [1.0, 2 / 3])
  np.testing.assert_allclose(r.fold_fars, [0.5, 0.25])
  assert r.val_mean == pytest.approx(5 / 6)
  assert r.val_std == pytest.approx(1 / 6)  # ddof=0: |1 - 2/3| / 2
  assert r.far_mean == pytest.approx(0.375)
  assert r.far_target == 0.4


def test_val_far_target_hit_exactly_uses_last_threshold():
  r = m.compute_val_far_kfold(VAL_D, VAL_S, VAL_F, far_target=0.5, thresholds=VAL_T)
  # Training FAR 0.5 plateau ends at t=3 for both training sets.
  np.testing.assert_allclose(r.fold_thresholds, [3.0, 3.0])
  # Fold 0 at 3.0: VAL 3/3, diffs < 3 {.9 1.8} -> 2/4.
  # Fold 1 at 3.0: VAL 3/3, diffs < 3 {1.5 2.3} -> 2/4.
  np.testing.assert_allclose(r.fold_vals, [1.0, 1.0])
  np.testing.assert_allclose(r.fold_fars, [0.5, 0.5])


def test_val_far_zero_plateau_uses_its_end():
  # Target .1 between FAR levels 0 and .25.
  # Test fold 1 (train fold 0): 0 -> 0, .25 -> 1: thr = .1/.25 * 1 = 0.4.
  #   Fold 1 at .4: same {.3} -> 1/3, no diff -> 0.
  # Test fold 0 (train fold 1): FAR 0 plateau ends at 1, .25 -> 2:
  #   thr = 1 + .4 * 1 = 1.4 -> same {.5} -> 1/3, diff {.9} -> 1/4.
  r = m.compute_val_far_kfold(VAL_D, VAL_S, VAL_F, far_target=0.1, thresholds=VAL_T)
  np.testing.assert_allclose(r.fold_thresholds, [1.4, 0.4])
  np.testing.assert_allclose(r.fold_vals, [1 / 3, 1 / 3])
  np.testing.assert_allclose(r.fold_fars, [0.25, 0.0])


def test_val_far_unreachable_target_gives_threshold_zero():
  # Grid [0, 0.5]: no different pair (min .9) is ever accepted, so the max
  # training FAR is 0 < 1e-3 -> threshold 0.0 -> no pair (all d >= 0) is
  # accepted on the test fold: VAL 0, FAR 0.
  r = m.compute_val_far_kfold(VAL_D, VAL_S, VAL_F, far_target=1e-3, thresholds=[0.0, 0.5])
  np.testing.assert_array_equal(r.fold_thresholds, [0.0, 0.0])
  np.testing.assert_array_equal(r.fold_vals, [0.0, 0.0])
  np.testing.assert_array_equal(r.fold_fars, [0.0, 0.0])
  assert r.val_mean == 0.0 and r.far_mean == 0.0


def test_val_far_default_grid_realistic():
  # 10 folds of 600 pairs; training diffs = 2700 -> FAR steps of 1/2700.
  d, s = _random_pairs(6000, seed=3, sep=1.2)
  r = m.compute_val_far_kfold(d, s, None, far_target=1e-2)
  # LAST-threshold dedup: the training FAR at the chosen threshold is one of
  # the two FAR levels around the target, levels 1/2700 apart (untied
  # continuous distances) -> within one false accept of the target.
  folds = m.make_folds(6000, 10)
  for k in range(10):
    tr = folds != k
    n_fa = np.count_nonzero(d[tr & ~s] < r.fold_thresholds[k])
    assert n_fa in (26, 27)  # 1e-2 * 2700 = 27
  assert 0 < r.val_mean < 1
  assert r.far_mean == pytest.approx(1e-2, abs=5e-3)


# ---------------------------------------------------------------------------
# Separable / reversed data.
# ---------------------------------------------------------------------------


def test_perfectly_separable():
  rng = np.random.default_rng(1)
  s = np.tile([True, False], 300)
  d = np.where(s, rng.uniform(0.1, 0.9, 600), rng.uniform(1.1, 3.9, 600))
  r = m.evaluate_verification(d, s, num_folds=10)
  assert r.accuracy_mean == 1.0 and r.accuracy_std == 0.0
  np.testing.assert_array_equal(r.fold_accuracies, np.ones(10))
  assert r.auc == pytest.approx(1.0, abs=1e-12)
  assert r.eer == 0.0
  # The FAR=0 plateau ends just below the smallest different distance
  # (>= 1.1), above every same distance (< .9) -> VAL 1.
  assert r.val_mean == 1.0
  assert np.all(r.fold_fars <= 1 / 30)  # at most one of 30 test diffs
  assert d[s].max() < r.best_threshold <= d[~s].min()


def test_reversed_data():
  rng = np.random.default_rng(2)
  s = np.tile([True, False], 300)
  d = np.where(s, rng.uniform(2.1, 3.9, 600), rng.uniform(0.1, 1.9, 600))
  r = m.evaluate_verification(d, s, num_folds=10)
  # Best a threshold rule can do is "everything different" = 50%.
  assert r.accuracy_mean <= 0.5 + 1e-12
  assert r.auc == pytest.approx(0.0, abs=1e-12)
  # True EER is 1 (the line FPR = 1 - TPR meets the ROC on its vertical
  # step at FPR 1); the max-TPR dedup cuts that corner and lands within
  # ~1/150 (one different pair per fold) below it, see equal_error_rate.
  assert 0.99 <= r.eer <= 1.0
  assert r.val_mean == 0.0


# ---------------------------------------------------------------------------
# Agreement with sklearn.
# ---------------------------------------------------------------------------


def test_roc_points_match_sklearn_roc_curve_exactly():
  d, s = _random_pairs(500, seed=4, decimals=2)  # rounding -> many ties
  fpr, tpr = m.roc_points(d, s, thresholds=_exact_thresholds(d))
  # sklearn scores "higher = more positive" and accepts score >= thr, i.e.
  # d <= t_j for each unique d_j; our d < midpoint is the same partition.
  sk_fpr, sk_tpr, _ = skm.roc_curve(s, -d, drop_intermediate=False)
  np.testing.assert_allclose(fpr, sk_fpr, rtol=0, atol=1e-15)
  np.testing.assert_allclose(tpr, sk_tpr, rtol=0, atol=1e-15)
  assert skm.auc(fpr, tpr) == pytest.approx(skm.roc_auc_score(s, -d), abs=1e-12)


def test_fold_mean_auc_matches_roc_auc_score():
  d, s = _random_pairs(1000, seed=5)
  exact = skm.roc_auc_score(s, -d)
  # Two folds holding the SAME pairs: both per-fold test curves equal the
  # single-block ROC, so the fold mean is that ROC and the comparison with
  # roc_auc_score is legitimate (no fold-averaging effect).
  d2, s2, f2 = np.r_[d, d], np.r_[s, s], np.r_[np.zeros(1000, int), np.ones(1000, int)]

  # (a) exact vertex grid -> identical AUC.
  fpr, tpr = m.compute_roc_kfold(d2, s2, f2, thresholds=_exact_thresholds(d))
  assert skm.auc(fpr, tpr) == pytest.approx(exact, abs=1e-12)

  # (b) default 0.01 grid: the trapezoid between grid points (x0,y0)-(x1,y1)
  # can differ from the true staircase inside that box by at most
  # dx*dy/2, so |AUC_grid - AUC_exact| <= sum(dx*dy)/2.  Check that bound
  # holds and that it (hence the error) is ~1e-3 for this data.
  r = m.evaluate_verification(d2, s2, f2)
  bound = 0.5 * np.sum(np.diff(r.roc_fpr) * np.diff(r.roc_tpr))
  assert abs(r.auc - exact) <= bound + 1e-12
  assert bound < 2e-3
  assert abs(r.auc - exact) < 1e-3


def test_fold_tpr_fpr_match_confusion_matrix():
  d, s = _random_pairs(300, seed=6, decimals=2)
  folds = np.repeat([0, 1, 2], 100)
  thresholds = np.linspace(0.0, 4.0, 41)
  fpr, tpr = m.fold_roc_curves(d, s, folds, thresholds=thresholds)
  assert fpr.shape == tpr.shape == (3, 41)
  for k in range(3):
    sel = folds == k
    for j, t in enumerate(thresholds):
      tn, fp, fn, tp = skm.confusion_matrix(s[sel], d[sel] < t, labels=[False, True]).ravel()
      assert tpr[k, j] == tp / (tp + fn)
      assert fpr[k, j] == fp / (fp + tn)
  # Single-block helper agrees with confusion_matrix on all pairs too.
  pf, pt = m.roc_points(d, s, thresholds)
  for j, t in enumerate(thresholds):
    tn, fp, fn, tp = skm.confusion_matrix(s, d < t, labels=[False, True]).ravel()
    assert pt[j] == tp / (tp + fn) and pf[j] == fp / (fp + tn)


def test_accuracy_matches_accuracy_score_and_naive_protocol():
  d, s = _random_pairs(600, seed=7, decimals=2)
  folds = m.make_folds(600, 10)
  thresholds = m.DEFAULT_THRESHOLDS
  r = m.compute_accuracy_kfold(d, s, folds)
  for k in range(10):
    te, tr = folds == k, folds != k
    # Naive protocol: float accuracies per threshold on the train folds
    # (davidsandberg style), then sklearn's accuracy on the test fold.
    train_acc = [np.mean((d[tr] < t) == s[tr]) for t in thresholds]
    thr = thresholds[int(np.argmax(train_acc))]
    assert r.fold_thresholds[k] == thr
    assert r.fold_accuracies[k] == pytest.approx(skm.accuracy_score(s[te], d[te] < thr))
  assert r.accuracy_mean == pytest.approx(np.mean(r.fold_accuracies))
  assert r.accuracy_std == pytest.approx(np.std(r.fold_accuracies))
  all_acc = [np.mean((d < t) == s) for t in thresholds]
  assert r.best_threshold == thresholds[int(np.argmax(all_acc))]


def test_val_far_matches_naive_protocol():
  d, s = _random_pairs(1200, seed=8, sep=1.0)
  folds = m.make_folds(1200, 4)
  thresholds = np.linspace(0.0, 4.0, 4001)
  r = m.compute_val_far_kfold(d, s, folds, far_target=0.01)
  for k in range(4):
    te, tr = folds == k, folds != k
    far_tr = np.array([np.mean(d[tr & ~s] < t) for t in thresholds])
    ufar, inv = np.unique(far_tr, return_inverse=True)
    last = np.array([np.flatnonzero(inv == i)[-1] for i in range(ufar.size)])
    thr = float(interpolate.interp1d(ufar, thresholds[last], kind="slinear")(0.01))
    assert r.fold_thresholds[k] == pytest.approx(thr, abs=1e-12)
    assert r.fold_vals[k] == np.mean(d[te & s] < thr)
    assert r.fold_fars[k] == np.mean(d[te & ~s] < thr)


# ---------------------------------------------------------------------------
# EER.
# ---------------------------------------------------------------------------


def test_eer_analytic_curve():
  # tpr = sqrt(fpr): 1 - x = sqrt(x)  =>  x = (3 - sqrt(5)) / 2.
  x = np.linspace(0, 1, 20001)
  assert m.equal_error_rate(x, np.sqrt(x)) == pytest.approx((3 - math.sqrt(5)) / 2, abs=1e-6)


def test_eer_duplicate_fpr_keeps_max_tpr():
  # Points (0,0) (0,.5) (.5,.5) (.5,1) (1,1) -> dedup keeps (0,.5) (.5,1) (1,1).
  # On [0, .5]: roc(x) = .5 + x, so 1 - x - (.5 + x) = 0 -> x = .25.
  fpr = [0, 0, 0.5, 0.5, 1]
  tpr = [0, 0.5, 0.5, 1, 1]
  assert m.equal_error_rate(fpr, tpr) == pytest.approx(0.25)
  # Order of input points does not matter.
  assert m.equal_error_rate(fpr[::-1], tpr[::-1]) == pytest.approx(0.25)


def test_eer_curve_not_reaching_ends():
  # Only an interior point (0.2, 0.6): with (0,0) and (1,1) added,
  # on [0, .2] roc = 3x -> 1 - 4x = 0 at .25 (outside); on [.2, 1]
  # roc = .6 + .5 (x - .2) -> 1 - x - .5 - .5x = 0 -> x = 1/3.
  assert m.equal_error_rate([0.2], [0.6]) == pytest.approx(1 / 3)


def test_eer_symmetric_gaussians():
  # same ~ N(1, .3), diff ~ N(2, .3), symmetric about 1.5 -> the EER is at
  # threshold 1.5 and equals P(same >= 1.5) = Phi(-.5/.3).  Deterministic
  # quantile samples instead of random draws.
  n = 20000
  q = stats.norm.ppf((np.arange(n) + 0.5) / n)
  d = np.r_[1.0 + 0.3 * q, 2.0 + 0.3 * q]
  s = np.r_[np.ones(n, bool), np.zeros(n, bool)]
  rng = np.random.default_rng(0)
  perm = rng.permutation(2 * n)
  r = m.evaluate_verification(d[perm], s[perm], num_folds=10)
  expected = stats.norm.cdf(-0.5 / 0.3)  # ~0.0478
  # Fold sampling + linear interpolation on the 0.01 grid: ~1e-3.
  assert r.eer == pytest.approx(expected, abs=2e-3)
  # Threshold at the EER is the symmetric point 1.5 -> accuracy 1 - EER.
  assert r.best_threshold == pytest.approx(1.5, abs=0.02)
  assert r.accuracy_mean == pytest.approx(1 - expected, abs=5e-3)


# ---------------------------------------------------------------------------
# Folds, result object.
# ---------------------------------------------------------------------------


def test_num_folds_are_consecutive_blocks():
  d, s = _random_pairs(6000, seed=9)
  folds = np.repeat(np.arange(10), 600)
  np.testing.assert_array_equal(m.make_folds(6000, 10), folds)
  a = m.evaluate_verification(d, s, folds=folds)
  b = m.evaluate_verification(d, s, num_folds=10)
  assert a.to_dict() == b.to_dict()
  # Uneven split follows np.array_split sizes.
  np.testing.assert_array_equal(np.bincount(m.make_folds(23, 4)), [6, 6, 6, 5])
  # Arbitrary fold labels are remapped in sorted order.
  c = m.evaluate_verification(d, s, folds=folds * 7 + 3)
  assert c.to_dict() == a.to_dict()


def test_result_to_dict_and_summary():
  d, s = _random_pairs(1000, seed=10)
  r = m.evaluate_verification(d, s, num_folds=5, far_target=1e-2)
  out = r.to_dict()
  assert set(out) == {
      "accuracy_mean",
      "accuracy_std",
      "fold_accuracies",
      "fold_thresholds",
      "best_threshold",
      "val_mean",
      "val_std",
      "far_mean",
      "far_target",
      "fold_vals",
      "fold_fars",
      "auc",
      "eer",
      "roc_fpr",
      "roc_tpr",
      "thresholds",
  }
  json.loads(json.dumps(out))  # serialisable
  assert isinstance(out["fold_accuracies"], list) and len(out["fold_accuracies"]) == 5
  assert all(type(v) is float for v in out["roc_fpr"])
  assert type(out["auc"]) is float and len(out["thresholds"]) == 401
  assert out["thresholds"][-1] == 4.0
  line = r.summary()
  assert "\n" not in line and "acc" in line and "AUC" in line and "EER" in line
  with pytest.raises(Exception):
    r.auc = 0.0  # frozen
  with pytest.raises(ValueError):
    r.roc_fpr[0] = 1.0  # read-only arrays
  # Consistency with the individual functions.
  acc = m.compute_accuracy_kfold(d, s, None, num_folds=5)
  np.testing.assert_array_equal(acc.fold_accuracies, r.fold_accuracies)
  fpr, tpr = m.compute_roc_kfold(d, s, None, num_folds=5)
  np.testing.assert_array_equal(fpr, r.roc_fpr)
  assert r.eer == m.equal_error_rate(fpr, tpr)


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------


def test_validation_errors():
  d, s = _random_pairs(100, seed=11)
  with pytest.raises(ValueError, match="shape mismatch"):
    m.evaluate_verification(d, s[:-1])
  with pytest.raises(ValueError, match="shape mismatch"):
    m.compute_accuracy_kfold(d, s, np.zeros(99, int))
  with pytest.raises(ValueError, match="1-D"):
    m.evaluate_verification(d.reshape(10, 10), s)
  bad = d.copy()
  bad[17] = np.nan
  with pytest.raises(ValueError, match=r"NaN.*index 17"):
    m.evaluate_verification(bad, s)
  with pytest.raises(ValueError, match="at least 2 distinct folds"):
    m.compute_accuracy_kfold(d, s, np.zeros(100, int))
  with pytest.raises(ValueError, match="at least 2 folds"):
    m.evaluate_verification(d, s, num_folds=1)
  with pytest.raises(ValueError, match="strictly increasing"):
    m.compute_accuracy_kfold(d, s, None, thresholds=[0.0, 2.0, 1.0])
  with pytest.raises(ValueError, match="far_target"):
    m.compute_val_far_kfold(d, s, None, far_target=0.0)
  with pytest.raises(ValueError, match="0/1"):
    m.evaluate_verification(d, np.full(100, 2))
  # Fold 1 holds only same pairs -> VAL/FAR (and ROC) impossible ...
  s1 = np.r_[np.tile([True, False], 25), np.ones(50, bool)]
  f1 = np.repeat([0, 1], 50)
  with pytest.raises(ValueError, match=r"fold 1 has 50 same and 0 different.*VAL/FAR"):
    m.compute_val_far_kfold(d, s1, f1)
  with pytest.raises(ValueError, match="fold 1 has 50 same and 0 different"):
    m.evaluate_verification(d, s1, f1)
  with pytest.raises(ValueError, match="fold 1"):
    m.compute_roc_kfold(d, s1, f1)
  # ... but accuracy is still defined.
  assert 0 <= m.compute_accuracy_kfold(d, s1, f1).accuracy_mean <= 1
  with pytest.raises(ValueError, match="equal length"):
    m.equal_error_rate([0, 1], [0, 0.5, 1])


# ---------------------------------------------------------------------------
# Plotting.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("log_x", [False, True])
def test_plot_roc_writes_png(tmp_path, log_x):
  d1, s1 = _random_pairs(1000, seed=12, sep=1.0)
  d2, s2 = _random_pairs(1000, seed=13, sep=0.5)
  curves = {
      "model A": m.compute_roc_kfold(d1, s1, None),
      "model B": m.compute_roc_kfold(d2, s2, None),
  }
  path = tmp_path / "sub" / "roc.png"
  out = m.plot_roc(curves, path, title="LFW ROC", log_x=log_x)
  assert out == str(path)
  data = path.read_bytes()
  assert len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"
