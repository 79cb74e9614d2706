"""Who is this? Nearest-neighbour identification against a gallery, closed- and open-set.

Scoring: a probe's distance to an identity is its distance to the NEAREST
gallery image of that identity (min over the identity's images); identities
are ranked by that distance (ties: the identity that sorts first). The top-1
identity is reported as the answer when its distance is below the threshold
(the LFW-calibrated one by default), "unknown" otherwise.

Metrics on labelled probes (Grother & Ngan, NIST FRVT 1:N; Liao et al. 2014,
"A benchmark study of large-scale unconstrained face recognition" (BLUFR);
the IJB-C 1:N open-set protocol). Probes whose identity is in the gallery
are "known" (mated), the others "unknown" (non-mated):
  * rank-k accuracy (closed set, CMC): the fraction of known probes whose
    true identity is among the k nearest identities;
  * FAR(t): the fraction of unknown probes whose nearest identity is at
    distance < t (a false alarm: an impostor is accepted as someone);
  * DIR(t), detection and identification rate: the fraction of known probes
    whose true identity is rank 1 AND at distance < t;
  * DIR@FAR=f: DIR at the largest threshold whose FAR on the unknown probes
    is <= f, i.e. t = the (floor(f * n_unknown) + 1)-th smallest
    nearest-identity distance of the unknown probes (+inf when f admits
    them all); the FAR reached is reported with it.
The "< t" rule is the same as the LFW verification metrics', so the
calibrated threshold means the same thing here.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import Sequence

import numpy as np

from facejax import errors
from facejax.distances import distance_matrix
from facejax.tools.common import (UNKNOWN, Calibration, FaceModel, ImageList, format_no_face,
                                  format_skipped)

UNKNOWN_ANSWER = "unknown"


# --- the open-set split -------------------------------------------------------------------------

@dataclasses.dataclass
class OpenSetSplit:
  """A seeded gallery / probe split of one identity folder (see `open_set_split`)."""
  gallery: ImageList
  probes: ImageList
  known: list[str]  # identities in the gallery
  unknown: list[str]  # identities held out of the gallery; their images are unknown probes
  seed: int

  def summary(self) -> str:
    n_known = sum(label in set(self.known) for label in self.probes.labels)
    return (f"open-set split (seed {self.seed}): gallery {len(self.gallery)} images of "
            f"{len(self.known)} identities; probes {n_known} known + "
            f"{len(self.probes) - n_known} unknown ({len(self.unknown)} held-out identities)")


def open_set_split(images: ImageList, *, unknown_fraction: float = 0.2,
                   gallery_per_identity: int = 1, seed: int = 0) -> OpenSetSplit:
  """Splits a labelled `ImageList` (e.g. an identity folder) for open-set identification.

  Protocol (BLUFR / IJB-C style, seeded so it is the same on every machine):
    1. Identities with at least `gallery_per_identity + 1` images take part
       (each known identity needs a gallery image and a probe); the others
       are dropped.
    2. A seeded permutation of those identities (sorted by name first) puts
       round(unknown_fraction * C) of them out of the gallery: ALL their
       images become unknown probes, so the gallery never saw them.
    3. Each remaining (known) identity gives `gallery_per_identity` images,
       chosen by the same generator, to the gallery; its other images are
       known probes.
  """
  if not images.labelled:
    raise errors.DataError(f"{images.source}: an open-set split needs an identity folder "
                           f"(every image labelled by its subfolder)")
  if not 0 <= unknown_fraction < 1:
    raise errors.ConfigError(f"unknown_fraction={unknown_fraction}: must be in [0, 1)")
  if gallery_per_identity < 1:
    raise errors.ConfigError(f"gallery_per_identity={gallery_per_identity}: must be >= 1")
  by_identity: dict[str, list[str]] = {}
  for path, label in zip(images.paths, images.labels):
    by_identity.setdefault(label, []).append(path)
  names = sorted(n for n, paths in by_identity.items() if len(paths) > gallery_per_identity)
  if len(names) < 2:
    raise errors.DataError(f"{images.source}: {len(names)} identities have more than "
                           f"{gallery_per_identity} image(s); an open-set split needs at least 2")
  rng = np.random.default_rng(seed)
  order = [names[i] for i in rng.permutation(len(names))]
  n_unknown = min(int(round(unknown_fraction * len(names))), len(names) - 1)
  unknown, known = sorted(order[:n_unknown]), sorted(order[n_unknown:])
  g_paths, g_labels, p_paths, p_labels = [], [], [], []
  for name in known:
    paths = by_identity[name]
    in_gallery = set(rng.choice(len(paths), gallery_per_identity, replace=False).tolist())
    for i, path in enumerate(paths):
      (g_paths if i in in_gallery else p_paths).append(path)
      (g_labels if i in in_gallery else p_labels).append(name)
  for name in unknown:
    p_paths += by_identity[name]
    p_labels += [name] * len(by_identity[name])
  return OpenSetSplit(ImageList(g_paths, g_labels, f"{images.source} (gallery)"),
                      ImageList(p_paths, p_labels, f"{images.source} (probes)"),
                      known, unknown, seed)


# --- scores and metrics -------------------------------------------------------------------------

def identity_distances(probe_emb: np.ndarray, gallery_emb: np.ndarray, gallery_class: np.ndarray,
                       num_classes: int, distance: str, chunk_size: int = 2048) -> np.ndarray:
  """[P, D] probes x [G, D] gallery (identity index [G] int) -> [P, C] float64.

  Entry (p, c) is the distance from probe p to the nearest gallery image of
  identity c (+inf for an identity without gallery images). Probes are done
  in chunks so memory stays at chunk_size x G.
  """
  gallery_class = np.asarray(gallery_class)
  order = np.argsort(gallery_class, kind="stable")
  sorted_class = gallery_class[order]
  present, starts = np.unique(sorted_class, return_index=True)
  out = np.full((len(probe_emb), num_classes), np.inf)
  for start in range(0, len(probe_emb), chunk_size):
    d = distance_matrix(probe_emb[start:start + chunk_size], gallery_emb[order], distance)
    # Gallery rows are grouped by identity, so reduceat takes each group's min.
    out[start:start + chunk_size, present] = np.minimum.reduceat(d, starts, axis=1)
  return out


def rank_of_true(class_dist: np.ndarray, true_class: np.ndarray) -> np.ndarray:
  """[P, C] distances, [P] true identity index (>= 0) -> [P] int, 0 = nearest.

  The position of the true identity in the stable ascending order of its row
  (identities at an equal distance that sort first rank before it).
  """
  rows = np.arange(len(true_class))
  d_true = class_dist[rows, true_class][:, None]
  cols = np.arange(class_dist.shape[1])[None, :]
  return (np.sum(class_dist < d_true, axis=1)
          + np.sum((class_dist == d_true) & (cols < true_class[:, None]), axis=1))


@dataclasses.dataclass
class OpenSetMetrics:
  """Identification metrics of labelled probes (module docstring)."""
  num_known: int
  num_unknown: int
  rank_accuracy: dict[int, float]  # k -> rank-k accuracy of the known probes
  threshold: float
  dir_at_threshold: float
  far_at_threshold: float
  dir_at_far: dict[float, float]  # FAR target -> DIR
  far_reached: dict[float, float]  # FAR target -> FAR at the chosen threshold
  threshold_at_far: dict[float, float]

  def summary(self) -> str:
    ranks = ", ".join(f"rank-{k} {v:.4f}" for k, v in self.rank_accuracy.items())
    lines = [f"closed set ({self.num_known} known probes): {ranks}",
             f"open set ({self.num_unknown} unknown probes) at threshold {self.threshold:.4f}: "
             f"DIR {self.dir_at_threshold:.4f}, FAR {self.far_at_threshold:.4f}"]
    for f, v in self.dir_at_far.items():
      lines.append(f"  DIR@FAR={f:g}: {v:.4f} (threshold {self.threshold_at_far[f]:.4f}, "
                   f"FAR reached {self.far_reached[f]:.4f})")
    return "\n".join(lines)


def threshold_for_far(unknown_nearest: np.ndarray, far: float) -> float:
  """The largest t with mean(unknown_nearest < t) <= far (+inf when far admits all)."""
  u = np.sort(np.asarray(unknown_nearest, np.float64))
  allowed = int(math.floor(far * len(u) + 1e-9))
  return float(u[allowed]) if allowed < len(u) else math.inf


def open_set_metrics(class_dist: np.ndarray, true_class: np.ndarray, threshold: float, *,
                     ranks: Sequence[int] = (1, 5),
                     far_targets: Sequence[float] = (0.01, 0.1)) -> OpenSetMetrics:
  """Rank-k, DIR/FAR at `threshold` and DIR@FAR from [P, C] identity distances.

  `true_class` [P] int: the probe's identity index in the gallery, -1 for an
  unknown probe. Rates over an empty set are NaN.
  """
  class_dist = np.asarray(class_dist, np.float64)
  true_class = np.asarray(true_class)
  known = true_class >= 0
  nearest = class_dist.min(axis=1)
  u = nearest[~known]
  rank = rank_of_true(class_dist[known], true_class[known])
  d_known = nearest[known]
  mean = lambda x: float(np.mean(x)) if len(x) else math.nan
  dir_at = lambda t: mean((rank == 0) & (d_known < t))
  far_at = lambda t: mean(u < t)
  thresholds = {f: threshold_for_far(u, f) if len(u) else math.nan for f in far_targets}
  return OpenSetMetrics(
      num_known=int(known.sum()), num_unknown=int((~known).sum()),
      rank_accuracy={k: mean(rank < k) for k in ranks},
      threshold=float(threshold), dir_at_threshold=dir_at(threshold),
      far_at_threshold=far_at(threshold),
      dir_at_far={f: dir_at(t) if len(u) else math.nan for f, t in thresholds.items()},
      far_reached={f: far_at(t) for f, t in thresholds.items()},
      threshold_at_far=thresholds)


# --- the verb -----------------------------------------------------------------------------------

@dataclasses.dataclass
class IdentifyResult:
  """Per probe: `answers` (identity or "unknown"), `top_identities` [P, k] str and
  `top_distances` [P, k] float64; `metrics` when the probes are labelled."""
  probe_paths: list[str]
  probe_labels: list[str]
  answers: list[str]
  top_identities: list[list[str]]
  top_distances: np.ndarray
  calibration: Calibration
  gallery_size: int
  gallery_identities: list[str]
  gallery_dropped: list[str]  # identities with no usable gallery image
  metrics: OpenSetMetrics | None = None
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)
  no_face: list[str] = dataclasses.field(default_factory=list)  # aligned: fallback crop used

  def summary(self, show: int = 10) -> str:
    lines = [f"identified {len(self.probe_paths)} probe(s) against {self.gallery_size} gallery "
             f"images of {len(self.gallery_identities)} identities",
             f"threshold source: {self.calibration.describe()}"]
    for i in range(min(show, len(self.probe_paths))):
      top = ", ".join(f"{n} {d:.3f}" for n, d in zip(self.top_identities[i], self.top_distances[i]))
      lines.append(f"  {self.probe_paths[i]} -> {self.answers[i]}  [{top}]")
    if len(self.probe_paths) > show:
      lines.append(f"  ... {len(self.probe_paths) - show} more (see the CSV)")
    if self.gallery_dropped:
      lines.append(f"gallery identities with no usable image (left out): {self.gallery_dropped}")
    if self.metrics is not None:
      lines.append(self.metrics.summary())
    if self.no_face:
      lines.append(format_no_face(self.no_face))
    if self.skipped:
      lines.append(format_skipped(self.skipped))
    return "\n".join(lines)

  def write_csv(self, path: str | os.PathLike) -> str:
    """probe, label, answer, then (identity, distance) for each of the top k."""
    path = os.fspath(path)
    if os.path.dirname(path):
      os.makedirs(os.path.dirname(path), exist_ok=True)
    k = self.top_distances.shape[1] if self.top_distances.ndim == 2 else 0
    with open(path, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["probe", "label", "answer"]
                 + [c for i in range(1, k + 1) for c in (f"identity_{i}", f"distance_{i}")])
      for p, label, a, ids, ds in zip(self.probe_paths, self.probe_labels, self.answers,
                                      self.top_identities, self.top_distances):
        w.writerow([p, label, a] + [c for n, d in zip(ids, ds) for c in (n, f"{d:.6f}")])
    return path


def identify_embeddings(gallery_emb: np.ndarray, gallery_labels: Sequence[str],
                        probe_emb: np.ndarray, probe_labels: Sequence[str] | None,
                        calibration: Calibration, *, k: int = 5,
                        far_targets: Sequence[float] = (0.01, 0.1)):
  """The numpy core of `identify`: (identities [C], class_dist [P, C], answers, top
  identities [P, k'], top distances [P, k'], metrics or None), k' = min(k, C)."""
  identities = sorted(set(gallery_labels))
  index = {n: i for i, n in enumerate(identities)}
  gallery_class = np.array([index[n] for n in gallery_labels], np.int64)
  class_dist = identity_distances(probe_emb, gallery_emb, gallery_class, len(identities),
                                  calibration.distance)
  k = min(k, len(identities))
  top = np.argsort(class_dist, axis=1, kind="stable")[:, :k]
  top_d = np.take_along_axis(class_dist, top, axis=1)
  answers = [identities[t[0]] if d[0] < calibration.threshold else UNKNOWN_ANSWER
             for t, d in zip(top, top_d)]
  metrics = None
  if probe_labels is not None and len(probe_labels) and all(l != UNKNOWN for l in probe_labels):
    true = np.array([index.get(l, -1) for l in probe_labels], np.int64)
    ranks = tuple(r for r in (1, 5) if r <= len(identities)) or (1,)
    metrics = open_set_metrics(class_dist, true, calibration.threshold, ranks=ranks,
                               far_targets=far_targets)
  return (identities, class_dist, answers, [[identities[i] for i in row] for row in top],
          top_d, metrics)


