"""LFW verification of a facejax checkpoint, separate from the trainer.

`evaluate_lfw` embeds every image that the chosen pairs file names exactly
once (`facejax.inference.Embedder.embed_table`: batched, jitted, sharded over
the device mesh, on the training pipeline's pixels, with a progress bar),
computes pair distances (`facejax.distances`) and scores them with
`facejax.evaluation.metrics` (threshold chosen on the other folds). Results
go to `<workdir>/eval`, named by `facejax.evaluation.results` after what they
measured: `lfw_<step>.json` (View 2) or `lfw_<protocol>_<step>.json` for the
LFW images with the config's settings, with a ROC plot beside them.

`evaluate_pair_set` is the part that does not care where pairs come from:
`identity_pairs.evaluate_identity_folder` scores any identity folder with it.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath

from facejax import errors
from facejax.data import datasets, input_pipeline, lfw
from facejax.distances import DISTANCES, fold_distances, pair_distances  # noqa: F401
from facejax.evaluation import metrics as metrics_lib
from facejax.evaluation import results as results_lib
from facejax.inference import FLIPS, Embedder, restore_model_vars  # noqa: F401 -- re-exported

# "view1" is LFW's own name for the development split; its test half (pairsDevTest.txt)
# is the one people score on, so it stands for "dev_test".
PROTOCOL_ALIASES = {"view1": "dev_test"}
PROTOCOLS = ("view2", "dev_test", "dev_train", *PROTOCOL_ALIASES)
NUM_FOLDS = 10


def canonical_protocol(protocol: str) -> str:
  """"view1" -> "dev_test"; the other PROTOCOLS unchanged; anything else is an error."""
  if protocol not in PROTOCOLS:
    raise errors.ConfigError(f"protocol={protocol!r}: choose one of {PROTOCOLS}")
  return PROTOCOL_ALIASES.get(protocol, protocol)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
  """The davidsandberg ablation switches of one evaluation (see `resolve`)."""
  distance: str  # "euclidean" (squared L2) | "cosine"
  flip: str  # "none" | "concat" (embedding of the image and of its mirror) | "average"
  subtract_mean: bool  # centre on the other folds' mean embedding
  standardization: str  # "fixed": (x - 127.5) / 128 | "prewhiten": per-image whitening

  @classmethod
  def resolve(cls, config: ml_collections.ConfigDict, *, distance: str | None = None,
              flip: str | None = None, subtract_mean: bool | None = None,
              standardization: str | None = None) -> "EvalOptions":
    """Arguments that are not None override `config.eval.*` and `config.data.standardization`."""
    ev = config.eval
    options = cls(distance=distance or ev.distance, flip=flip or ev.flip,
                  subtract_mean=ev.subtract_mean if subtract_mean is None else bool(subtract_mean),
                  standardization=standardization or config.data.standardization)
    for name, allowed in (("distance", DISTANCES), ("flip", FLIPS),
                          ("standardization", input_pipeline.STANDARDIZATIONS)):
      if getattr(options, name) not in allowed:
        raise errors.ConfigError(f"{name}={getattr(options, name)!r}: choose one of {allowed}")
    return options

  def key_settings(self) -> dict[str, Any]:
    """The settings a result is keyed by (`results.settings_tags`)."""
    return dataclasses.asdict(self)

  def preprocessing(self, config: ml_collections.ConfigDict) -> input_pipeline.Preprocessing:
    """`config.data`'s evaluation preprocessing with this standardisation."""
    return dataclasses.replace(datasets.preprocessing(config.data, train=False),
                               standardization=self.standardization)


