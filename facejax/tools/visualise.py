"""Figures: a t-SNE map of an embeddings file, and ROC curves of several LFW evaluations.

Both draw on an Agg canvas (no pyplot, no display, no global backend switch), like
`metrics.plot_roc`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Sequence

import numpy as np

from facejax import errors
from facejax.distances import l2_normalize
from facejax.evaluation import metrics
from facejax.tools.common import UNKNOWN
from facejax.tools.embed import EmbedResult, load_npz


def _figure(size=(7, 6)):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=size, dpi=120)
  FigureCanvasAgg(fig)
  return fig


def _save(fig, path: str) -> str:
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, format="png")
  return path


@dataclasses.dataclass
class TsneResult:
  path: str
  num_points: int
  identities: list[str]  # plotted, largest first ([] when unlabelled)
  kl_divergence: float

  def summary(self) -> str:
    who = (f"{len(self.identities)} identities ({', '.join(self.identities[:5])}"
           f"{', ...' if len(self.identities) > 5 else ''})" if self.identities else "unlabelled")
    return (f"t-SNE of {self.num_points} embeddings, {who}, KL {self.kl_divergence:.3f}: "
            f"wrote {self.path}")


def tsne_plot(embeddings: EmbedResult | str | os.PathLike, path: str | os.PathLike, *,
              top_identities: int = 10, perplexity: float = 30.0, seed: int = 0,
              title: str | None = None) -> TsneResult:
  """t-SNE (sklearn, PCA init, `seed`) of unit-normalised embeddings, saved as a PNG.

  With labels, only the `top_identities` identities with the most images are
  mapped (ties: by name), one colour each with a legend; unlabelled files
  are mapped in one colour. The perplexity is capped below N / 3 so small
  files still work.
  """
  from sklearn.manifold import TSNE
  data = embeddings if isinstance(embeddings, EmbedResult) else load_npz(embeddings)
  labels = np.array(data.labels, dtype=str)
  emb = data.embeddings
  keep_ids: list[str] = []
  if len(labels) and np.all(labels != UNKNOWN):
    counts = collections.Counter(labels.tolist())
    keep_ids = [n for n, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    keep_ids = keep_ids[:top_identities]
    mask = np.isin(labels, keep_ids)
    emb, labels = emb[mask], labels[mask]
  if len(emb) < 3:
    raise errors.DataError(f"t-SNE needs at least 3 embeddings, got {len(emb)}")
  tsne = TSNE(n_components=2, perplexity=min(perplexity, (len(emb) - 1) / 3), init="pca",
              random_state=seed)
  xy = tsne.fit_transform(l2_normalize(emb))
  fig = _figure()
  ax = fig.add_subplot(1, 1, 1)
  if keep_ids:
    import matplotlib
    cmap = matplotlib.colormaps["tab20" if len(keep_ids) > 10 else "tab10"]
    for i, name in enumerate(keep_ids):
      m = labels == name
      ax.scatter(xy[m, 0], xy[m, 1], s=14, color=cmap(i % cmap.N), label=f"{name} ({m.sum()})")
    ax.legend(fontsize=7, loc="best", markerscale=1.5, framealpha=0.8)
  else:
    ax.scatter(xy[:, 0], xy[:, 1], s=8)
  ax.set_title(title or f"t-SNE of {os.path.basename(data.path or 'embeddings')} "
                        f"(step {data.step})")
  ax.set_xticks([])
  ax.set_yticks([])
  fig.tight_layout()
  out = _save(fig, os.fspath(path))
  return TsneResult(out, len(emb), keep_ids, float(tsne.kl_divergence_))


@dataclasses.dataclass
class RocOverlayResult:
  path: str
  curves: list[tuple[str, float, float]]  # (label, accuracy, AUC)

  def summary(self) -> str:
    lines = [f"ROC overlay of {len(self.curves)} evaluation(s): wrote {self.path}"]
    lines += [f"  {label}" for label, _, _ in self.curves]
    return "\n".join(lines)


def curve_label(json_path: str) -> str:
  """'<run>/<file stem>' for `<run>/eval/<stem>.json`, else the stem."""
  stem = os.path.splitext(os.path.basename(json_path))[0]
  parent = os.path.dirname(os.path.abspath(json_path))
  run = os.path.basename(os.path.dirname(parent)) if os.path.basename(parent) == "eval" else ""
  return f"{run}/{stem}" if run else stem


def roc_overlay(json_paths: Sequence[str | os.PathLike], path: str | os.PathLike, *,
                log_x: bool = False, title: str | None = None) -> RocOverlayResult:
  """Overlays the fold-mean ROC curves of LFW evaluation JSONs in one PNG.

  Each curve is labelled with its source (`<run>/<stem>`), accuracy and AUC;
  the legend sits under the axes so that it never hides a curve.
  """
  if not json_paths:
    raise errors.DataError("roc_overlay needs at least one evaluation JSON")
  curves, rows = [], []
  for p in map(os.fspath, json_paths):
    if not os.path.isfile(p):
      raise errors.MissingDataError(f"no such evaluation JSON: {p}")
    with open(p) as f:
      saved = json.load(f)
    v = saved.get("verification", {})
    if "roc_fpr" not in v or "roc_tpr" not in v:
      raise errors.DataError(f"{p} has no verification.roc_fpr/roc_tpr: not an LFW evaluation JSON")
    fpr, tpr = np.asarray(v["roc_fpr"], np.float64), np.asarray(v["roc_tpr"], np.float64)
    acc = float(saved.get("accuracy", v.get("accuracy_mean", np.nan)))
    auc = float(saved.get("auc", v.get("auc", np.nan)))
    label = f"{curve_label(p)} ({saved.get('protocol', '?')}): acc {acc:.3f}, AUC {auc:.3f}"
    curves.append((label, fpr, tpr))
    rows.append((label, acc, auc))
  saved = metrics.plot_roc({label: (fpr, tpr) for label, fpr, tpr in curves}, path,
                           title or "LFW ROC (fold-mean)", log_x=log_x, legend_below=True,
                           show_auc=False)
  return RocOverlayResult(saved, rows)

