"""Run by partial_fc_sharded_test.py with 8 simulated CPU devices; prints one JSON line.

A Partial FC head sharded over an 8-device mesh against references on one device:
* r = 1: the unsharded full margin head (`combined`, kernel = the PFC rows transposed):
  loss, the net's gradients (through one SGD-momentum step) and the head after the step;
* r = 0.1: the same head with its 8 row shards on one device (the same sample, unsharded)
  over 3 steps, which also shows the sample is a function of (seed, step) only;
* r = 0.1 with gradient accumulation (2 micro-steps per update), the same comparison;
and where the arrays live: the centers and their momentum split 8 ways by rows.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # for the `configs` package
from configs import common, nn1  # noqa: E402
from facejax import optimizers, train  # noqa: E402
from facejax.losses import make_objective  # noqa: E402
from facejax.models import create_model  # noqa: E402

NUM_CLASSES = 1000


def setup(loss, devices, num_shards, accumulate_steps=1):
  config = nn1.get_config("smoke")
  config.loss = common.loss(**loss)
  config.optimizer = common.optimizer("sgd", 0.05, momentum=0.9, weight_decay=5e-4,
                                      accumulate_steps=accumulate_steps)
  mesh = train.make_mesh(devices)
  model = create_model(config.model)
  objective = make_objective(config.loss, num_classes=NUM_CLASSES,
                             feature_dim=model.embedding_dim, num_shards=num_shards)
  tx = optimizers.create_optimizer(config.optimizer, config.num_train_steps)
  state = train.create_sharded_train_state(config, model, tx, jax.random.key(0), mesh, objective)
  return config, mesh, state, train.make_jitted_step(config, model, tx, mesh, objective), tx


def batches(config, n):
  rng = np.random.default_rng(0)
  b = config.batch_size
  for _ in range(n):
    yield {"image": rng.normal(size=(b, 32, 32, 3)).astype(np.float32),
           "label": rng.integers(0, NUM_CLASSES, b).astype(np.int32),
           "mask": np.arange(b) < b - 2}


def run(state, step, mesh, config, n):
  losses = []
  for batch in batches(config, n):
    state, metrics = step(state, train.shard_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
  return state, losses


def max_diff(a, b):
  """The largest difference of any leaf, relative to that leaf's largest magnitude."""
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))
                   / max(float(np.max(np.abs(np.asarray(y)))), 1e-12))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)) if np.size(y))


def sharded_against_one_device(out, name, loss, *, steps, accumulate_steps=1):
  """`steps` steps of a head sharded over 8 devices and of its 8 row shards on one device;
  records their losses and largest state difference under `name`. Returns the sharded
  state and its initial centers."""
  config, mesh8, s8, step8, _ = setup(loss, jax.devices(), 8, accumulate_steps)
  _, mesh1, s1, step1, _ = setup(loss, jax.devices()[:1], 8, accumulate_steps)
  w0 = np.asarray(jax.device_get(s8.head["weight"]))
  s8, l8 = run(s8, step8, mesh8, config, steps)
  s1, l1 = run(s1, step1, mesh1, config, steps)
  out[f"{name}_losses"] = [l8, l1]
  out[f"{name}_state_diff"] = max_diff(jax.device_get((s8.params, s8.head, s8.opt_state)),
                                       jax.device_get((s1.params, s1.head, s1.opt_state)))
  return s8, w0


def main():
  assert jax.device_count() == 8
  out = {}
  pfc1 = dict(name="partial_fc", sample_rate=1.0, row_multiple=1024)
  config, mesh8, s8, step8, _ = setup(pfc1, jax.devices(), 8)
  w = s8.head["weight"]
  out["weight_shard_shapes"] = sorted({tuple(s.data.shape) for s in w.addressable_shards})
  momentum = s8.opt_state[1][0].trace["head"]["weight"]
  out["momentum_shard_shapes"] = sorted({tuple(s.data.shape) for s in momentum.addressable_shards})
  # The unsharded full head, given the same centers.
  full = dict(name="combined", features="features", scale=64.0, m1=1.0, m2=0.5, m3=0.0)
  _, mesh1, s1, step1, tx1 = setup(full, jax.devices()[:1], 1)
  w_host = np.asarray(jax.device_get(w))
  replicated = jax.sharding.NamedSharding(mesh1, jax.sharding.PartitionSpec())
  s1 = s1.replace(head={"kernel": jax.device_put(w_host[:NUM_CLASSES].T, replicated)})
  s1 = s1.replace(opt_state=jax.device_put(tx1.init(s1.trainable()), replicated))
  s8b, l8 = run(s8, step8, mesh8, config, 1)
  s1b, l1 = run(s1, step1, mesh1, config, 1)
  out["r1_losses"] = [l8[0], l1[0]]
  out["r1_net_diff"] = max_diff(s8b.params, s1b.params)
  out["r1_head_diff"] = max_diff(np.asarray(jax.device_get(s8b.head["weight"]))[:NUM_CLASSES].T,
                                 jax.device_get(s1b.head["kernel"]))
  out["r1_head_moved"] = float(np.max(np.abs(np.asarray(jax.device_get(s8b.head["weight"]))
                                             - w_host)))
  # r = 0.1: sharded over 8 devices against 8 row shards on one device, 3 steps.
  pfc01 = dict(name="partial_fc", sample_rate=0.1, row_multiple=1024)
  s8, _ = sharded_against_one_device(out, "r01", pfc01, steps=3)
  out["r01_weight_shards_after"] = sorted(
      {tuple(s.data.shape) for s in s8.head["weight"].addressable_shards})
  # With 2 micro-steps per update (optax.MultiSteps), 4 steps: the accumulator is split by
  # rows like the centers, and only the rows the two windows sampled move.
  s8a, w0 = sharded_against_one_device(out, "acc", pfc01, steps=4, accumulate_steps=2)
  out["acc_grads_shard_shapes"] = sorted(
      {tuple(s.data.shape) for s in s8a.opt_state.acc_grads["head"]["weight"].addressable_shards})
  moved = np.any(np.asarray(jax.device_get(s8a.head["weight"])) != w0, axis=1)
  out["acc_rows_moved"] = int(moved.sum())
  from facejax import checkpointing
  host = jax.device_get(s8.train_vars())
  out["digest_sharded_equals_host"] = (checkpointing.tree_digest(s8.train_vars())
                                       == checkpointing.tree_digest(host))
  print(json.dumps(out))


if __name__ == "__main__":
  main()
