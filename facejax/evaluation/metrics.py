"""Face-verification metrics for the LFW pair protocol (pure numpy/sklearn/scipy).

Everything here works on *distances* between the two embeddings of a pair,
where smaller means "more similar":

* squared L2 distance between unit-norm embeddings, in ``[0, 4]``;
* cosine distance ``1 - cos``, in ``[0, 2]``.

A pair is predicted "same identity" when ``distance < threshold`` (strict).

Protocol (LFW View 2, as popularised by FaceNet / davidsandberg's ``lfw.py``):

* **Folds.** Each pair carries a fold index (View 2: 10 folds of 600 pairs, in
  file order).  When no fold indices are given, ``num_folds`` consecutive,
  unshuffled blocks are used (``np.array_split`` sizes, i.e. the same split as
  ``sklearn.model_selection.KFold(shuffle=False)``).  Per-fold outputs are
  ordered by the sorted unique fold labels.
* **Accuracy.** For every test fold, the threshold with the best accuracy on
  the *other* folds is picked from a grid (default ``0, 0.01, ..., 4.0``;
  ties go to the smallest threshold, i.e. ``np.argmax``) and applied to the
  test fold.  Mean and population std (``ddof=0``) over folds are reported.
* **ROC / AUC / EER.** For every fold, TPR and FPR are measured on that fold
  at every grid threshold; the ROC curve is the mean of those per-fold curves
  and AUC is ``sklearn.metrics.auc`` of the mean curve.  The EER is the FPR at
  which ``FPR = 1 - TPR`` on that curve (see :func:`equal_error_rate`).
* **VAL@FAR.** For every test fold, the threshold reaching the target false
  accept rate on the other folds is found by linear interpolation of
  ``threshold(FAR)`` over a finer grid (default ``0, 0.001, ..., 4.0``); if the
  target FAR is never reached on the training folds the threshold is ``0.0``.
  VAL (= TPR) and FAR are then measured on the test fold.

All counting is done with exact integer counts (sorted distances and
``np.searchsorted``), so threshold ties are decided exactly, not by float
round-off of accuracies.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike
from scipy import interpolate, optimize
from sklearn import metrics as skm

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DEFAULT_VAL_THRESHOLDS",
    "AccuracyKFoldResult",
    "ValFarKFoldResult",
    "VerificationResult",
    "compute_accuracy_kfold",
    "compute_val_far_kfold",
    "compute_roc_kfold",
    "fold_roc_curves",
    "roc_points",
    "equal_error_rate",
    "evaluate_verification",
    "make_folds",
    "plot_roc",
]

# Grids are built with linspace so the end point 4.0 is included exactly and
# the values do not accumulate round-off (np.arange(0, 4, 0.01) would stop at
# 3.99).  They cover the squared-L2 range of unit embeddings, [0, 4], which
# also contains the cosine-distance range [0, 2].
DEFAULT_THRESHOLDS = np.linspace(0.0, 4.0, 401)  # step 0.01
DEFAULT_VAL_THRESHOLDS = np.linspace(0.0, 4.0, 4001)  # step 0.001
DEFAULT_FAR_TARGET = 1e-3


# --------------------------------------------------------------------------
# Input handling.
# --------------------------------------------------------------------------


def _as_distances(distances: ArrayLike) -> np.ndarray:
  d = np.asarray(distances)
  if d.ndim != 1:
    raise ValueError(f"distances must be a 1-D array [N], got shape {d.shape}")
  if d.size == 0:
    raise ValueError("distances is empty; need at least one pair")
  if not (np.issubdtype(d.dtype, np.floating) or np.issubdtype(d.dtype, np.integer)):
    raise ValueError(f"distances must be numeric, got dtype {d.dtype}")
  d = d.astype(np.float64)
  bad = ~np.isfinite(d)
  if bad.any():
    idx = np.flatnonzero(bad)
    raise ValueError(
        f"distances contain {idx.size} NaN/inf value(s) (first at index {idx[0]}: "
        f"{d[idx[0]]}); check the embeddings for NaNs before evaluating"
    )
  return d


def _as_issame(issame: ArrayLike, n: int) -> np.ndarray:
  s = np.asarray(issame)
  if s.ndim != 1:
    raise ValueError(f"issame must be a 1-D array [N], got shape {s.shape}")
  if s.shape[0] != n:
    raise ValueError(
        f"shape mismatch: distances has {n} pairs but issame has {s.shape[0]}"
    )
  if s.dtype != np.bool_:
    if not (np.issubdtype(s.dtype, np.integer) or np.issubdtype(s.dtype, np.floating)):
      raise ValueError(f"issame must be boolean (or 0/1), got dtype {s.dtype}")
    if not np.all((s == 0) | (s == 1)):
      raise ValueError("issame must be boolean (or contain only 0/1 values)")
    s = s.astype(bool)
  return s


def _as_thresholds(thresholds: ArrayLike | None, default: np.ndarray) -> np.ndarray:
  if thresholds is None:
    return default.copy()
  t = np.asarray(thresholds, dtype=np.float64)
  if t.ndim != 1 or t.size == 0:
    raise ValueError(f"thresholds must be a non-empty 1-D array, got shape {t.shape}")
  if not np.all(np.isfinite(t)):
    raise ValueError("thresholds must be finite")
  if t.size > 1 and not np.all(np.diff(t) > 0):
    raise ValueError("thresholds must be strictly increasing")
  return t


def make_folds(num_pairs: int, num_folds: int = 10) -> np.ndarray:
  """Fold index per pair for ``num_folds`` consecutive (unshuffled) blocks.

  Block sizes follow ``np.array_split`` (the first ``num_pairs % num_folds``
  folds get one extra pair), matching ``KFold(n_splits, shuffle=False)``.
  For LFW View 2 (6000 pairs, 10 folds) this is ``np.repeat(arange(10), 600)``.
  """
  num_folds = int(num_folds)
  if num_folds < 2:
    raise ValueError(f"need at least 2 folds for cross-validation, got num_folds={num_folds}")
  if num_pairs < num_folds:
    raise ValueError(f"cannot split {num_pairs} pairs into {num_folds} folds")
  sizes = [len(b) for b in np.array_split(np.arange(num_pairs), num_folds)]
  return np.repeat(np.arange(num_folds), sizes)


def _as_fold_ids(folds: ArrayLike | None, n: int, num_folds: int) -> np.ndarray:
  """Returns fold ids remapped to 0..K-1 (ordered by the sorted labels)."""
  if folds is None:
    return make_folds(n, num_folds)
  f = np.asarray(folds)
  if f.ndim != 1:
    raise ValueError(f"folds must be a 1-D array [N], got shape {f.shape}")
  if f.shape[0] != n:
    raise ValueError(f"shape mismatch: distances has {n} pairs but folds has {f.shape[0]}")
  if not np.issubdtype(f.dtype, np.integer):
    if np.issubdtype(f.dtype, np.floating) and np.all(np.isfinite(f)) and np.all(f == np.round(f)):
      f = f.astype(np.int64)
    else:
      raise ValueError(f"folds must hold integer fold indices, got dtype {f.dtype}")
  _, ids = np.unique(f, return_inverse=True)
  ids = ids.reshape(-1)
  if ids.max() + 1 < 2:
    raise ValueError(
        f"need at least 2 distinct folds for cross-validation, got {ids.max() + 1}"
    )
  return ids


class _FoldCounts:
  """Exact per-fold, per-threshold counts of predicted-same pairs.

  ``tp[k, t]`` = #same pairs of fold k with distance < thresholds[t];
  ``fp[k, t]`` = #different pairs of fold k with distance < thresholds[t].
  """

  def __init__(self, d: np.ndarray, s: np.ndarray, ids: np.ndarray, thresholds: np.ndarray):
    k = int(ids.max()) + 1
    self.num_folds = k
    self.thresholds = thresholds
    self.n_same = np.bincount(ids, weights=s, minlength=k).astype(np.int64)
    self.n_pairs = np.bincount(ids, minlength=k).astype(np.int64)
    self.n_diff = self.n_pairs - self.n_same
    self.tp = np.empty((k, thresholds.size), dtype=np.int64)
    self.fp = np.empty((k, thresholds.size), dtype=np.int64)
    for fold in range(k):
      m = ids == fold
      same_sorted = np.sort(d[m & s])
      diff_sorted = np.sort(d[m & ~s])
      # side="left" counts elements strictly below the threshold.
      self.tp[fold] = np.searchsorted(same_sorted, thresholds, side="left")
      self.fp[fold] = np.searchsorted(diff_sorted, thresholds, side="left")

  def correct(self) -> np.ndarray:
    """[K, T] number of correctly classified pairs per fold and threshold."""
    return self.tp + (self.n_diff[:, None] - self.fp)

  def require_both_classes(self, what: str) -> None:
    for fold in range(self.num_folds):
      if self.n_same[fold] == 0 or self.n_diff[fold] == 0:
        raise ValueError(
            f"fold {fold} has {self.n_same[fold]} same and {self.n_diff[fold]} "
            f"different pairs; {what} needs both in every fold"
        )


def _prepare(distances, issame, folds, num_folds, thresholds, default):
  d = _as_distances(distances)
  s = _as_issame(issame, d.size)
  ids = _as_fold_ids(folds, d.size, num_folds)
  t = _as_thresholds(thresholds, default)
  return d, s, ids, t


def _readonly(x) -> np.ndarray:
  a = np.array(x, dtype=np.float64, copy=True)
  a.setflags(write=False)
  return a


# --------------------------------------------------------------------------
# Accuracy.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class AccuracyKFoldResult:
  fold_accuracies: np.ndarray  # [K] test accuracy of each fold
  fold_thresholds: np.ndarray  # [K] threshold chosen on the other folds
  best_threshold: float  # best-accuracy threshold over all pairs
  accuracy_mean: float
  accuracy_std: float  # np.std, ddof=0


def _accuracy_from_counts(c: _FoldCounts) -> AccuracyKFoldResult:
  correct = c.correct()  # [K, T]
  total_correct = correct.sum(axis=0)
  k = c.num_folds
  accs = np.empty(k)
  thrs = np.empty(k)
  for fold in range(k):
    # Training accuracy = train_correct / n_train with a fixed n_train, so
    # argmax over integer counts is argmax over accuracy, ties exact and
    # resolved to the first (smallest) threshold.
    best = int(np.argmax(total_correct - correct[fold]))
    thrs[fold] = c.thresholds[best]
    accs[fold] = correct[fold, best] / c.n_pairs[fold]
  return AccuracyKFoldResult(
      fold_accuracies=_readonly(accs),
      fold_thresholds=_readonly(thrs),
      best_threshold=float(c.thresholds[int(np.argmax(total_correct))]),
      accuracy_mean=float(np.mean(accs)),
      accuracy_std=float(np.std(accs)),
  )


def compute_accuracy_kfold(
    distances: ArrayLike,
    issame: ArrayLike,
    folds: ArrayLike | None,
    thresholds: ArrayLike | None = None,
    *,
    num_folds: int = 10,
) -> AccuracyKFoldResult:
  """K-fold verification accuracy with the threshold tuned on the other folds.

  Args:
    distances: [N] pair distances (smaller = more similar).
    issame: [N] bool, True for same-identity pairs.
    folds: [N] int fold index per pair, or None for ``num_folds``
      consecutive blocks.
    thresholds: strictly increasing candidate thresholds; default
      ``DEFAULT_THRESHOLDS`` (0 to 4 step 0.01).
    num_folds: used only when ``folds`` is None.
  """
  d, s, ids, t = _prepare(distances, issame, folds, num_folds, thresholds, DEFAULT_THRESHOLDS)
  return _accuracy_from_counts(_FoldCounts(d, s, ids, t))


# --------------------------------------------------------------------------
# ROC, AUC, EER.
# --------------------------------------------------------------------------


def _rates(c: _FoldCounts) -> tuple[np.ndarray, np.ndarray]:
  c.require_both_classes("ROC (TPR/FPR)")
  tpr = c.tp / c.n_same[:, None]
  fpr = c.fp / c.n_diff[:, None]
  return fpr, tpr


def fold_roc_curves(
    distances: ArrayLike,
    issame: ArrayLike,
    folds: ArrayLike | None,
    thresholds: ArrayLike | None = None,
    *,
    num_folds: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
  """Per-fold test ROC curves: ``(fpr [K, T], tpr [K, T])``.

  ``tpr[k, t]`` is TP/(TP+FN) and ``fpr[k, t]`` is FP/(FP+TN) measured on
  fold k alone at ``thresholds[t]``.  Raises ValueError if a fold lacks
  same or different pairs.
  """
  d, s, ids, t = _prepare(distances, issame, folds, num_folds, thresholds, DEFAULT_THRESHOLDS)
  return _rates(_FoldCounts(d, s, ids, t))


def compute_roc_kfold(
    distances: ArrayLike,
    issame: ArrayLike,
    folds: ArrayLike | None,
    thresholds: ArrayLike | None = None,
    *,
    num_folds: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
  """Fold-mean ROC curve ``(fpr [T], tpr [T])`` over the threshold grid.

  The mean over folds of the per-fold test curves (davidsandberg style).
  Both arrays are non-decreasing along the (increasing) threshold grid.
  Note the curve only spans the operating points the grid reaches: with
  the default grid and distances in [0, 4) it runs from (0, 0) to (1, 1).
  """
  fpr, tpr = fold_roc_curves(distances, issame, folds, thresholds, num_folds=num_folds)
  return fpr.mean(axis=0), tpr.mean(axis=0)


def roc_points(
    distances: ArrayLike, issame: ArrayLike, thresholds: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Single-block ``(fpr [T], tpr [T])`` over all pairs, no folds.

  Prediction rule ``distance < threshold``.  Passing midpoints between the
  sorted unique distances (plus one value below the minimum and one above
  the maximum) reproduces ``sklearn.metrics.roc_curve(issame, -distances,
  drop_intermediate=False)`` exactly.
  """
  d = _as_distances(distances)
  s = _as_issame(issame, d.size)
  t = _as_thresholds(thresholds, DEFAULT_THRESHOLDS)
  c = _FoldCounts(d, s, np.zeros(d.size, dtype=np.int64), t)
  fpr, tpr = _rates(c)
  return fpr[0], tpr[0]