@dataclasses.dataclass(frozen=True, eq=False)
class PairSet:
  """Verification pairs over a list of image files, each file embedded once.

  Attributes:
    paths: [I] image file paths.
    index_a, index_b: [N] int64 rows of `paths` that each pair compares.
    issame: [N] bool, True for a genuine pair.
    folds: [N] int64 fold of each pair; a fold's threshold is chosen on the others.
    replacements: row -> encoded image bytes read instead of that file (images that
      TensorFlow would decode differently from Pillow, see `image_check.rgb_png_bytes`).
  """
  paths: list[str]
  index_a: np.ndarray
  index_b: np.ndarray
  issame: np.ndarray
  folds: np.ndarray
  replacements: dict[int, bytes] = dataclasses.field(default_factory=dict)

  @classmethod
  def from_pairs(cls, pairs: list[lfw.Pair], folds: np.ndarray, image_path,
                 replacements: dict[str, bytes] | None = None) -> "PairSet":
    """From `lfw.Pair`s; `image_path(relpath)` locates a pair's image, `replacements`
    is keyed by that relative path."""
    images = lfw.unique_images(pairs)
    row = {p: i for i, p in enumerate(images)}
    replacements = replacements or {}
    return cls(paths=[str(image_path(p)) for p in images],
               index_a=np.array([row[p.path_a] for p in pairs], np.int64),
               index_b=np.array([row[p.path_b] for p in pairs], np.int64),
               issame=np.array([p.issame for p in pairs], bool),
               folds=np.asarray(folds, np.int64),
               replacements={row[p]: b for p, b in replacements.items() if p in row})


