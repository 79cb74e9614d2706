"""Command-line evaluation of a checkpoint on LFW or on any identity folder.

  python -m facejax.evaluation --config=configs/nn1.py:smoke --workdir=W \
      [--step=N] [--protocol=view2|dev_test|view1|dev_train] [--distance=euclidean|cosine] \
      [--flip=none|concat|average] [--subtract_mean] [--standardization=fixed|prewhiten]

  python -m facejax.evaluation --config=... --workdir=W --identity_folder=DIR \
      [--num_pairs=6000 --pairs_seed=0 | --pairs_file=FILE]

Prints the per-fold table and the summary, and writes JSON + ROC PNG (and, for an identity
folder, the drawn pairs in pairs.txt format) to --out_dir or <workdir>/eval, named after what
they measured (`facejax.evaluation.results`): another folder or setting never replaces the
`lfw_<step>.json` the tools take their threshold from. A progress bar shows the embedding; a
user error (no checkpoint, missing data) prints one line and exits with status 2.
"""

from absl import flags
from ml_collections import config_flags

from facejax import cli
from facejax.data.input_pipeline import STANDARDIZATIONS
from facejax.evaluation.identity_pairs import IdentityFolderOptions, evaluate_identity_folder
from facejax.evaluation.lfw_eval import DISTANCES, FLIPS, PROTOCOLS, evaluate_lfw

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
flags.DEFINE_enum("protocol", "view2", PROTOCOLS, "LFW pairs protocol (view1 = dev_test).")
flags.DEFINE_enum("distance", None, DISTANCES, "Override config.eval.distance.")
flags.DEFINE_enum("flip", None, FLIPS, "Override config.eval.flip.")
flags.DEFINE_boolean("subtract_mean", None, "Override config.eval.subtract_mean.")
flags.DEFINE_enum("standardization", None, STANDARDIZATIONS,
                  "Override config.data.standardization: fixed (x-127.5)/128 or prewhiten.")
flags.DEFINE_string("identity_folder", None,
                    "Evaluate on balanced pairs of this <dir>/<identity>/<image> tree, not LFW.")
flags.DEFINE_integer("num_pairs", 6000, "Pairs to draw from --identity_folder (10 folds).")
flags.DEFINE_integer("pairs_seed", 0, "Seed of the --identity_folder pair draw.")
flags.DEFINE_string("pairs_file", None,
                    "Reuse these --identity_folder pairs (pairs.txt format) instead of drawing.")
flags.DEFINE_string("out_dir", None, "Where to write JSON/PNG (default <workdir>/eval).")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  settings = dict(distance=FLAGS.distance, flip=FLAGS.flip, subtract_mean=FLAGS.subtract_mean,
                  standardization=FLAGS.standardization, out_dir=FLAGS.out_dir)
  if FLAGS.identity_folder:
    options = IdentityFolderOptions(num_pairs=FLAGS.num_pairs, seed=FLAGS.pairs_seed,
                                    pairs_file=FLAGS.pairs_file, **settings)
    result = evaluate_identity_folder(FLAGS.config, FLAGS.identity_folder, options,
                                      workdir=FLAGS.workdir, step=FLAGS.step)
  else:
    result = evaluate_lfw(FLAGS.config, protocol=FLAGS.protocol, workdir=FLAGS.workdir,
                          step=FLAGS.step, **settings)
  print(result.fold_table())
  print(result.summary())
  if result.skipped:
    shown = "\n  ".join(f"{path} ({why})" for path, why in list(result.skipped.items())[:20])
    more = f"\n  ... and {len(result.skipped) - 20} more" if len(result.skipped) > 20 else ""
    print(f"skipped {len(result.skipped)} unreadable files:\n  {shown}{more}")
  print(f"wrote {result.json_path} and {result.roc_path}"
        + (f"; pairs {result.pairs_file}" if FLAGS.identity_folder else ""))


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
