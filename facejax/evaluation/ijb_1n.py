"""IJB-B / IJB-C 1:N identification (mixed media probes), part of the `ijb` evaluator.

Lists (`root/meta/`, comma-separated, one header row, one row per image; column 0 is the
template id, column 1 the subject id): the galleries `<t>_1N_gallery_G1.csv` and `_G2.csv`
(IJB-B: `_S1`, `_S2`), whose subjects are disjoint, and the probes `<t>_1N_probe_mixed.csv`.
Their templates are pooled from the same image features as the 1:1 protocol.

Reported (`identify`):
  * rank-k (CMC), closed set: the probe's mate is among the k highest-scoring templates of
    the two galleries together;
  * TPIR@FPIR, open set, as NIST defines it: for each gallery, the probes whose subject is
    in it are mated searches and the others non-mated. FPIR(t) is the fraction of
    non-mated searches whose best score exceeds t; TPIR(t) the fraction of mated searches
    whose mate ranks first and scores above t. The threshold for a FPIR f over N non-mated
    searches is the (floor(f N) + 1)-th largest of their best scores (as `TarAtFar`). The
    figure is the mean over the two galleries (each is in the JSON);
  * insightface's `ijb_1n.py` figure, for comparison with papers that used it: the two
    galleries as one, the threshold is the ceil(P f)-th largest of all P x (G - 1)
    probe-to-non-mate scores, and TPIR is the fraction of probes whose mate scores above
    it, whatever its rank.

Probes are scored in chunks, so memory is the chunk's [chunk, G] scores plus, for the
insightface figure, the ceil(P max f) largest non-mate scores.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib

import numpy as np

from facejax import errors

FPIRS = (0.01, 0.1)
RANKS = (1, 5, 10)
GALLERIES = {"ijbb": ("S1", "S2"), "ijbc": ("G1", "G2")}


@dataclasses.dataclass(frozen=True)
class SearchLists:
  """Template and subject ids of the 1:N galleries and probes."""
  galleries: dict[str, tuple[np.ndarray, np.ndarray]]  # name -> ([G] template, [G] subject)
  probe_templates: np.ndarray  # [P] int64
  probe_subjects: np.ndarray  # [P] int64


def list_files(root, set_name: str) -> dict[str, pathlib.Path]:
  meta = pathlib.Path(root) / "meta"
  files = {g: meta / f"{set_name}_1N_gallery_{g}.csv" for g in GALLERIES[set_name]}
  files["probe"] = meta / f"{set_name}_1N_probe_mixed.csv"
  return files


def has_lists(root, set_name: str) -> bool:
  return all(p.is_file() for p in list_files(root, set_name).values())


def _read_list(path: pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """One CSV -> ([T] template ids in first-seen order, [T] their subject ids)."""
  if not path.is_file():
    raise errors.MissingDataError(f"{path}: missing IJB 1:N list")
  subject_of: dict[int, int] = {}
  with open(path, newline="") as f:
    for n, row in enumerate(csv.reader(f), 1):
      if n == 1 or not row:
        continue  # the header
      try:
        template, subject = int(row[0]), int(row[1])
      except (IndexError, ValueError):
        raise errors.DataError(f"{path}:{n}: expected a template id and a subject id in "
                               f"the first two columns, got {row[:2]}") from None
      if subject_of.setdefault(template, subject) != subject:
        raise errors.DataError(f"{path}:{n}: template {template} has subjects "
                               f"{subject_of[template]} and {subject}")
  return (np.array(list(subject_of), np.int64),
          np.array(list(subject_of.values()), np.int64))


def read_lists(root, set_name: str) -> SearchLists:
  files = list_files(root, set_name)
  galleries = {g: _read_list(files[g]) for g in GALLERIES[set_name]}
  shared = np.intersect1d(*(subjects for _, subjects in galleries.values()))
  if shared.size:
    raise errors.DataError(f"{files[GALLERIES[set_name][0]].parent}: subjects "
                           f"{shared[:5].tolist()} are in both galleries")
  probes, subjects = _read_list(files["probe"])
  return SearchLists(galleries=galleries, probe_templates=probes, probe_subjects=subjects)


def _threshold(scores: np.ndarray, rate: float) -> float:
  """The (floor(rate N) + 1)-th largest score: at most floor(rate N) exceed it."""
  k = int(math.floor(rate * scores.size))
  return float(np.sort(scores)[::-1][k]) if k < scores.size else -np.inf


def identify(probe_features: np.ndarray, probe_subjects: np.ndarray,
             galleries: dict[str, tuple[np.ndarray, np.ndarray]], *, fpirs=FPIRS,
             ranks=RANKS, chunk_size: int = 4096) -> dict:
  """Open- and closed-set identification (module docstring).

  Args:
    probe_features: [P, D] unit template features; probe_subjects: [P] int.
    galleries: name -> ([G_i, D] unit template features, [G_i] subject ids), subjects
      disjoint between galleries and at most one template per subject.
  Returns a JSON-able dict: "rank" {k: rate}, "tpir_at_fpir" [{fpir, tpir, per_gallery}],
  "tpir_at_fpir_insightface" [{fpir, tpir, threshold}], the counts.
  """
  names = list(galleries)
  feats = np.concatenate([galleries[g][0] for g in names]).astype(np.float32)
  subjects = np.concatenate([galleries[g][1] for g in names])
  owner = np.concatenate([np.full(len(galleries[g][1]), i) for i, g in enumerate(names)])
  if np.unique(subjects).size != subjects.size:
    raise errors.DataError("IJB 1:N: a subject has several gallery templates")
  column = {s: i for i, s in enumerate(subjects.tolist())}
  mate = np.array([column.get(s, -1) for s in probe_subjects.tolist()], np.int64)
  num_probes = len(probe_subjects)
  mate_score = np.full(num_probes, -np.inf)
  mate_rank = np.zeros(num_probes, np.int64)  # rank among all gallery templates; 0: no mate
  best_nonmate = np.full((num_probes, len(names)), -np.inf)  # per gallery
  keep = min(int(math.ceil(num_probes * max(fpirs))), num_probes * (len(subjects) - 1))
  top_nonmate = np.empty(0, np.float64)
  for start in range(0, num_probes, chunk_size):
    rows = np.arange(start, min(start + chunk_size, num_probes))
    scores = probe_features[rows].astype(np.float32) @ feats.T  # [c, G]
    has = mate[rows] >= 0
    mated = scores[has, mate[rows][has]]
    mate_score[rows[has]] = mated
    mate_rank[rows[has]] = 1 + (scores[has] > mated[:, None]).sum(1)
    scores[has, mate[rows][has]] = -np.inf
    for i in range(len(names)):
      best_nonmate[rows, i] = scores[:, owner == i].max(1)
    nonmate = scores[np.isfinite(scores)].astype(np.float64)
    merged = np.concatenate([top_nonmate, nonmate])
    top_nonmate = np.partition(merged, merged.size - keep)[merged.size - keep:] \
        if merged.size > keep else merged

  has_mate = mate >= 0
  out = {"num_probes": num_probes, "num_mated": int(has_mate.sum()),
         "gallery_sizes": {g: len(galleries[g][1]) for g in names},
         "rank": {int(k): float((mate_rank[has_mate] <= k).mean()) if has_mate.any()
                  else float("nan") for k in ranks}}
  rows = []
  for f in fpirs:
    per_gallery = {}
    for i, g in enumerate(names):
      in_g = has_mate & (owner[np.maximum(mate, 0)] == i)
      threshold = _threshold(best_nonmate[~in_g, i], f)
      hit = (mate_score[in_g] > best_nonmate[in_g, i]) & (mate_score[in_g] > threshold)
      per_gallery[g] = {"tpir": float(hit.mean()) if in_g.any() else float("nan"),
                        "threshold": threshold, "mated": int(in_g.sum()),
                        "non_mated": int((~in_g).sum())}
    rows.append({"fpir": float(f), "per_gallery": per_gallery,
                 "tpir": float(np.mean([v["tpir"] for v in per_gallery.values()]))})
  out["tpir_at_fpir"] = rows
  top = np.sort(top_nonmate)[::-1]
  legacy = []
  for f in fpirs:
    k = int(math.ceil(num_probes * f))
    threshold = float(top[k - 1]) if 0 < k <= top.size else -np.inf
    legacy.append({"fpir": float(f), "threshold": threshold,
                   "tpir": float((mate_score > threshold).mean()) if num_probes else
                   float("nan")})
  out["tpir_at_fpir_insightface"] = legacy
  return out