def identify(model: FaceModel, gallery: ImageList, probes: ImageList, calibration: Calibration,
             *, k: int = 5, far_targets: Sequence[float] = (0.01, 0.1),
             batch_size: int | None = None, progress: bool | None = None) -> IdentifyResult:
  """Embeds gallery and probes and ranks the gallery identities for each probe.

  The gallery must be labelled (one subfolder per identity). An identity
  whose gallery images are all unusable is left out and named in the
  result; its probes then count as unknown. Metrics are computed when every
  probe is labelled.
  """
  if not gallery.labelled:
    raise errors.DataError(f"gallery {gallery.source}: every image needs an identity "
                           f"(use a folder with one subfolder per identity)")
  how = dict(flip=calibration.flip, standardization=calibration.standardization,
             batch_size=batch_size, progress=progress)
  g = model.embed_paths(gallery.paths, desc="gallery", **how)
  label_of = dict(zip(gallery.paths, gallery.labels))
  g_labels = [label_of[p] for p in g.paths]
  dropped = sorted((set(gallery.labels) - set(g_labels)) | set(gallery.empty_identities))
  if not g_labels:
    raise errors.DataError(f"gallery {gallery.source}: no usable image\n"
                           + format_skipped(g.skipped))
  p = model.embed_paths(probes.paths, desc="probes", **how)
  if not p.paths:
    raise errors.DataError(f"probes {probes.source}: no usable image\n"
                           + format_skipped(p.skipped))
  label_of = dict(zip(probes.paths, probes.labels))
  return identify_embedded(g.paths, g_labels, g.embeddings, p.paths,
                           [label_of[x] for x in p.paths], p.embeddings, calibration, k=k,
                           far_targets=far_targets, gallery_dropped=dropped,
                           skipped={**gallery.left_out, **probes.left_out, **g.skipped,
                                    **p.skipped},
                           no_face=g.no_face + p.no_face, probes_source=probes.source)