def equal_error_rate(fpr: ArrayLike, tpr: ArrayLike) -> float:
  """Equal error rate: the FPR at which FPR = FNR = 1 - TPR.

  Solves ``1 - x - roc(x) = 0`` on [0, 1] with ``scipy.optimize.brentq``,
  where ``roc`` is ``interp1d`` (linear) through the ROC points.

  ``interp1d`` needs unique, increasing x, so the points are cleaned first:

  * sorted by FPR;
  * for duplicated FPR values (vertical steps of the ROC) the LARGEST TPR is
    kept, i.e. the best operating point at that FPR.  The interpolant then
    cuts the corner of a vertical step, so when the FPR = 1 - TPR line
    crosses the curve on such a step the EER comes out slightly below that
    step's FPR (e.g. ~0.993 instead of 1 for perfectly reversed data with
    ~150 different pairs per fold);
  * the trivial operating points (0, 0) and (1, 1) (reject all / accept all)
    are added, so the interpolant is defined on all of [0, 1] even when the
    threshold grid does not reach the curve's ends.

  With those end points ``f(0) = 1 - roc(0) >= 0`` and ``f(1) = -1 < 0``,
  so brentq always has a bracket; ``f(0) == 0`` (perfect separation) gives
  an EER of exactly 0.  Should brentq still fail (it cannot for finite
  input, but defensively), the EER falls back to the FPR of the input point
  closest to the line ``FPR = 1 - TPR``.
  """
  x = np.asarray(fpr, dtype=np.float64).reshape(-1)
  y = np.asarray(tpr, dtype=np.float64).reshape(-1)
  if x.shape != y.shape or x.size == 0:
    raise ValueError(
        f"fpr and tpr must be non-empty and of equal length, got {x.shape} and {y.shape}")
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise ValueError("fpr/tpr contain NaN or inf")
  if x.min() < 0 or x.max() > 1 or y.min() < 0 or y.max() > 1:
    raise ValueError("fpr/tpr must lie in [0, 1]")

  xa = np.concatenate([[0.0], x, [1.0]])
  ya = np.concatenate([[0.0], y, [1.0]])
  ux, inverse = np.unique(xa, return_inverse=True)
  uy = np.full(ux.shape, -np.inf)
  np.maximum.at(uy, inverse.reshape(-1), ya)

  roc = interpolate.interp1d(ux, uy, kind="linear", assume_sorted=True)
  try:
    return float(optimize.brentq(lambda v: 1.0 - v - float(roc(v)), 0.0, 1.0))
  except ValueError:  # pragma: no cover - defensive, see docstring
    i = int(np.argmin(np.abs(1.0 - x - y)))
    return float(x[i])


