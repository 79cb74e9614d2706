"""Multi-host start-up: `jax.distributed.initialize()` when the environment calls for it.

facejax runs unchanged from one CPU to a pod: every process runs the same
program, reads its own slice of each global batch (`input_pipeline.train_batches`
with `jax.process_index()`), and the jitted step sees the global batch over
a mesh of all devices of all processes. This module only decides whether,
and how, to join the processes before the first JAX computation:

  explicit   --coordinator_address, --num_processes and --process_id (any
             cluster; with --cpu_collectives=gloo for multi-process CPU runs);
  SLURM      a job step with more than one task (srun): JAX reads SLURM_*;
  Cloud TPU  a TPU VM (single host or pod slice): JAX asks the metadata server;
  JAX_COORDINATOR_ADDRESS in the environment: JAX reads the rest from JAX_*.
Otherwise (a laptop, one GPU box, a single-host test) nothing is initialised.
"""

import glob
import importlib.util
import os

from absl import logging
import jax

MODES = ("auto", "off")


def detect_cluster(environ=None) -> str | None:
  """Which kind of multi-process environment this is, or None for a single process."""
  env = os.environ if environ is None else environ
  if int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1 and "SLURM_JOB_ID" in env:
    return "slurm"
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "jax_env"
  if environ is None and importlib.util.find_spec("libtpu") is not None and (
      glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
    return "cloud_tpu"
  return None


def maybe_initialize(mode: str = "auto", *, coordinator_address: str | None = None,
                     num_processes: int | None = None, process_id: int | None = None,
                     cpu_collectives: str | None = None) -> str | None:
  """Initialises JAX's distributed runtime if needed; returns what it detected (or None).

  Must run before any JAX computation (even `jax.devices()`).
  """
  if mode not in MODES:
    raise ValueError(f"--distributed={mode!r}: use one of {MODES}")
  if mode == "off":
    return None
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit) and None in explicit:
    raise ValueError("--coordinator_address, --num_processes and --process_id go together; got "
                     f"{coordinator_address!r}, {num_processes!r}, {process_id!r}")
  if cpu_collectives:
    # Cross-process collectives on CPU (tests, CPU clusters); accelerators have their own.
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  kind = "explicit" if coordinator_address else detect_cluster()
  if kind is None:
    return None
  if kind == "explicit":
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  else:
    jax.distributed.initialize()
  logging.info("JAX distributed (%s): process %d of %d, %d local / %d global devices", kind,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return kind
