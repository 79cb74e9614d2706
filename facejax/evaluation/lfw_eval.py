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
from facejax.evaluation import registry
from facejax.evaluation import results as results_lib
from facejax.inference import FLIPS, Embedder, restore_model_vars  # noqa: F401 -- re-exported

# LFW View 1 by its protocol: the threshold is chosen on the DevTrain pairs and applied
# once to the DevTest pairs ("dev_test" is the same thing, named after its test half).
# "dev_test_10fold" deals DevTest into 10 folds and tunes on DevTest itself (facejax
# before 2026-12; not the protocol, kept for comparison); "dev_train" likewise on DevTrain.
PROTOCOL_ALIASES = {"dev_test": "view1"}
PROTOCOLS = ("view2", "view1", "dev_test_10fold", "dev_train", *PROTOCOL_ALIASES)
NUM_FOLDS = 10
# View 1's fold labels: the pairs scored, and the pairs their threshold is chosen on.
VIEW1_TEST_FOLD, VIEW1_TRAIN_FOLD = 0, 1


def canonical_protocol(protocol: str) -> str:
  """"dev_test" -> "view1"; the other PROTOCOLS unchanged; anything else is an error."""
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
    test_folds: None scores every fold against the others (k-fold); else only these
      folds are scored and reported, with thresholds chosen on the rest (View 1).
    encoded: [I] the images' encoded bytes, when they are in memory (a `.bin`) rather
      than in the files `paths` names.
  """
  paths: list[str]
  index_a: np.ndarray
  index_b: np.ndarray
  issame: np.ndarray
  folds: np.ndarray
  replacements: dict[int, bytes] = dataclasses.field(default_factory=dict)
  test_folds: tuple[int, ...] | None = None
  encoded: list[bytes] | None = None

  @classmethod
  def from_pairs(cls, pairs: list[lfw.Pair], folds: np.ndarray, image_path,
                 replacements: dict[str, bytes] | None = None,
                 test_folds: tuple[int, ...] | None = None) -> "PairSet":
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
               replacements={row[p]: b for p, b in replacements.items() if p in row},
               test_folds=test_folds)

  def scored(self) -> np.ndarray:
    """[N] bool: the pairs a result reports (all of them, or those of `test_folds`)."""
    if self.test_folds is None:
      return np.ones(len(self.folds), bool)
    return np.isin(self.folds, self.test_folds)


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


def load_pairs(root, protocol: str
               ) -> tuple[list[lfw.Pair], np.ndarray, tuple[int, ...] | None]:
  """Pairs of `protocol`, their fold index [N] int and the folds to score (None: all).

  View 2 keeps the file's ten folds. View 1 is the DevTest pairs (fold
  VIEW1_TEST_FOLD, scored) followed by the DevTrain pairs (VIEW1_TRAIN_FOLD, where
  the threshold is chosen). "dev_test_10fold" and "dev_train" score one View 1 file
  in 10 folds: its N matched then N mismatched pairs are each dealt into 10 folds, as
  consecutive blocks would hold one class only.
  """
  protocol = canonical_protocol(protocol)
  if protocol == "view2":
    pairs = lfw.view2_pairs(root)
    return pairs, np.array([p.fold for p in pairs]), None
  if protocol == "view1":
    test, train = lfw.view1_pairs(root, "test"), lfw.view1_pairs(root, "train")
    folds = np.array([VIEW1_TEST_FOLD] * len(test) + [VIEW1_TRAIN_FOLD] * len(train))
    return test + train, folds, (VIEW1_TEST_FOLD,)
  pairs = lfw.view1_pairs(root, "train" if protocol == "dev_train" else "test")
  return pairs, deal_folds(np.array([p.issame for p in pairs])), None


def make_embedder(config: ml_collections.ConfigDict, options: EvalOptions, *,
                  workdir: str | None, step: int | None, variables: dict | None,
                  embedder: Embedder | None = None) -> Embedder:
  """The `Embedder` of an evaluation with `options`' flip and standardisation: `embedder`'s
  net and variables, else `variables` as given (the trainer's), else restored from
  `workdir` (step `step`, default the newest good one)."""
  how = dict(flip=options.flip, standardization=options.standardization)
  if embedder is not None:
    return embedder.replace(**how)
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
  table = input_pipeline.ImageTable(pair_set.paths, encoded=pair_set.encoded,
                                    replacements=pair_set.replacements)
  emb = embedder.embed_table(table, desc=f"embed {protocol}")
  dist = fold_distances(emb[pair_set.index_a], emb[pair_set.index_b], pair_set.folds,
                        options.distance, options.subtract_mean)
  verification = metrics_lib.evaluate_verification(dist, pair_set.issame, folds=pair_set.folds,
                                                   far_target=config.eval.far_target,
                                                   test_folds=pair_set.test_folds)
  scored = pair_set.scored()
  json_path = roc_path = None
  if out_dir:
    epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = key.paths(out_dir)
    json_path, roc_path = paths.json, paths.roc
  step = embedder.step
  result = LfwEvalResult(
      protocol=protocol, step=step, num_pairs=int(scored.sum()), num_images=len(pair_set.paths),
      verification=verification, json_path=json_path, roc_path=roc_path,
      pair_folds=pair_set.folds[scored], pair_issame=pair_set.issame[scored],
      distances=dist[scored],
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
  pairs, folds, test_folds = load_pairs(root, protocol)
  image_root = datasets.lfw_image_root(config.data)
  lfw.check_images_exist(image_root, pairs)
  pair_set = PairSet.from_pairs(pairs, folds, lambda p: lfw.image_path(image_root, p),
                                test_folds=test_folds)
  return pair_set, root, image_root


def evaluate_lfw(config: ml_collections.ConfigDict, *, workdir: str | None = None,
                 step: int | None = None, variables: dict | None = None,
                 protocol: str = "view2", distance: str | None = None, flip: str | None = None,
                 subtract_mean: bool | None = None, standardization: str | None = None,
                 out_dir: str | None = None, write: bool = True,
                 embedder: Embedder | None = None) -> LfwEvalResult:
  """Scores a model on LFW pairs by the LFW protocols.

  Args:
    config: the experiment config (model, data, eval sections).
    workdir: where checkpoints live; results go to `<workdir>/eval` unless `out_dir`,
      named after what they measured (`results.lfw_key`).
    step: checkpoint step to restore (default: latest). Ignored with `variables`.
    variables: {"params", "batch_stats"} already in memory (e.g. from the trainer).
    protocol: "view2" (pairs.txt, 10 folds), "view1" (alias "dev_test": threshold chosen
      on pairsDevTrain.txt, applied to pairsDevTest.txt), "dev_test_10fold" or
      "dev_train" (one View 1 file, 10 folds of its own).
    distance, flip, subtract_mean: override `config.eval.*` ("euclidean"|"cosine",
      "none"|"concat"|"average", bool).
    standardization: overrides `config.data.standardization` ("fixed"|"prewhiten").
    write: False writes nothing.
    embedder: the net and variables to use instead of `variables` or a checkpoint.
  """
  protocol = canonical_protocol(protocol)
  options = EvalOptions.resolve(config, distance=distance, flip=flip, subtract_mean=subtract_mean,
                                standardization=standardization)
  embedder = make_embedder(config, options, workdir=workdir, step=step, variables=variables,
                           embedder=embedder)
  pair_set, root, image_root = lfw_pair_set(config, protocol)
  key = results_lib.lfw_key(config, protocol, embedder.step, image_root=image_root,
                            **options.key_settings())
  return evaluate_pair_set(
      config, pair_set, embedder=embedder, options=options, protocol=protocol,
      out_dir=results_lib.output_dir(workdir, out_dir) if write else None, key=key,
      image_root=str(image_root), pairs_file=os.path.join(root, pairs_file_name(protocol)))


def pairs_file_name(protocol: str) -> str:
  """The file holding `protocol`'s scored pairs."""
  return lfw.PAIRS_FILES["dev_test" if protocol in ("view1", "dev_test_10fold") else protocol]


def with_lfw_image_dir(config: ml_collections.ConfigDict, image_dir: str | None
                       ) -> ml_collections.ConfigDict:
  """`config` with `data.lfw_image_dir = image_dir` (a copy; `config` itself when None)."""
  if not image_dir:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config.data.lfw_image_dir = os.fspath(image_dir)
  return config


def resolve_for(config: ml_collections.ConfigDict, name: str, settings: dict) -> EvalOptions:
  """`EvalOptions.resolve` for evaluator `config.evals.<name>`, naming its key on error."""
  try:
    return EvalOptions.resolve(config, **settings)
  except errors.ConfigError as e:
    raise errors.ConfigError([f"config.evals.{name}.{p}" for p in e.problems]) from None


@registry.register("lfw")
class LfwEvaluator(registry.Evaluator):
  """LFW pairs by the LFW protocols (`evaluate_lfw`).

  Keyword arguments:
    protocol: "view2" (default), "view1" (alias "dev_test"), "dev_test_10fold", "dev_train".
    distance, flip, subtract_mean, standardization: override config.eval / config.data.
    image_dir: the LFW images to use (e.g. an aligned copy); default config.data.lfw_image_dir.
  """

  def __init__(self, config, embedder, *, name, out_dir, protocol: str = "view2",
               distance: str | None = None, flip: str | None = None,
               subtract_mean: bool | None = None, standardization: str | None = None,
               image_dir: str | None = None):
    super().__init__(config, embedder, name=name, out_dir=out_dir)
    if protocol not in PROTOCOLS:
      raise errors.ConfigError(f"config.evals.{name}.protocol={protocol!r}: not one of "
                               f"{PROTOCOLS}{errors.did_you_mean(protocol, PROTOCOLS)}")
    self.protocol = canonical_protocol(protocol)
    self.settings = dict(distance=distance, flip=flip, subtract_mean=subtract_mean,
                         standardization=standardization)
    resolve_for(config, name, self.settings)  # a bad value fails here, not at the first run
    self.image_dir = image_dir

  def _run(self, embedder):
    result = evaluate_lfw(with_lfw_image_dir(self.config, self.image_dir), embedder=embedder,
                          protocol=self.protocol, out_dir=self.out_dir,
                          write=self.out_dir is not None, **self.settings)
    return result.scalars(), result

  # The pair-evaluator interface the ablation uses: pairs, pixels, the table's name.
  def pair_set(self) -> PairSet:
    return lfw_pair_set(with_lfw_image_dir(self.config, self.image_dir), self.protocol)[0]

  def preprocessing(self) -> input_pipeline.Preprocessing:
    return datasets.preprocessing(self.config.data, train=False)

  def settings_key(self, step) -> results_lib.ResultKey:
    """The key of the ablation table of these pairs: the one `python -m
    facejax.evaluation.ablation` writes."""
    return results_lib.ablation_key(with_lfw_image_dir(self.config, self.image_dir),
                                    self.protocol, step)