# --------------------------------------------------------------------------
# VAL @ FAR.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class ValFarKFoldResult:
  fold_vals: np.ndarray  # [K] VAL (= TPR) on each test fold
  fold_fars: np.ndarray  # [K] measured FAR on each test fold
  fold_thresholds: np.ndarray  # [K] threshold interpolated on the other folds
  val_mean: float
  val_std: float  # np.std, ddof=0
  far_mean: float
  far_target: float


def _threshold_for_far(
    fp_train: np.ndarray, n_diff_train: int, thresholds: np.ndarray, far_target: float
) -> float:
  """Threshold reaching ``far_target`` on training pairs (see module doc).

  FAR(threshold) is a non-decreasing step function of the grid, so
  ``interp1d`` needs its duplicate FAR values collapsed.  Each unique FAR
  keeps the LAST (largest) threshold that still has that FAR, i.e. the end
  of its plateau, just before the next false accept is let in.

  Why LAST rather than FIRST: with FIRST, the FAR = 0 plateau is anchored at
  the grid start (threshold 0) however far the first different pair is, so
  a target below one false accept (e.g. FAR 1e-4 with 2700 training
  different pairs) interpolates towards 0 and VAL collapses.  With LAST the
  threshold for a target between levels ``u_i < target < u_{i+1}`` lies
  between the ends of those plateaus, so the training FAR at the chosen
  threshold is ``u_i`` or ``u_{i+1}``: it may exceed the target by at most
  one FAR level (one false accept when distances are untied).
  """
  far = fp_train / n_diff_train
  if far.max() < far_target:
    return 0.0
  # np.unique gives first occurrences; on the reversed array these are the
  # last occurrences in grid order.
  ufar, first_rev = np.unique(far[::-1], return_index=True)
  uthr = thresholds[far.size - 1 - first_rev]
  if far_target < ufar[0]:
    # Only reachable with a grid whose first threshold already has a
    # positive FAR (custom grids / negative distances): use its start.
    return float(thresholds[0])
  if ufar.size == 1:  # far_target == ufar[0], a single plateau.
    return float(uthr[0])
  # Here ufar[0] <= far_target <= ufar[-1] with at least two points.
  f = interpolate.interp1d(ufar, uthr, kind="slinear", assume_sorted=True)
  return float(f(far_target))


