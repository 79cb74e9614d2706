"""One process of a multi-process CPU training run (driven by tests/multiprocess_test.py).

  python tests/multiprocess_check.py PROCESS_ID NUM_PROCESSES PORT WORKDIR OUT.npz STEPS [pfc]

NUM_PROCESSES=1 with PORT=0 is the single-process reference. The local device
count comes from XLA_FLAGS (--xla_force_host_platform_device_count). Writes
this process's final params, batch stats and optimizer state (its own
replica), the process/device counts and the last loss to OUT.npz. With `pfc` the loss is
a Partial FC head (sample rate 0.5) whose rows are split over all processes' devices:
each process also writes the rows it holds of every sharded array (`rows_<i>`, from row
`rows_<i>_start`).
"""

import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # for the `configs` package


def main():
  pid, nproc, port, workdir, out, steps = sys.argv[1:7]
  pfc = sys.argv[7:8] == ["pfc"]
  from facejax import distributed
  if int(nproc) > 1:
    distributed.maybe_initialize(coordinator_address=f"localhost:{port}",
                                 num_processes=int(nproc), process_id=int(pid),
                                 cpu_collectives="gloo")
  import jax
  from configs import common, nn1
  from facejax import train
  c = nn1.get_config("smoke")
  c.data.data_dir = os.environ["FACEJAX_DATA_DIR"]
  # Batch-all is continuous in the embeddings (no mining flips) and SGD keeps
  # float noise float-sized, so meshes of different shapes agree to rounding.
  c.loss.name = "batch_all"
  if pfc:
    c.loss = common.loss("partial_fc", sample_rate=0.5)
    c.data.sampling = "shuffle"
  # s = 64 margin logits give large gradients: a smaller step keeps this tiny net from
  # collapsing (which the divergence guard would stop).
  c.optimizer = common.optimizer("sgd", 0.002 if pfc else 0.05, momentum=0.9)
  c.num_train_steps = int(steps)
  c.checkpoint.every_steps = 2
  with c.unlocked():
    del c.evals["lfw_view2"]  # LFW DevTest (10 folds) at the end only
  state = train.train_and_evaluate(c, workdir)
  leaves = jax.tree.leaves((state.model_vars(), state.head, state.opt_state))
  replicated = [x for x in leaves if x.sharding.is_fully_replicated]
  arrays = {f"array_{i}": np.asarray(x.addressable_data(0)) for i, x in enumerate(replicated)}
  for i, x in enumerate(x for x in leaves if not x.sharding.is_fully_replicated):
    shards = sorted(x.addressable_shards, key=lambda sh: sh.index[0].start)
    arrays[f"rows_{i}"] = np.concatenate([np.asarray(sh.data) for sh in shards])
    arrays[f"rows_{i}_start"] = np.int64(shards[0].index[0].start)
  np.savez(out, process_count=jax.process_count(), device_count=jax.device_count(),
           local_device_count=jax.local_device_count(), step=int(state.step), **arrays)


if __name__ == "__main__":
  main()
