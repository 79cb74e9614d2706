"""Command-line LFW evaluation of a checkpoint.

  python -m facejax.evaluation --config=configs/nn1.py:smoke --workdir=W \
      [--step=N] [--protocol=view2|dev_test|dev_train] [--distance=euclidean|cosine] \
      [--flip=none|concat|average] [--subtract_mean]
"""

from absl import app, flags
from ml_collections import config_flags

from facejax.evaluation.lfw_eval import PROTOCOLS, evaluate_lfw

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
flags.DEFINE_enum("protocol", "view2", PROTOCOLS, "LFW pairs protocol.")
flags.DEFINE_enum("distance", None, ["euclidean", "cosine"], "Override config.eval.distance.")
flags.DEFINE_enum("flip", None, ["none", "concat", "average"], "Override config.eval.flip.")
flags.DEFINE_boolean("subtract_mean", None, "Override config.eval.subtract_mean.")
flags.DEFINE_string("out_dir", None, "Where to write JSON/PNG (default <workdir>/eval).")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  result = evaluate_lfw(FLAGS.config, workdir=FLAGS.workdir, step=FLAGS.step,
                        protocol=FLAGS.protocol, distance=FLAGS.distance, flip=FLAGS.flip,
                        subtract_mean=FLAGS.subtract_mean, out_dir=FLAGS.out_dir)
  print(result.summary())
  print(f"wrote {result.json_path} and {result.roc_path}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