def _val_far_from_counts(
    d: np.ndarray, s: np.ndarray, ids: np.ndarray, c: _FoldCounts, far_target: float
) -> ValFarKFoldResult:
  c.require_both_classes("VAL/FAR")
  fp_total = c.fp.sum(axis=0)
  n_diff_total = int(c.n_diff.sum())
  k = c.num_folds
  vals, fars, thrs = np.empty(k), np.empty(k), np.empty(k)
  for fold in range(k):
    thr = _threshold_for_far(
        fp_total - c.fp[fold], n_diff_total - int(c.n_diff[fold]), c.thresholds, far_target
    )
    m = ids == fold
    pred = d[m] < thr
    same = s[m]
    thrs[fold] = thr
    vals[fold] = np.count_nonzero(pred & same) / c.n_same[fold]
    fars[fold] = np.count_nonzero(pred & ~same) / c.n_diff[fold]
  return ValFarKFoldResult(
      fold_vals=_readonly(vals),
      fold_fars=_readonly(fars),
      fold_thresholds=_readonly(thrs),
      val_mean=float(np.mean(vals)),
      val_std=float(np.std(vals)),
      far_mean=float(np.mean(fars)),
      far_target=float(far_target),
  )


def _check_far_target(far_target: float) -> float:
  far_target = float(far_target)
  if not (0.0 < far_target <= 1.0):
    raise ValueError(f"far_target must be in (0, 1], got {far_target}")
  return far_target


