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

from facejax import cli, errors
from facejax.data import input_pipeline
from facejax.distances import fold_distances
from facejax.evaluation import lfw_eval, metrics as metrics_lib
from facejax.evaluation import results as results_lib

DEFAULT_SETTINGS = tuple(
    (distance, flip, subtract_mean)
    for subtract_mean, flip, distance in itertools.product(
        (False, True), ("none", "concat"), ("euclidean", "cosine")))


def evaluate_settings(config: ml_collections.ConfigDict, *, workdir: str | None = None,
                      step: int | None = None, variables: dict | None = None,
                      protocol: str = "view2",
                      settings=DEFAULT_SETTINGS) -> tuple[list[dict], dict]:
  """Scores `settings` [(distance, flip, subtract_mean)] from one embedding pass.

  Returns (rows, info): one row per setting with accuracy ± std, VAL ± std @
  FAR, AUC, EER, threshold and the ROC; info holds the step, pair and image
  counts and the embedding time.
  """
  for distance, flip, _ in settings:
    if distance not in lfw_eval.DISTANCES or flip not in ("none", "concat"):
      raise errors.ConfigError(f"setting ({distance!r}, {flip!r}): distance must be one of "
                       f"{lfw_eval.DISTANCES} and flip 'none' or 'concat'")
  protocol = lfw_eval.canonical_protocol(protocol)
  # flip="concat" gives [e, e_flipped]: every setting is scored from this one pass.
  options = lfw_eval.EvalOptions.resolve(config, flip="concat")
  embedder = lfw_eval.make_embedder(config, options, workdir=workdir, step=step,
                                    variables=variables)
  step = embedder.step
  pair_set, _, image_root = lfw_eval.lfw_pair_set(config, protocol)
  table = input_pipeline.ImageTable(pair_set.paths, replacements=pair_set.replacements)
  start = time.perf_counter()
  both = embedder.embed_table(table, desc=f"embed {protocol} (+ mirror)")
  seconds = time.perf_counter() - start
  dim = both.shape[1] // 2
  ia, ib, folds = pair_set.index_a, pair_set.index_b, pair_set.folds
  rows = []
  for distance, flip, subtract_mean in settings:
    emb = both if flip == "concat" else both[:, :dim]
    dist = fold_distances(emb[ia], emb[ib], folds, distance, subtract_mean)
    v = metrics_lib.evaluate_verification(dist, pair_set.issame, folds=folds,
                                          far_target=config.eval.far_target)
    rows.append({"distance": distance, "flip": flip, "subtract_mean": subtract_mean,
                 "accuracy": v.accuracy_mean, "accuracy_std": v.accuracy_std,
                 "val": v.val_mean, "val_std": v.val_std, "far": v.far_mean,
                 "auc": v.auc, "eer": v.eer, "threshold": v.best_threshold,
                 "roc_fpr": v.roc_fpr.tolist(), "roc_tpr": v.roc_tpr.tolist()})
  num_images = len(pair_set.paths)
  info = {"protocol": protocol, "step": step, "num_pairs": len(ia), "num_images": num_images,
          "embed_seconds": seconds, "images_per_second": 2 * num_images / seconds,
          "standardization": config.data.standardization,
          "image_dir": str(image_root)}
  return rows, info


def format_table(rows: list[dict]) -> str:
  lines = ["| distance | flip | mean sub. | accuracy | VAL@FAR=1e-3 | AUC | EER |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['distance']} | {r['flip']} | {'yes' if r['subtract_mean'] else 'no'} | "
                 f"{r['accuracy']:.4f} ± {r['accuracy_std']:.4f} | "
                 f"{r['val']:.4f} ± {r['val_std']:.4f} (FAR {r['far']:.5f}) | "
                 f"{r['auc']:.4f} | {r['eer']:.4f} |")
  return "\n".join(lines)


def write(rows, info, out_dir: str, config: ml_collections.ConfigDict) -> tuple[str, str]:
  """Writes the table's JSON and overlaid ROC into `out_dir`; returns their paths."""
  epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
  key = results_lib.ablation_key(config, info["protocol"], info["step"],
                                 image_root=info["image_dir"])
  paths = key.paths(out_dir)
  if jax.process_index() == 0:
    epath.Path(paths.json).write_text(json.dumps({"info": info, "settings": rows}, indent=1))
    curves = {f"{r['distance']}, flip={r['flip']}{', mean sub.' if r['subtract_mean'] else ''}"
              f" (acc {r['accuracy']:.4f})": (np.array(r["roc_fpr"]), np.array(r["roc_tpr"]))
              for r in rows}
    metrics_lib.plot_roc(curves, paths.roc, title=f"LFW {info['protocol']}")
  return paths.json, paths.roc


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string("workdir", None, "Workdir holding checkpoints/ (trained or converted).")
  flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
  flags.DEFINE_enum("protocol", "view2", lfw_eval.PROTOCOLS, "LFW pairs protocol.")
  flags.DEFINE_string("out_dir", None, "Where to write JSON/PNG (default <workdir>/eval).")
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  rows, info = evaluate_settings(FLAGS.config, workdir=FLAGS.workdir, step=FLAGS.step,
                                 protocol=FLAGS.protocol)
  out_dir = results_lib.output_dir(FLAGS.workdir, FLAGS.out_dir)
  json_path, roc_path = write(rows, info, out_dir, FLAGS.config)
  print(f"LFW {info['protocol']}: {info['num_pairs']} pairs, {info['num_images']} images "
        f"embedded with their mirror images in {info['embed_seconds']:.0f} s "
        f"({info['images_per_second']:.1f} img/s)")
  print(format_table(rows))
  print(f"wrote {json_path} and {roc_path}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
