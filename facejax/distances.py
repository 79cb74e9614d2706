"""Every distance facejax compares embeddings with: pairs, all pairs, thresholds.

Both distances are taken between L2-renormalised embeddings, so that a net's
raw output, a flip="average" sum and a mean-subtracted embedding are all
compared on the unit sphere:

  "euclidean": squared L2 of the unit vectors, |a - b|^2 = 2 - 2 cos, in [0, 4] (FaceNet);
  "cosine":    1 - cos, in [0, 2].

"Same identity" always means distance < threshold. Computed in float64: the
threshold search of the metrics sorts these values, and float32 round-off
would reorder near-ties between runs on different hardware.
"""

from __future__ import annotations

import numpy as np

DISTANCES = ("euclidean", "cosine")


def check_distance(distance: str) -> str:
  """`distance` if it is one of DISTANCES, else a ValueError naming it."""
  if distance not in DISTANCES:
    raise ValueError(f"distance={distance!r}: use one of {DISTANCES}")
  return distance


def l2_normalize(x: np.ndarray) -> np.ndarray:
  """[N, D] -> [N, D] float64 rows of unit L2 norm (a zero row stays zero)."""
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def pair_distances(emb_a: np.ndarray, emb_b: np.ndarray, distance: str) -> np.ndarray:
  """[N, D] x [N, D] -> [N] float64: the distance of row i of `emb_a` to row i of `emb_b`."""
  check_distance(distance)
  a, b = l2_normalize(emb_a), l2_normalize(emb_b)
  if distance == "euclidean":
    return np.sum(np.square(a - b), axis=-1)
  return 1.0 - np.sum(a * b, axis=-1)


def distance_matrix(emb_a: np.ndarray, emb_b: np.ndarray, distance: str) -> np.ndarray:
  """[N, D] x [M, D] -> [N, M] float64, every row of `emb_a` against every row of `emb_b`.

  Through the Gram matrix (one BLAS call); cos is clipped to [-1, 1] so that
  round-off never gives a negative distance.
  """
  check_distance(distance)
  cos = np.clip(l2_normalize(emb_a) @ l2_normalize(emb_b).T, -1.0, 1.0)
  if distance == "euclidean":
    return 2.0 - 2.0 * cos
  return 1.0 - cos


def convert_threshold(threshold: float, from_distance: str, to_distance: str) -> float:
  """The same operating point in another distance: |a - b|^2 = 2 (1 - cos) for unit vectors."""
  check_distance(from_distance)
  check_distance(to_distance)
  if from_distance == to_distance:
    return float(threshold)
  return float(threshold) * (0.5 if to_distance == "cosine" else 2.0)


def fold_distances(emb_a: np.ndarray, emb_b: np.ndarray, folds: np.ndarray, distance: str,
                   subtract_mean: bool) -> np.ndarray:
  """[N] pair distances, optionally after subtracting the other folds' mean embedding.

  With `subtract_mean`, the pairs of fold k are compared after removing the
  mean embedding of the pairs of the other folds (davidsandberg's option), so
  the test fold never informs its own centring.
  """
  if not subtract_mean:
    return pair_distances(emb_a, emb_b, distance)
  folds = np.asarray(folds)
  out = np.empty(len(folds), np.float64)
  for k in np.unique(folds):
    train = folds != k
    mean = np.concatenate([emb_a[train], emb_b[train]]).mean(0)
    test = folds == k
    out[test] = pair_distances(emb_a[test] - mean, emb_b[test] - mean, distance)
  return out