def compute_val_far_kfold(
    distances: ArrayLike,
    issame: ArrayLike,
    folds: ArrayLike | None,
    far_target: float = DEFAULT_FAR_TARGET,
    thresholds: ArrayLike | None = None,
    *,
    num_folds: int = 10,
) -> ValFarKFoldResult:
  """VAL (validation rate = TPR) at a target FAR, k-fold.

  For each test fold the threshold is interpolated on the other folds
  (``interp1d(FAR_train, thresholds, kind='slinear')(far_target)``, duplicate
  FARs collapsed to their LAST/largest threshold, see
  ``_threshold_for_far``), or 0.0 when the
  training FAR never reaches the target.  VAL = TA/n_same and FAR =
  FA/n_diff are then measured on the test fold (TA/FA = same/different
  pairs with distance < threshold).

  Args:
    thresholds: strictly increasing grid; default ``DEFAULT_VAL_THRESHOLDS``
      (0 to 4 step 0.001).
  """
  far_target = _check_far_target(far_target)
  d, s, ids, t = _prepare(distances, issame, folds, num_folds, thresholds, DEFAULT_VAL_THRESHOLDS)
  return _val_far_from_counts(d, s, ids, _FoldCounts(d, s, ids, t), far_target)


# --------------------------------------------------------------------------
# Everything together.
# --------------------------------------------------------------------------


