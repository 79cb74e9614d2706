"""Trains and evaluates a facejax experiment.

  python -m facejax.main --config=configs/nn1.py:smoke --workdir=/tmp/nn1_smoke

Running the same command again resumes from the latest checkpoint in
`--workdir`. Override any config key with `--config.<key>=<value>`.
"""

import logging as logging_std

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from facejax import train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and eval results.")
config_flags.DEFINE_config_file("config", None, "Experiment config file (`path.py[:arg]`).",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging_std.Filter):
  """Drops INFO chatter of Orbax/TensorStore internals; keeps their warnings."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