def identify_embedded(gallery_paths: Sequence[str], gallery_labels: Sequence[str],
                      gallery_emb: np.ndarray, probe_paths: Sequence[str],
                      probe_labels: Sequence[str], probe_emb: np.ndarray,
                      calibration: Calibration, *, k: int = 5,
                      far_targets: Sequence[float] = (0.01, 0.1), gallery_dropped=(),
                      skipped=None, no_face=(), probes_source: str = "probes") -> IdentifyResult:
  """`identify` from embeddings already made: gallery [G, D] with a label each, probes
  [P, D] (labels "" when unknown), e.g. two `tools embed` files, which may come from two
  models (a v1 gallery searched with harmonic v2 probes)."""
  if not len(gallery_paths):
    raise errors.DataError("the gallery has no embeddings")
  if any(label == UNKNOWN for label in gallery_labels):
    unlabelled = [x for x, label in zip(gallery_paths, gallery_labels) if label == UNKNOWN]
    raise errors.DataError(f"gallery: {len(unlabelled)} embedding(s) without an identity, e.g. "
                           f"{unlabelled[0]} (embed an identity folder)")
  if not len(probe_paths):
    raise errors.DataError(f"{probes_source}: no probe embeddings")
  if gallery_emb.shape[1] != probe_emb.shape[1]:
    raise errors.DataError(f"gallery embeddings are {gallery_emb.shape[1]}-D, probes "
                           f"{probe_emb.shape[1]}-D: they cannot be compared")
  identities, _, answers, top_ids, top_d, metrics = identify_embeddings(
      gallery_emb, gallery_labels, probe_emb, probe_labels, calibration, k=k,
      far_targets=far_targets)
  return IdentifyResult(probe_paths=list(probe_paths), probe_labels=list(probe_labels),
                        answers=answers, top_identities=top_ids, top_distances=top_d,
                        calibration=calibration, gallery_size=len(gallery_paths),
                        gallery_identities=identities, gallery_dropped=list(gallery_dropped),
                        metrics=metrics, skipped=dict(skipped or {}), no_face=list(no_face))