def _to_py(v):
  if isinstance(v, np.ndarray):
    return v.tolist()
  if isinstance(v, (np.floating, float)):
    return float(v)
  if isinstance(v, (np.integer, int)):
    return int(v)
  return v


@dataclasses.dataclass(frozen=True, eq=False)
class VerificationResult:
  """All LFW-protocol numbers for one set of pair distances.

  Array fields are read-only float64 numpy arrays.
  """

  accuracy_mean: float
  accuracy_std: float
  fold_accuracies: np.ndarray  # [K]
  fold_thresholds: np.ndarray  # [K] accuracy thresholds chosen on the other folds
  best_threshold: float  # best-accuracy threshold over all pairs
  val_mean: float
  val_std: float
  far_mean: float
  far_target: float
  fold_vals: np.ndarray  # [K]
  fold_fars: np.ndarray  # [K]
  auc: float
  eer: float
  roc_fpr: np.ndarray  # [T] fold-mean ROC over `thresholds`
  roc_tpr: np.ndarray  # [T]
  thresholds: np.ndarray  # [T] accuracy/ROC threshold grid

  def to_dict(self) -> dict:
    """JSON-serialisable dict (Python floats and lists of floats)."""
    return {f.name: _to_py(getattr(self, f.name)) for f in dataclasses.fields(self)}

  def summary(self) -> str:
    return (
        f"acc {self.accuracy_mean:.4f}±{self.accuracy_std:.4f} | "
        f"VAL {self.val_mean:.4f}±{self.val_std:.4f} @ FAR {self.far_target:g} "
        f"(measured {self.far_mean:.5f}) | AUC {self.auc:.4f} | EER {self.eer:.4f} | "
        f"thr {self.best_threshold:.2f}"
    )


