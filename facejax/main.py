"""Trains and evaluates a facejax experiment.

  python -m facejax.main --config=configs/nn1.py:smoke --workdir=/tmp/nn1_smoke

Running the same command again resumes from the latest checkpoint in
`--workdir`. Override any config key with `--config.<key>=<value>`. On a TPU
pod or a SLURM job, run the same command in every process (see
facejax/distributed.py and launch/).
"""

import logging as logging_std

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from facejax import distributed, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and eval results.")
config_flags.DEFINE_config_file("config", None, "Experiment config file (`path.py[:arg]`).",
                                lock_config=True)
flags.DEFINE_enum("distributed", "auto", distributed.MODES,
                  "auto: join the other processes when SLURM, a Cloud TPU VM, JAX_COORDINATOR_"
                  "ADDRESS or the three flags below say so; off: single process.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (explicit cluster).")
flags.DEFINE_integer("num_processes", None, "Number of processes (explicit cluster).")
flags.DEFINE_integer("process_id", None, "This process's index (explicit cluster).")
flags.DEFINE_enum("cpu_collectives", None, ["gloo", "mpi"],
                  "Cross-process collectives for multi-process CPU runs.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(logging_std.Filter):
  """Drops INFO chatter of Orbax/TensorStore internals; keeps their warnings."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or "/orbax/" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  logging.get_absl_handler().addFilter(_QuietLibraries())
  distributed.maybe_initialize(FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                               cpu_collectives=FLAGS.cpu_collectives)
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
  app.run(main)


if __name__ == "__main__":
  run()