@dataclasses.dataclass(frozen=True, eq=False)
class LfwEvalResult:
  """What a notebook gets back from `evaluate_lfw` / `evaluate_identity_folder`.

  `pair_folds` [N] int, `pair_issame` [N] bool and `distances` [N] float64 are per
  pair, in the order of the pairs file; None in a result rebuilt without them.
  """
  protocol: str
  step: int | None
  distance: str
  flip: str
  subtract_mean: bool
  num_pairs: int
  num_images: int
  verification: metrics_lib.VerificationResult
  json_path: str | None
  roc_path: str | None
  standardization: str = "fixed"
  pair_folds: np.ndarray | None = None
  pair_issame: np.ndarray | None = None
  distances: np.ndarray | None = None
  image_root: str | None = None  # the folder holding the identity folders
  pairs_file: str | None = None  # the pairs read, or written for an identity folder
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # file -> why left out

  @property
  def accuracy(self) -> float:
    return self.verification.accuracy_mean

  def scalars(self) -> dict[str, float]:
    v = self.verification
    return {"accuracy": v.accuracy_mean, "accuracy_std": v.accuracy_std, "val": v.val_mean,
            "far": v.far_mean, "auc": v.auc, "eer": v.eer, "threshold": v.best_threshold}

  def summary(self) -> str:
    v = self.verification
    what = f"LFW {self.protocol}" if self.protocol in PROTOCOLS else f"{self.image_root}"
    return (f"{what} ({self.num_pairs} pairs, {self.distance}, flip={self.flip}, "
            f"{self.standardization}{', mean subtracted' if self.subtract_mean else ''}): "
            f"accuracy {v.accuracy_mean:.4f} ± {v.accuracy_std:.4f}, "
            f"VAL {v.val_mean:.4f} ± {v.val_std:.4f} @ FAR {v.far_mean:.5f}, "
            f"AUC {v.auc:.4f}, EER {v.eer:.4f}")

  def fold_rows(self) -> list[dict[str, Any]]:
    """One dict per fold (sorted fold labels): fold, pairs, same, diff (None without
    `pair_folds`), threshold (chosen on the other folds), accuracy, val, far."""
    v = self.verification
    labels = (np.unique(self.pair_folds) if self.pair_folds is not None
              else np.arange(len(v.fold_accuracies)))
    rows = []
    for k, label in enumerate(labels):
      counts = dict.fromkeys(("pairs", "same", "diff"))
      if self.pair_folds is not None and self.pair_issame is not None:
        same = self.pair_issame[self.pair_folds == label]
        counts = {"pairs": int(same.size), "same": int(same.sum()), "diff": int((~same).sum())}
      rows.append({"fold": int(label), **counts, "threshold": float(v.fold_thresholds[k]),
                   "accuracy": float(v.fold_accuracies[k]), "val": float(v.fold_vals[k]),
                   "far": float(v.fold_fars[k])})
    return rows

  def fold_table(self) -> str:
    """The per-fold table as text, ending with a mean ± std (population std) row."""
    rows = self.fold_rows()
    counts, rates = ("pairs", "same", "diff"), {"threshold": 3, "accuracy": 4, "val": 4, "far": 5}
    count = lambda n: "-" if n is None else str(n)
    lines = [[str(r["fold"])] + [count(r[c]) for c in counts]
             + [f"{r[c]:.{d}f}" for c, d in rates.items()] for r in rows]
    totals = [None if rows[0][c] is None else sum(r[c] for r in rows) for c in counts]
    spread = lambda x, d: f"{np.mean(x):.{d}f} ± {np.std(x):.{d}f}"
    last = (["mean ± std"] + [count(t) for t in totals]
            + [spread([r[c] for r in rows], d) for c, d in rates.items()])
    header = ["fold", *counts, "threshold", "accuracy", "VAL", "FAR"]
    widths = [max(len(line[i]) for line in [header, *lines, last]) for i in range(len(header))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "-" * len(fmt(header))
    return "\n".join([fmt(header), rule, *map(fmt, lines), rule, fmt(last)])

  def to_dict(self) -> dict[str, Any]:
    d = {k: getattr(self, k) for k in ("protocol", "step", "distance", "flip", "subtract_mean",
                                        "standardization", "num_pairs", "num_images",
                                        "image_root", "pairs_file", "skipped")}
    d.update(self.scalars())
    d["verification"] = self.verification.to_dict()
    d["folds"] = self.fold_rows()
    return d


def deal_folds(issame: np.ndarray, num_folds: int = NUM_FOLDS) -> np.ndarray:
  """[N] bool -> [N] int fold of each pair: each class dealt in order into `num_folds`
  consecutive blocks, so every fold holds about N_same/num_folds of each class."""
  issame = np.asarray(issame, bool)
  folds = np.zeros(len(issame), np.int64)
  for same in (True, False):
    idx = np.flatnonzero(issame == same)
    folds[idx] = np.arange(len(idx)) * num_folds // max(len(idx), 1)
  return folds


def load_pairs(root, protocol: str) -> tuple[list[lfw.Pair], np.ndarray]:
  """Pairs of `protocol` and their fold index [N] int.

  View 2 keeps the file's ten folds. View 1 files are one block of N matched
  then N mismatched pairs, so consecutive blocks would hold one class only;
  we deal each half into 10 folds (N/10 same + N/10 different).
  """
  protocol = canonical_protocol(protocol)
  if protocol == "view2":
    pairs = lfw.view2_pairs(root)
    return pairs, np.array([p.fold for p in pairs])
  pairs = lfw.view1_pairs(root, protocol.split("_")[1])
  return pairs, deal_folds(np.array([p.issame for p in pairs]))


def make_embedder(config: ml_collections.ConfigDict, options: EvalOptions, *,
                  workdir: str | None, step: int | None, variables: dict | None) -> Embedder:
  """The `Embedder` of an evaluation: `variables` as given (the trainer's), else restored
  from `workdir` (step `step`, default the newest good one), with `options`' flip and
  standardisation."""
  how = dict(flip=options.flip, standardization=options.standardization)
  if variables is not None:
    return Embedder.from_variables(config, variables, step=step, workdir=workdir, **how)
  if workdir is None:
    raise ValueError("evaluation needs `workdir` (to restore a checkpoint) or `variables`")
  return Embedder.from_workdir(config, workdir, step, **how)


def evaluate_pair_set(config: ml_collections.ConfigDict, pair_set: PairSet, *,
                      embedder: Embedder, options: EvalOptions, protocol: str,
                      out_dir: str | None = None, key: results_lib.ResultKey | None = None,
                      title: str | None = None, **provenance) -> LfwEvalResult:
  """Embeds `pair_set`'s images, scores its pairs fold by fold, writes JSON + ROC.

  Args:
    embedder: the net, with `options`' flip and standardisation.
    protocol: the name the result carries ("view2", "identity_folder", ...).
    out_dir, key: write `key.paths(out_dir)` (JSON and ROC PNG, process 0 only);
      nothing is written when `out_dir` is None.
    provenance: image_root, pairs_file, skipped for the result.
  """
  table = input_pipeline.ImageTable(pair_set.paths, replacements=pair_set.replacements)
  emb = embedder.embed_table(table, desc=f"embed {protocol}")
  dist = fold_distances(emb[pair_set.index_a], emb[pair_set.index_b], pair_set.folds,
                        options.distance, options.subtract_mean)
  verification = metrics_lib.evaluate_verification(dist, pair_set.issame, folds=pair_set.folds,
                                                   far_target=config.eval.far_target)
  json_path = roc_path = None
  if out_dir:
    epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = key.paths(out_dir)
    json_path, roc_path = paths.json, paths.roc
  step = embedder.step
  result = LfwEvalResult(
      protocol=protocol, step=step, num_pairs=len(dist), num_images=len(pair_set.paths),
      verification=verification, json_path=json_path, roc_path=roc_path,
      pair_folds=pair_set.folds, pair_issame=pair_set.issame, distances=dist,
      **dataclasses.asdict(options), **provenance)
  if json_path and jax.process_index() == 0:
    epath.Path(json_path).write_text(json.dumps(result.to_dict(), indent=1))
    metrics_lib.plot_roc({f"step {step}": (verification.roc_fpr, verification.roc_tpr)},
                         roc_path, title=title or f"LFW {protocol}")
  return result


def lfw_pair_set(config: ml_collections.ConfigDict, protocol: str):
  """(PairSet of `protocol`'s pairs over `config.data`'s LFW images, LFW root, image root).

  Every image the pairs name must exist (an error lists the missing ones).
  """
  root = datasets.lfw_root(config.data)
  pairs, folds = load_pairs(root, protocol)
  image_root = datasets.lfw_image_root(config.data)
  lfw.check_images_exist(image_root, pairs)
  return PairSet.from_pairs(pairs, folds, lambda p: lfw.image_path(image_root, p)), root, image_root


def evaluate_lfw(config: ml_collections.ConfigDict, *, workdir: str | None = None,
                 step: int | None = None, variables: dict | None = None,
                 protocol: str = "view2", distance: str | None = None, flip: str | None = None,
                 subtract_mean: bool | None = None, standardization: str | None = None,
                 out_dir: str | None = None, write: bool = True) -> LfwEvalResult:
  """Scores a model on LFW pairs with the 10-fold protocol.

  Args:
    config: the experiment config (model, data, eval sections).
    workdir: where checkpoints live; results go to `<workdir>/eval` unless `out_dir`,
      named after what they measured (`results.lfw_key`).
    step: checkpoint step to restore (default: latest). Ignored with `variables`.
    variables: {"params", "batch_stats"} already in memory (e.g. from the trainer).
    protocol: "view2" (pairs.txt, 10 folds), "dev_test" (alias "view1") or "dev_train".
    distance, flip, subtract_mean: override `config.eval.*` ("euclidean"|"cosine",
      "none"|"concat"|"average", bool).
    standardization: overrides `config.data.standardization` ("fixed"|"prewhiten").
    write: False writes nothing.
  """
  protocol = canonical_protocol(protocol)
  options = EvalOptions.resolve(config, distance=distance, flip=flip, subtract_mean=subtract_mean,
                                standardization=standardization)
  embedder = make_embedder(config, options, workdir=workdir, step=step, variables=variables)
  pair_set, root, image_root = lfw_pair_set(config, protocol)
  key = results_lib.lfw_key(config, protocol, embedder.step, image_root=image_root,
                            **options.key_settings())
  return evaluate_pair_set(
      config, pair_set, embedder=embedder, options=options, protocol=protocol,
      out_dir=results_lib.output_dir(workdir, out_dir) if write else None, key=key,
      image_root=str(image_root), pairs_file=os.path.join(root, lfw.PAIRS_FILES[protocol]))