def evaluate_verification(
    distances: ArrayLike,
    issame: ArrayLike,
    folds: ArrayLike | None = None,
    num_folds: int = 10,
    far_target: float = DEFAULT_FAR_TARGET,
    *,
    thresholds: ArrayLike | None = None,
    val_thresholds: ArrayLike | None = None,
    test_folds: ArrayLike | None = None,
) -> VerificationResult:
  """Accuracy, VAL@FAR, ROC, AUC and EER under the LFW k-fold protocol.

  With ``test_folds``, only those folds are reported (a train/test protocol):
  each is still scored with the thresholds chosen on all the other folds, and
  the ROC, AUC and EER are those of the test folds alone. LFW View 1 is
  ``folds`` 0 for the DevTest pairs and 1 for the DevTrain pairs with
  ``test_folds=(0,)``: the threshold is chosen on DevTrain and applied once to
  DevTest.

  Args:
    distances: [N] pair distances (smaller = more similar).
    issame: [N] bool.
    folds: [N] int fold index per pair (e.g. LFW View 2 fold of each pair),
      or None for ``num_folds`` consecutive blocks.
    num_folds: only used when ``folds`` is None.
    far_target: target FAR for VAL.
    thresholds: accuracy/ROC grid (default 0..4 step 0.01).
    val_thresholds: VAL grid (default 0..4 step 0.001).
  """
  far_target = _check_far_target(far_target)
  d, s, ids, t = _prepare(distances, issame, folds, num_folds, thresholds, DEFAULT_THRESHOLDS)
  tv = _as_thresholds(val_thresholds, DEFAULT_VAL_THRESHOLDS)

  counts = _FoldCounts(d, s, ids, t)
  counts.require_both_classes("verification (ROC and VAL/FAR)")
  acc = _accuracy_from_counts(counts)
  fprs, tprs = _rates(counts)
  val = _val_far_from_counts(d, s, ids, _FoldCounts(d, s, ids, tv), far_target)
  if test_folds is not None:
    keep = np.asarray(test_folds, np.int64).reshape(-1)
    if keep.size == 0 or keep.min() < 0 or keep.max() >= counts.num_folds:
      raise ValueError(f"test_folds {keep.tolist()} must name folds 0..{counts.num_folds - 1}")
    fprs, tprs = fprs[keep], tprs[keep]
    acc = AccuracyKFoldResult(
        fold_accuracies=_readonly(acc.fold_accuracies[keep]),
        fold_thresholds=_readonly(acc.fold_thresholds[keep]),
        best_threshold=float(acc.fold_thresholds[keep[0]]),
        accuracy_mean=float(np.mean(acc.fold_accuracies[keep])),
        accuracy_std=float(np.std(acc.fold_accuracies[keep])))
    val = ValFarKFoldResult(
        fold_vals=_readonly(val.fold_vals[keep]), fold_fars=_readonly(val.fold_fars[keep]),
        fold_thresholds=_readonly(val.fold_thresholds[keep]),
        val_mean=float(np.mean(val.fold_vals[keep])), val_std=float(np.std(val.fold_vals[keep])),
        far_mean=float(np.mean(val.fold_fars[keep])), far_target=val.far_target)
  roc_fpr, roc_tpr = fprs.mean(axis=0), tprs.mean(axis=0)

  return VerificationResult(
      accuracy_mean=acc.accuracy_mean,
      accuracy_std=acc.accuracy_std,
      fold_accuracies=acc.fold_accuracies,
      fold_thresholds=acc.fold_thresholds,
      best_threshold=acc.best_threshold,
      val_mean=val.val_mean,
      val_std=val.val_std,
      far_mean=val.far_mean,
      far_target=val.far_target,
      fold_vals=val.fold_vals,
      fold_fars=val.fold_fars,
      auc=float(skm.auc(roc_fpr, roc_tpr)),
      eer=equal_error_rate(roc_fpr, roc_tpr),
      roc_fpr=_readonly(roc_fpr),
      roc_tpr=_readonly(roc_tpr),
      thresholds=_readonly(t),
  )


