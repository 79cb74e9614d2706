"""Trains and evaluates a facejax experiment.

  python -m facejax.main --config=configs/nn1.py:smoke [--workdir=/tmp/nn1_smoke]

Without `--workdir`, the run goes to `workdirs/<config>[_<variant>]` under the
current directory (logged at start). Running the same command again resumes
from the newest checkpoint of the workdir. Override any config key with
`--config.<key>=<value>`. On a TPU pod or a SLURM job, run the same command in
every process (see facejax/distributed.py and launch/).
"""

import os

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from facejax import cli, distributed, train

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and eval "
                    "results (default: workdirs/<config>[_<variant>]).")
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
flags.mark_flags_as_required(["config"])


def default_workdir(config_spec: str) -> str:
  """`configs/nn1.py:smoke` -> `workdirs/nn1_smoke`; `configs/nn1.py` -> `workdirs/nn1`."""
  path, _, variant = config_spec.partition(":")
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join("workdirs", f"{name}_{variant}" if variant else name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Too many command-line arguments: {argv[1:]}")
  workdir = FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
  distributed.maybe_initialize(FLAGS.distributed, coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
                               cpu_collectives=FLAGS.cpu_collectives)
  logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
               jax.devices())
  logging.info("Workdir: %s%s", os.path.abspath(workdir),
               "" if FLAGS.workdir else " (default; set --workdir to choose)")
  train.train_and_evaluate(FLAGS.config, workdir)


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
