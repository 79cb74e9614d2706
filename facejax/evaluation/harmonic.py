r"""Harmonic embeddings on LFW: v1 against v1, v2 against v2, and across the versions.

  python -m facejax.evaluation.harmonic --v1_config=configs/nn1.py:cpu --v1_workdir=/tmp/v1 \
      --v2_config=configs/nn1.py:cpu --v2_workdir=/tmp/v2 [--protocol=view1]

Each net embeds the protocol's images once (its own config's preprocessing, flip and
standardisation); every row of the table scores the same pairs by the protocol (View 1:
the threshold chosen on DevTrain, applied to DevTest), with the first image of each pair
embedded by one version and the second by the other: "v1 / v2" is a v1 gallery searched
with v2 probes, "v2 / v1" the reverse. Distances are `config.eval.distance` of v2 (the
two versions must embed in the same size), no mean subtraction: the two versions'
means differ, and a cross pair must compare the raw embeddings. Writes
`<out_dir>/harmonic_<protocol>.json` (default out_dir: `<v2_workdir>/eval`).
"""

from __future__ import annotations

import dataclasses
import json
import os

import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from facejax import cli, errors
from facejax.data import input_pipeline
from facejax.distances import fold_distances
from facejax.evaluation import lfw_eval, metrics as metrics_lib
from facejax.evaluation import results as results_lib

PAIRINGS = (("v1", "v1"), ("v2", "v2"), ("v1", "v2"), ("v2", "v1"))


@dataclasses.dataclass(frozen=True)
class CrossRow:
  """One pairing: the first image of each pair embedded by `first`, the second by `second`."""
  first: str
  second: str
  accuracy: float  # mean over the scored folds (View 1: DevTest, threshold from DevTrain)
  threshold: float  # mean over the scored folds (View 1: the one DevTrain chose)
  auc: float
  val: float  # VAL@FAR=config.eval.far_target

  @property
  def name(self) -> str:
    return f"{self.first} / {self.second}"


def cross_version_rows(v1_config: ml_collections.ConfigDict, v1_workdir: str,
                       v2_config: ml_collections.ConfigDict, v2_workdir: str, *,
                       protocol: str = "view1", v1_step: int | None = None,
                       v2_step: int | None = None) -> tuple[list[CrossRow], dict]:
  """The rows of `PAIRINGS` on `protocol`'s pairs of v2's LFW images, and what was run."""
  protocol = lfw_eval.canonical_protocol(protocol)
  pair_set, _, image_root = lfw_eval.lfw_pair_set(v2_config, protocol)
  table = input_pipeline.ImageTable(pair_set.paths, replacements=pair_set.replacements)
  embeddings, steps = {}, {}
  for version, config, workdir, step in (("v1", v1_config, v1_workdir, v1_step),
                                         ("v2", v2_config, v2_workdir, v2_step)):
    options = lfw_eval.EvalOptions.resolve(config)
    embedder = lfw_eval.make_embedder(config, options, workdir=workdir, step=step,
                                      variables=None)
    embeddings[version] = embedder.embed_table(table, desc=f"embed {version}")
    steps[version] = embedder.step
  if embeddings["v1"].shape[1] != embeddings["v2"].shape[1]:
    raise errors.ConfigError(f"v1 embeds in {embeddings['v1'].shape[1]}-D and v2 in "
                             f"{embeddings['v2'].shape[1]}-D: the versions cannot be compared "
                             f"(with flip='concat' on one side only, set the same flip)")
  distance = v2_config.eval.distance
  rows = []
  for first, second in PAIRINGS:
    dist = fold_distances(embeddings[first][pair_set.index_a],
                          embeddings[second][pair_set.index_b], pair_set.folds, distance,
                          subtract_mean=False)
    v = metrics_lib.evaluate_verification(dist, pair_set.issame, folds=pair_set.folds,
                                          far_target=v2_config.eval.far_target,
                                          test_folds=pair_set.test_folds)
    rows.append(CrossRow(first, second, accuracy=float(v.accuracy_mean),
                         threshold=float(np.mean(v.fold_thresholds)), auc=float(v.auc),
                         val=float(v.val_mean)))
  info = {"protocol": protocol, "distance": distance, "image_root": str(image_root),
          "num_pairs": int(pair_set.scored().sum()), "v1_workdir": v1_workdir,
          "v1_step": steps["v1"], "v2_workdir": v2_workdir, "v2_step": steps["v2"],
          "far_target": v2_config.eval.far_target}
  return rows, info


def format_table(rows: list[CrossRow], far_target: float) -> str:
  lines = [f"{'first / second':<16} {'accuracy':>8} {'threshold':>9} {'AUC':>6} "
           f"{f'VAL@FAR={far_target:g}':>14}"]
  for r in rows:
    lines.append(f"{r.name:<16} {r.accuracy:>8.4f} {r.threshold:>9.4f} {r.auc:>6.4f} "
                 f"{r.val:>14.4f}")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def _define_flags():
  config_flags.DEFINE_config_file("v1_config", None, "v1's experiment config.", lock_config=True)
  config_flags.DEFINE_config_file("v2_config", None, "v2's experiment config.", lock_config=True)
  flags.DEFINE_string("v1_workdir", None, "v1's workdir (its checkpoints/).")
  flags.DEFINE_string("v2_workdir", None, "v2's workdir (its checkpoints/).")
  flags.DEFINE_integer("v1_step", None, "v1's checkpoint step (default: newest good).")
  flags.DEFINE_integer("v2_step", None, "v2's checkpoint step (default: newest good).")
  flags.DEFINE_enum("protocol", "view1", lfw_eval.PROTOCOLS, "LFW pairs protocol.")
  flags.DEFINE_string("out_dir", None, "Where to write the JSON (default <v2_workdir>/eval).")
  flags.mark_flags_as_required(["v1_config", "v2_config", "v1_workdir", "v2_workdir"])


def main(argv):
  del argv
  rows, info = cross_version_rows(FLAGS.v1_config, FLAGS.v1_workdir, FLAGS.v2_config,
                                  FLAGS.v2_workdir, protocol=FLAGS.protocol,
                                  v1_step=FLAGS.v1_step, v2_step=FLAGS.v2_step)
  out_dir = results_lib.output_dir(FLAGS.v2_workdir, FLAGS.out_dir)
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, f"harmonic_{info['protocol']}.json")
  with open(path, "w") as f:
    json.dump({**info, "rows": [dict(dataclasses.asdict(r), name=r.name) for r in rows]}, f,
              indent=1)
  print(f"LFW {info['protocol']} ({info['num_pairs']} scored pairs, {info['distance']}): "
        f"v1 {info['v1_workdir']} step {info['v1_step']}, v2 {info['v2_workdir']} step "
        f"{info['v2_step']}")
  print(format_table(rows, info["far_target"]))
  print(f"wrote {path}")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
