"""Groups faces by person: agglomerative (average linkage) or DBSCAN on embedding distances.

Both run on the precomputed [N, N] distance matrix in the calibration's
distance (squared L2 of unit vectors, or 1 - cos), so the LFW threshold
carries over unchanged: average linkage stops merging when the mean
distance between two clusters reaches the threshold; DBSCAN uses it as
`eps` (neighbours at distance <= eps). Memory is O(N^2): a few thousand
faces at a time.

With labels (an identity folder) the clustering is scored by pairwise
precision / recall / F (a pair of faces is a positive when both are in one
cluster; it is correct when both are one person), counted from the
clusters x identities contingency table in O(clusters x identities), and by
NMI. DBSCAN's noise points count as clusters of their own.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
from typing import Sequence

import numpy as np
from sklearn import cluster as sk_cluster
from sklearn.metrics import cluster as sk_metrics

from facejax import errors
from facejax.distances import distance_matrix
from facejax.tools.common import (UNKNOWN, Calibration, OutputExistsError, format_no_face,
                                  format_skipped)

METHODS = ("agglomerative", "dbscan")
NOISE = -1


def _pairs(n: np.ndarray) -> float:
  n = np.asarray(n, np.float64)
  return float(np.sum(n * (n - 1) / 2))


def pairwise_prf(labels_true: Sequence, labels_pred: Sequence) -> tuple[float, float, float]:
  """Pairwise (precision, recall, F1) of a clustering against identities.

  From the contingency table n[i, j] (faces of cluster i and identity j):
  true positives = sum C(n_ij, 2); predicted positives = sum_i C(a_i, 2)
  with a_i the cluster sizes; actual positives = sum_j C(b_j, 2). A rate
  with an empty denominator is 1 (nothing claimed, nothing missed).
  """
  table = sk_metrics.contingency_matrix(labels_true, labels_pred, sparse=True)
  tp = _pairs(table.data)
  actual = _pairs(np.asarray(table.sum(axis=1)).ravel())
  predicted = _pairs(np.asarray(table.sum(axis=0)).ravel())
  precision = tp / predicted if predicted else 1.0
  recall = tp / actual if actual else 1.0
  f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return precision, recall, f


def noise_as_singletons(labels: np.ndarray) -> np.ndarray:
  """Cluster ids [N] with every NOISE point given a cluster of its own."""
  labels = np.asarray(labels).copy()
  noise = labels == NOISE
  labels[noise] = labels.max(initial=-1) + 1 + np.arange(noise.sum())
  return labels


def cluster_embeddings(embeddings: np.ndarray, calibration: Calibration, *,
                       method: str = "agglomerative", min_samples: int = 3) -> np.ndarray:
  """[N, D] -> cluster id [N] int (0 = the largest cluster; NOISE = -1 for DBSCAN noise)."""
  if method not in METHODS:
    raise errors.ConfigError(f"method={method!r}: use one of {METHODS}")
  n = len(embeddings)
  if n == 0:
    raise errors.DataError("nothing to cluster: no embeddings")
  if n == 1:
    return np.zeros(1, np.int64)
  d = distance_matrix(embeddings, embeddings, calibration.distance)
  np.fill_diagonal(d, 0.0)
  if method == "agglomerative":
    labels = sk_cluster.AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average",
        distance_threshold=calibration.threshold).fit_predict(d)
  else:
    labels = sk_cluster.DBSCAN(eps=calibration.threshold, min_samples=min_samples,
                               metric="precomputed").fit_predict(d)
  # Renumber by size (largest first) so ids mean something to a reader.
  ids, counts = np.unique(labels[labels != NOISE], return_counts=True)
  order = ids[np.lexsort((ids, -counts))]
  remap = {old: new for new, old in enumerate(order.tolist())}
  return np.array([remap.get(int(x), NOISE) for x in labels], np.int64)


@dataclasses.dataclass
class ClusterResult:
  paths: list[str]
  labels: list[str]  # identities ("" unknown)
  clusters: np.ndarray  # [N] int, NOISE = -1
  method: str
  calibration: Calibration
  min_samples: int | None = None
  precision: float | None = None
  recall: float | None = None
  f_score: float | None = None
  nmi: float | None = None
  csv_path: str | None = None
  link_dir: str | None = None
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)
  no_face: list[str] = dataclasses.field(default_factory=list)  # aligned: fallback crop used

  @property
  def num_clusters(self) -> int:
    return len(set(self.clusters.tolist()) - {NOISE})

  def summary(self) -> str:
    noise = int(np.sum(self.clusters == NOISE))
    how = (f"{self.method}" + (f" (min_samples {self.min_samples})" if self.method == "dbscan"
                               else " (average linkage)"))
    sizes = collections.Counter(self.clusters.tolist())
    sizes.pop(NOISE, None)
    lines = [f"{how}: {len(self.paths)} faces -> {self.num_clusters} clusters"
             + (f" + {noise} noise" if self.method == "dbscan" else "")
             + f" (largest: {sorted(sizes.values(), reverse=True)[:5]})",
             f"threshold source: {self.calibration.describe()}"]
    if self.precision is not None:
      n_ids = len(set(self.labels))
      lines.append(f"against {n_ids} identities: pairwise precision {self.precision:.4f}, "
                   f"recall {self.recall:.4f}, F {self.f_score:.4f}; NMI {self.nmi:.4f}")
    if self.csv_path:
      lines.append(f"wrote {self.csv_path}")
    if self.link_dir:
      lines.append(f"linked clusters under {self.link_dir}")
    if self.no_face:
      lines.append(format_no_face(self.no_face))
    if self.skipped:
      lines.append(format_skipped(self.skipped))
    return "\n".join(lines)


def cluster(paths: Sequence[str], labels: Sequence[str], embeddings: np.ndarray,
            calibration: Calibration, *, method: str = "agglomerative", min_samples: int = 3,
            skipped: dict[str, str] | None = None,
            no_face: Sequence[str] = ()) -> ClusterResult:
  """Clusters embedded faces; scored against `labels` when every face has one."""
  clusters = cluster_embeddings(embeddings, calibration, method=method, min_samples=min_samples)
  result = ClusterResult(list(paths), list(labels), clusters, method, calibration,
                         min_samples=min_samples if method == "dbscan" else None,
                         skipped=dict(skipped or {}), no_face=list(no_face))
  if labels and all(label != UNKNOWN for label in labels):
    scored = noise_as_singletons(clusters)
    result.precision, result.recall, result.f_score = pairwise_prf(labels, scored)
    result.nmi = float(sk_metrics.normalized_mutual_info_score(labels, scored))
  return result


def write_csv(result: ClusterResult, path: str | os.PathLike) -> str:
  """path, cluster (-1 = noise), label."""
  path = os.fspath(path)
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["path", "cluster", "label"])
    for p, c, label in zip(result.paths, result.clusters.tolist(), result.labels):
      w.writerow([p, c, label])
  result.csv_path = path
  return path


def link_clusters(result: ClusterResult, link_dir: str | os.PathLike) -> str:
  """Symlinks each face into `<link_dir>/cluster_<id>/` (noise into `noise/`).

  Refuses a non-empty `link_dir`, so two runs never mix.
  """
  link_dir = os.fspath(link_dir)
  if os.path.isdir(link_dir) and os.listdir(link_dir):
    raise OutputExistsError(f"--link_dir {link_dir} is not empty: choose a new folder")
  width = max(3, len(str(max(result.num_clusters - 1, 0))))
  used: set[str] = set()
  for i, (path, c) in enumerate(zip(result.paths, result.clusters.tolist())):
    folder = os.path.join(link_dir, "noise" if c == NOISE else f"cluster_{c:0{width}d}")
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    if os.path.join(folder, name) in used:  # same file name from two folders
      name = f"{i:06d}_{name}"
    used.add(os.path.join(folder, name))
    os.symlink(os.path.abspath(path), os.path.join(folder, name))
  result.link_dir = link_dir
  return link_dir
