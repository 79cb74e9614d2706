r"""Embed LFW once, score every evaluation setting: davidsandberg's ablation table.

  python -m facejax.evaluation.ablation --config=configs/inception_resnet_v1_finetune.py \
      --workdir=/tmp/facenet_20180408 --config.data.lfw_image_dir=/data/lfw_mtcnn_160

Flip, distance and mean subtraction only change what is done with the
embeddings, so the images go through the net once, with their mirror
images (flip="concat" returns [e, e_flipped]), and each setting is scored
from those: flip="none" uses e, flip="concat" [e, e_flipped], exactly as
`evaluate_lfw` would compute them. Writes `<out_dir>/lfw_<protocol>_settings[@<folder>]_<step>.json`
(`results.ablation_key`; out_dir defaults to `<workdir>/eval`) and an overlaid ROC plot.
"""

from __future__ import annotations

import itertools
import json
import time

import jax
import ml_collections
import numpy as np
from absl import flags
from etils import epath
from ml_collections import config_flags

from facejax import cli, errors, quantization
from facejax.data import input_pipeline
from facejax.distances import fold_distances
from facejax.evaluation import lfw_eval, metrics as metrics_lib, registry
from facejax.evaluation import results as results_lib

DEFAULT_SETTINGS = tuple(
    (distance, flip, subtract_mean)
    for subtract_mean, flip, distance in itertools.product(
        (False, True), ("none", "concat"), ("euclidean", "cosine")))


def score_settings(config: ml_collections.ConfigDict, pair_set: lfw_eval.PairSet, embedder,
                   settings=DEFAULT_SETTINGS, *, desc: str = "embed (+ mirror)",
                   quantizations=("none",)) -> tuple[list[dict], dict]:
  """Scores `settings` [(distance, flip, subtract_mean)] of any pairs from one embedding pass,
  each once per entry of `quantizations` ("int8": from the int8 codes of the embedding the
  setting uses, `quantization.int8_roundtrip`, as `tools embed --quantize=int8` stores it).

  `embedder` holds the net and the preprocessing of the pairs' images. Returns (rows, info):
  one row per setting with accuracy ± std, VAL ± std @ FAR, AUC, EER, threshold and the
  ROC; info holds the pair and image counts and the embedding time.
  """
  for distance, flip, _ in settings:
    if distance not in lfw_eval.DISTANCES or flip not in ("none", "concat"):
      raise errors.ConfigError(f"setting ({distance!r}, {flip!r}): distance must be one of "
                               f"{lfw_eval.DISTANCES} and flip 'none' or 'concat'")
  for quantize in quantizations:  # before the images are embedded
    quantization.check_quantization(quantize)
  # flip="concat" gives [e, e_flipped]: every setting is scored from this one pass.
  embedder = embedder.replace(flip="concat")
  table = input_pipeline.ImageTable(pair_set.paths, encoded=pair_set.encoded,
                                    replacements=pair_set.replacements)
  start = time.perf_counter()
  both = embedder.embed_table(table, desc=desc)
  seconds = time.perf_counter() - start
  dim = both.shape[1] // 2
  ia, ib, folds = pair_set.index_a, pair_set.index_b, pair_set.folds
  rows = []
  for (distance, flip, subtract_mean), quantize in itertools.product(settings, quantizations):
    emb = both if flip == "concat" else both[:, :dim]
    if quantize == "int8":
      emb = quantization.int8_roundtrip(emb)
    dist = fold_distances(emb[ia], emb[ib], folds, distance, subtract_mean)
    v = metrics_lib.evaluate_verification(dist, pair_set.issame, folds=folds,
                                          far_target=config.eval.far_target,
                                          test_folds=pair_set.test_folds)
    rows.append({"distance": distance, "flip": flip, "subtract_mean": subtract_mean,
                 "quantize": quantize,
                 "accuracy": v.accuracy_mean, "accuracy_std": v.accuracy_std,
                 "val": v.val_mean, "val_std": v.val_std, "far": v.far_mean,
                 "auc": v.auc, "eer": v.eer, "threshold": v.best_threshold,
                 "roc_fpr": v.roc_fpr.tolist(), "roc_tpr": v.roc_tpr.tolist()})
  num_images = len(pair_set.paths)
  info = {"step": embedder.step, "num_pairs": int(pair_set.scored().sum()),
          "num_images": num_images, "embed_seconds": seconds,
          "images_per_second": 2 * num_images / seconds,
          "standardization": embedder.standardization}
  return rows, info


def evaluate_settings(config: ml_collections.ConfigDict, *, workdir: str | None = None,
                      step: int | None = None, variables: dict | None = None,
                      protocol: str = "view2", settings=DEFAULT_SETTINGS,
                      quantizations=("none",)) -> tuple[list[dict], dict]:
  """`score_settings` on LFW pairs of `protocol` (info adds the protocol and image folder)."""
  protocol = lfw_eval.canonical_protocol(protocol)
  options = lfw_eval.EvalOptions.resolve(config, flip="concat")
  embedder = lfw_eval.make_embedder(config, options, workdir=workdir, step=step,
                                    variables=variables)
  pair_set, _, image_root = lfw_eval.lfw_pair_set(config, protocol)
  rows, info = score_settings(config, pair_set, embedder, settings,
                              desc=f"embed {protocol} (+ mirror)", quantizations=quantizations)
  info.update(protocol=protocol, image_dir=str(image_root))
  return rows, info


