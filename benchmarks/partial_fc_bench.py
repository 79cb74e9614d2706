r"""Partial FC on 8 simulated CPU devices: step time and memory per device against the
number of classes C, with the replicated full head (facejax's classifier before Partial
FC) as the peer where it fits.

One step = the head's forward and backward on a global batch of embeddings [B, D]
(a fixed random batch: the backbone does not change with C), then SGD momentum 0.9
with weight decay 5e-4 on the sampled rows only (`partial_fc.optimizer_step`, the
trainer's update: the rows' slice is trained and written back in place), jitted
with the shardings the trainer uses (`sharding.state_shardings`: centers and momentum
split by rows). Memory per device is XLA's `memory_analysis()` of the compiled step:
arguments (this device's centers and momentum) + temporaries (the sampled centers,
logits, gradients).

  python benchmarks/partial_fc_bench.py                       # C = 100k, 1M, 10M; r = 0.1
  python benchmarks/partial_fc_bench.py --classes 1000000 --steps 5

The 10M point runs at D = 64 on this 24 GiB machine (10M x 512 fp32 centers and their
momentum are 41 GB); its D = 512 memory is compiled, not run.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import _common  # noqa: E402
from facejax import sharding  # noqa: E402
from facejax.losses import make_objective, partial_fc  # noqa: E402

GiB = 2**30


def build(num_classes, dim, batch, rate, mesh, replicated_head=False):
  n = mesh.devices.size
  if replicated_head:
    loss = dict(name="combined", features="features", scale=64.0, m1=1.0, m2=0.5, m3=0.0)
  else:
    loss = dict(name="partial_fc", sample_rate=rate)
  head = make_objective(ml_collections.ConfigDict(loss), num_classes=num_classes,
                        feature_dim=dim, num_shards=n)
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))
  x = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
  y = jax.ShapeDtypeStruct((batch,), jnp.int32)
  m = jax.ShapeDtypeStruct((batch,), jnp.bool_)

  def init(key):
    params = head.init({"params": key}, jnp.zeros((1, dim)), jnp.zeros((1, dim)),
                       labels=jnp.zeros((1,), jnp.int32), mask=jnp.zeros((1,), bool),
                       step=0)["params"]
    trainable = {"model": {}, "head": params}
    return {"head": params, "opt_state": tx.init(trainable)}

  abstract = jax.eval_shape(init, jax.random.key(0))
  replicated = NamedSharding(mesh, P())
  if replicated_head:
    shard = jax.tree.map(lambda _: replicated, abstract)
  else:
    named, opt = sharding.trainable_shardings({"model": {}, "head": abstract["head"]},
                                              abstract["opt_state"], tx, mesh)
    shard = {"head": named["head"], "opt_state": opt}

  def step(state, x, y, mask, key):
    # The trainer's update (`partial_fc.optimizer_step`): the sampled rows' slice of the
    # centers and momentum is gathered, trained and written back in place.
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      index = head.apply({}, y, mask, rngs={"sample": key}, method="sample")

      def loss_fn(t, head_kwargs):
        loss, _ = head.apply({"params": t["head"]}, x, x, labels=y, mask=mask, step=0,
                             **head_kwargs)
        return loss, None

      new, opt_state, loss, _, _ = partial_fc.optimizer_step(
          tx, {"model": {}, "head": state["head"]}, state["opt_state"], loss_fn, index)
    return {"head": new["head"], "opt_state": opt_state}, loss

  batch_sharding = NamedSharding(mesh, P("data"))
  jitted = jax.jit(step, in_shardings=(shard, batch_sharding, batch_sharding, batch_sharding,
                                       replicated),
                   out_shardings=(shard, replicated), donate_argnums=(0,))
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
  compiled = jitted.lower(abstract, x, y, m, key).compile()
  mem = compiled.memory_analysis()
  return jax.jit(init, out_shardings=shard), compiled, mem


def measure(num_classes, dim, batch, rate, steps, mesh, run=True, replicated_head=False):
  init, compiled, mem = build(num_classes, dim, batch, rate, mesh, replicated_head)
  per_device = (mem.argument_size_in_bytes + mem.temp_size_in_bytes) / GiB
  row = dict(args=mem.argument_size_in_bytes / GiB, temp=mem.temp_size_in_bytes / GiB,
             total=per_device, seconds=None)
  if not run:
    return row
  state = init(jax.random.key(0))
  rng = np.random.default_rng(0)
  sh = NamedSharding(mesh, P("data"))
  x = jax.device_put(rng.normal(size=(batch, dim)).astype(np.float32), sh)
  y = jax.device_put(rng.integers(0, num_classes, batch).astype(np.int32), sh)
  m = jax.device_put(np.ones(batch, bool), sh)
  times = []
  for s in range(steps + 1):
    t = time.perf_counter()
    state, loss = compiled(state, x, y, m, jax.random.key(s))
    jax.block_until_ready(loss)
    times.append(time.perf_counter() - t)
  row["seconds"] = float(np.median(times[1:]))
  row["loss"] = float(loss)
  del state
  return row


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--classes", default="100000,1000000,10000000")
  p.add_argument("--rate", type=float, default=0.1)
  p.add_argument("--batch", type=int, default=256, help="global batch (8 devices x 32)")
  p.add_argument("--steps", type=int, default=3)
  args = p.parse_args()
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  print("== Partial FC step on 8 simulated CPU devices ==")
  for line in _common.environment_lines({"jax": f"{jax.__version__} devices={jax.device_count()}"}):
    print(line)
  rows = []
  for c in (int(v) for v in args.classes.split(",")):
    # The widest D whose centers and momentum fit in a third of this machine's 24 GiB
    # (10M x 128 compiles to 1.8 GiB per device, 14 GiB in all, but its init ran out of memory).
    dim = next(d for d in (512, 256, 128, 64, 32) if c * d * 4 * 2 < 8 * GiB)
    head_gib = c * dim * 4 / GiB
    r = measure(c, dim, args.batch, args.rate, args.steps, mesh)
    rows.append([f"{c:,}", dim, f"PFC r={args.rate}", f"{head_gib:.2f}", f"{r['args']:.3f}",
                 f"{r['temp']:.3f}", f"{r['total']:.3f}", f"{r['seconds']:.3f}",
                 _common.loadavg().split()[0]])
    print(rows[-1], flush=True)
    if dim != 512:
      r = measure(c, 512, args.batch, args.rate, args.steps, mesh, run=False)
      rows.append([f"{c:,}", 512, f"PFC r={args.rate} (compiled only)",
                   f"{c * 512 * 4 / GiB:.2f}", f"{r['args']:.3f}", f"{r['temp']:.3f}",
                   f"{r['total']:.3f}", "-", "-"])
      print(rows[-1], flush=True)
    # The peer: the replicated full head, while its weights, momentum and gradient fit.
    if c * dim * 4 * 3 * 8 < 10 * GiB:
      r = measure(c, dim, args.batch, args.rate, args.steps, mesh, replicated_head=True)
      rows.append([f"{c:,}", dim, "replicated full head", f"{head_gib:.2f}", f"{r['args']:.3f}",
                   f"{r['temp']:.3f}", f"{r['total']:.3f}", f"{r['seconds']:.3f}",
                   _common.loadavg().split()[0]])
      print(rows[-1], flush=True)
    else:
      r = measure(c, dim, args.batch, args.rate, args.steps, mesh, run=False,
                  replicated_head=True)
      rows.append([f"{c:,}", dim, "replicated full head (compiled only)", f"{head_gib:.2f}",
                   f"{r['args']:.3f}", f"{r['temp']:.3f}", f"{r['total']:.3f}", "-", "-"])
      print(rows[-1], flush=True)
  print("\n== Results (GiB per device from XLA's memory analysis; s = median step) ==")
  _common.print_table(["classes", "D", "head", "centers GiB (all)", "args GiB/dev",
                       "temp GiB/dev", "total GiB/dev", "step s", "load1"], rows)


if __name__ == "__main__":
  main()