# --------------------------------------------------------------------------
# Plotting.
# --------------------------------------------------------------------------


def plot_roc(
    curves: Mapping[str, tuple[ArrayLike, ArrayLike]],
    path: str | os.PathLike,
    title: str | None = None,
    *,
    log_x: bool = False,
    min_fpr: float = 1e-4,
    legend_below: bool = False,
    show_auc: bool = True,
) -> str:
  """Saves overlaid ROC curves to a PNG and returns the path.

  Args:
    curves: ``{label: (fpr, tpr)}``; each curve is drawn with its AUC
      (``sklearn.metrics.auc``, so fpr must be monotonic) in the legend.
    path: output file; parent directories are created.
    title: optional axes title.
    log_x: log-scale FPR axis (zero FPRs are clipped to the left edge,
      ``min_fpr`` or the smallest positive FPR, whichever is smaller).
    legend_below: put the legend under the axes (a taller figure), so that
      many long labels never hide a curve.
    show_auc: append "(AUC=...)" to each label.

  matplotlib is imported lazily and the figure is rendered on an Agg canvas
  directly (no pyplot, no global backend switch), so this works headless
  and leaks no figures.
  """
  if not curves:
    raise ValueError("plot_roc needs at least one curve")
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(6.5, 5.2 + 0.25 * len(curves)) if legend_below else (6, 5), dpi=120)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  smallest_pos = math.inf
  for label, (fpr, tpr) in curves.items():
    x = np.asarray(fpr, dtype=np.float64).reshape(-1)
    y = np.asarray(tpr, dtype=np.float64).reshape(-1)
    if x.shape != y.shape or x.size < 2:
      raise ValueError(f"curve {label!r}: fpr/tpr must have equal length >= 2")
    area = skm.auc(x, y)
    if np.any(x > 0):
      smallest_pos = min(smallest_pos, float(x[x > 0].min()))
    ax.plot(x, y, lw=1.5, label=f"{label} (AUC={area:.4f})" if show_auc else label)
  if log_x:
    lo = min(min_fpr, smallest_pos)
    ax.set_xscale("log", nonpositive="clip")
    ax.set_xlim(lo, 1.0)
    chance = np.logspace(math.log10(lo), 0.0, 200)  # y = x is curved on log-x
    ax.plot(chance, chance, ls=":", c="gray", lw=1)
  else:
    ax.set_xlim(0.0, 1.0)
    ax.plot([0.0, 1.0], [0.0, 1.0], ls=":", c="gray", lw=1)
  ax.set_ylim(0.0, 1.005)
  ax.set_xlabel("False positive rate (FAR)")
  ax.set_ylabel("True positive rate (VAL)")
  if title:
    ax.set_title(title)
  ax.grid(True, which="both", alpha=0.3)
  if legend_below:
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False)
  else:
    ax.legend(loc="lower right")
  fig.tight_layout()
  from etils import epath  # local files and buckets (gs://) alike

  out = epath.Path(os.fspath(path))
  out.parent.mkdir(parents=True, exist_ok=True)
  with out.open("wb") as f:
    fig.savefig(f, format="png")
  return os.fspath(path)
