"""The insightface `.bin` verification sets as an evaluator (`type="verification_bin"`).

  c.evals.agedb = dict(type="verification_bin", path="/data/faces_emore/agedb_30.bin",
                       every_steps=2000)
  python -m facejax.evaluation --config=C --workdir=W --bin=/data/agedb_30.bin --bin=...

What insightface's `eval/verification.py` does, on facejax's metric code:

* images: each encoded image of the set is decoded (the tf.data evaluation pipeline) and
  the whole aligned face is resized to the net's input (`config.data.image_size`,
  bilinear with antialiasing) when it is not already that size: a 112x112 set on a
  160x160 net is scaled up by 160/112, never cropped or padded. `source_crop` (pixels)
  takes a centre crop of the set's image first, for nets trained on tighter crops;
* pairs `(bins[2i], bins[2i+1])` in 10 consecutive, unshuffled folds (KFold(10,
  shuffle=False), the official LFW folds for lfw.bin);
* the threshold of each fold is chosen on the other nine; accuracy ± std (ddof 0) over
  folds, VAL@FAR (config.eval.far_target), AUC and EER, as for LFW;
* flip: "sum" (insightface: e(x) + e(mirror x), then L2-normalised; facejax's nets give
  unit embeddings, so the two terms are summed after their own normalisation), "concat"
  (facejax's LFW default for the 2018 models) or "none". Distance: "euclidean"
  (squared L2 between unit vectors, insightface's) or "cosine".

The result is `<out_dir>/bin-<set name>@<folder>[+settings]_<step>.json` with a ROC PNG.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from facejax import errors
from facejax.data import datasets, input_pipeline, verification_bin
from facejax.evaluation import lfw_eval, metrics as metrics_lib, registry
from facejax.evaluation import results as results_lib

NUM_FOLDS = 10
# insightface's name for summing the two embeddings; facejax's is "average".
FLIP_ALIASES = {"sum": "average"}


def bin_pair_set(vbin: verification_bin.VerificationBin,
                 num_folds: int = NUM_FOLDS) -> lfw_eval.PairSet:
  """The pairs of a loaded `.bin`: image 2i against 2i+1, `num_folds` consecutive folds."""
  p = vbin.num_pairs
  if p < num_folds:
    raise errors.DataError(f"{vbin.path}: {p} pairs, fewer than the {num_folds} folds")
  return lfw_eval.PairSet(
      paths=[f"{vbin.path}[{i}]" for i in range(2 * p)],
      index_a=np.arange(0, 2 * p, 2, dtype=np.int64),
      index_b=np.arange(1, 2 * p, 2, dtype=np.int64),
      issame=vbin.issame, folds=metrics_lib.make_folds(p, num_folds), encoded=vbin.images)


def bin_preprocessing(config: ml_collections.ConfigDict, standardization: str,
                      source_crop: int = 0) -> input_pipeline.Preprocessing:
  """A `.bin` face (after an optional centre crop) resized whole to the net's input."""
  size = datasets.hw(config.data.image_size)
  return input_pipeline.Preprocessing(image_size=size, resize_size=size, source_crop=source_crop,
                                      standardization=standardization, random_flip=False,
                                      random_crop=False)


def _bin_folder(vbin_path: str) -> str:
  """The results' folder slug of a `.bin`: its directory (two `lfw.bin`s stay apart)."""
  return results_lib.folder_slug(os.path.dirname(os.path.abspath(vbin_path)))


def bin_key(config, vbin_path: str, name: str, step, **settings) -> results_lib.ResultKey:
  return results_lib.ResultKey(f"bin-{name}", step, _bin_folder(vbin_path),
                               results_lib.settings_tags(config, **settings))


@registry.register("verification_bin")
class VerificationBinEvaluator(registry.Evaluator):
  """One insightface `.bin` set (module docstring).

  Keyword arguments:
    path: the `.bin` file (required). A relative path names a file of
      `config.data.train_dir` when there is one there (insightface ships lfw.bin,
      cfp_fp.bin and agedb_30.bin beside train.rec), else of the working directory.
    set_name: the name in results and logs (default: the file name, "agedb_30").
    flip: "sum" | "concat" | "none" (default config.eval.flip).
    distance, subtract_mean, standardization: default config.eval / config.data.
    source_crop: centre crop (pixels) of the set's images before the resize; 0: none.
    num_folds: 10, as insightface.
  """

  def __init__(self, config, embedder, *, name, out_dir, path: str | None = None,
               set_name: str | None = None, flip: str | None = None,
               distance: str | None = None, subtract_mean: bool | None = None,
               standardization: str | None = None, source_crop: int = 0,
               num_folds: int = NUM_FOLDS):
    super().__init__(config, embedder, name=name, out_dir=out_dir)
    if not path:
      raise errors.ConfigError(f"config.evals.{name}.path: the .bin file is required")
    path = os.fspath(path)
    train_dir = config.data.get("train_dir")
    if not os.path.isabs(path) and train_dir and os.path.exists(os.path.join(train_dir, path)):
      path = os.path.join(train_dir, path)
    self.path = path
    self.set_name = set_name or os.path.splitext(os.path.basename(self.path))[0]
    self.options = lfw_eval.resolve_for(config, name, dict(
        distance=distance, flip=FLIP_ALIASES.get(flip, flip), subtract_mean=subtract_mean,
        standardization=standardization))
    if not (isinstance(source_crop, int) and source_crop >= 0):
      raise errors.ConfigError(f"config.evals.{name}.source_crop={source_crop!r}: pixels >= 0")
    if not (isinstance(num_folds, int) and num_folds >= 2):
      raise errors.ConfigError(f"config.evals.{name}.num_folds={num_folds!r}: an int >= 2")
    self.source_crop, self.num_folds = source_crop, num_folds
    self._pair_set = None

  def pair_set(self) -> lfw_eval.PairSet:
    """The set's pairs, read on first use and kept (encoded bytes only)."""
    if self._pair_set is None:
      self._pair_set = bin_pair_set(verification_bin.read_bin(self.path), self.num_folds)
    return self._pair_set

  def preprocessing(self) -> input_pipeline.Preprocessing:
    return bin_preprocessing(self.config, self.options.standardization, self.source_crop)

  def settings_key(self, step) -> results_lib.ResultKey:
    return results_lib.ResultKey(f"bin-{self.set_name}_settings", step, _bin_folder(self.path))

  def _run(self, embedder):
    pair_set = self.pair_set()
    prep = self.preprocessing()
    embedder = embedder.replace(flip=self.options.flip, preprocessing=prep)
    key = bin_key(self.config, self.path, self.set_name, embedder.step,
                  **self.options.key_settings())
    result = lfw_eval.evaluate_pair_set(
        self.config, pair_set, embedder=embedder, options=self.options,
        protocol=f"bin:{self.set_name}", out_dir=self.out_dir, key=key,
        title=f"{self.set_name}: {len(pair_set.issame)} pairs", image_root=self.path)
    return result.scalars(), result