@registry.register("ablation")
class AblationEvaluator(registry.Evaluator):
  """Every (distance, flip, mean subtraction) setting of another pair evaluator's pairs,
  from one embedding pass.

  Keyword arguments:
    of: the pair evaluator: a name in config.evals, or a spec dict (type "lfw",
      "verification_bin" or "identity_pairs" with its keyword arguments).
    settings: (distance, flip, subtract_mean) triples (default: all 8).
  Scalars: "<distance>/<flip>[/mean_sub]/accuracy" for each setting.
  """

  def __init__(self, config, embedder, *, name, out_dir, of=None, settings=DEFAULT_SETTINGS):
    super().__init__(config, embedder, name=name, out_dir=out_dir)
    if isinstance(of, str):
      if of not in (config.get("evals") or {}):
        raise errors.ConfigError(f"config.evals.{name}.of={of!r}: no such evaluator in "
                                 "config.evals")
      of_name, spec = of, config.evals[of]
    elif of:
      of_name, spec = f"{name}.of", of
    else:
      raise errors.ConfigError(f"config.evals.{name}.of: the pair evaluator to ablate (a name "
                               "in config.evals or a spec) is required")
    self.inner = registry.build(of_name, spec, config, out_dir=None)
    if not hasattr(self.inner, "pair_set"):
      raise errors.ConfigError(f"config.evals.{name}.of: type {self.inner.type_name!r} has no "
                               "pairs to ablate (use lfw, verification_bin or identity_pairs)")
    self.settings = tuple(tuple(s) for s in settings)

  def _run(self, embedder):
    embedder = embedder.replace(preprocessing=self.inner.preprocessing())
    rows, info = score_settings(self.config, self.inner.pair_set(), embedder, self.settings,
                                desc=f"{self.name} (+ mirror)")
    key = self.inner.settings_key(embedder.step)
    info.update(protocol=key.base.removesuffix("_settings"))
    if self.out_dir:
      info["json_path"], info["roc_path"] = write(rows, info, self.out_dir, key,
                                                  title=info["protocol"])
    scalars = {}
    for r in rows:
      tag = f"{r['distance']}/{r['flip']}" + ("/mean_sub" if r["subtract_mean"] else "")
      scalars[f"{tag}/accuracy"] = r["accuracy"]
    return scalars, (rows, info)

  def summary(self) -> str:
    rows, info = self.last_result
    return f"{self.name} ({info['protocol']}, {info['num_pairs']} pairs):\n{format_table(rows)}"


def format_table(rows: list[dict]) -> str:
  lines = ["| distance | flip | mean sub. | stored as | accuracy | VAL@FAR=1e-3 | AUC | EER |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    stored = {"none": "float32", "int8": "int8"}[r.get("quantize", "none")]
    lines.append(f"| {r['distance']} | {r['flip']} | {'yes' if r['subtract_mean'] else 'no'} | "
                 f"{stored} | "
                 f"{r['accuracy']:.4f} ± {r['accuracy_std']:.4f} | "
                 f"{r['val']:.4f} ± {r['val_std']:.4f} (FAR {r['far']:.5f}) | "
                 f"{r['auc']:.4f} | {r['eer']:.4f} |")
  return "\n".join(lines)


def write(rows, info, out_dir: str, key: results_lib.ResultKey, *, title: str
          ) -> tuple[str, str]:
  """Writes the table's JSON and overlaid ROC (titled `title`) into `out_dir` as `key`;
  returns their paths."""
  epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
  paths = key.paths(out_dir)
  if jax.process_index() == 0:
    epath.Path(paths.json).write_text(json.dumps({"info": info, "settings": rows}, indent=1))
    curves = {f"{r['distance']}, flip={r['flip']}{', mean sub.' if r['subtract_mean'] else ''}"
              f"{', int8' if r.get('quantize') == 'int8' else ''} (acc {r['accuracy']:.4f})":
              (np.array(r["roc_fpr"]), np.array(r["roc_tpr"])) for r in rows}
    metrics_lib.plot_roc(curves, paths.roc, title=title)
  return paths.json, paths.roc


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string("workdir", None, "Workdir holding checkpoints/ (trained or converted).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_enum("protocol", "view2", lfw_eval.PROTOCOLS, "LFW pairs protocol.")
  flags.DEFINE_string("out_dir", None, "Where to write JSON/PNG (default <workdir>/eval).")
  flags.DEFINE_list("quantize", ["none"], "Score each setting from these stored forms too: "
                    "none (float32), int8 (facejax.quantization's codes).")
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  rows, info = evaluate_settings(FLAGS.config, workdir=FLAGS.workdir, step=FLAGS.step,
                                 protocol=FLAGS.protocol, quantizations=FLAGS.quantize)
  out_dir = results_lib.output_dir(FLAGS.workdir, FLAGS.out_dir)
  key = results_lib.ablation_key(FLAGS.config, info["protocol"], info["step"],
                                 image_root=info["image_dir"])
  json_path, roc_path = write(rows, info, out_dir, key, title=f"LFW {info['protocol']}")
  print(f"LFW {info['protocol']}: {info['num_pairs']} pairs, {info['num_images']} images "
        f"embedded with their mirror images in {info['embed_seconds']:.0f} s "
        f"({info['images_per_second']:.1f} img/s)")
  print(format_table(rows))
  print(f"wrote {json_path} and {roc_path}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
