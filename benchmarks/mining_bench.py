r"""Triplet mining at scale: time and memory of the triplet losses at FaceNet batch sizes.

For B in (180, 1800, 7200) embeddings of D = 128 (random unit vectors) with
P x K labels (K = 40 images per identity as in the FaceNet paper, and K = 4;
`labels = arange(B) // K`, so B = 180 with K = 40 has a last identity of 20),
the jitted `facejax.losses` semi_hard / batch_all / batch_hard losses are timed
alone (`loss`) and with the gradient w.r.t. the embeddings
(`jax.value_and_grad`, `loss+grad`): median wall time of `--reps` runs after
`--warmup` untimed ones (`--reps_7200` at B = 7,200), compile time excluded.

Memory, two ways:
* XLA: `compiled.memory_analysis()` of the executable, temp + argument +
  output bytes (what XLA allocates for one call);
* process: growth of the peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`)
  over the timed runs, measured against the high-water mark after compiling,
  so it is 0 when a call needs less than compilation did (small B).

Every (B, K, loss, implementation) runs in a subprocess of its own, so each
RSS figure is its own.

Peers, measured in the same run:
* the previous `[B, B, B]` formulation of batch-all and semi-hard (copied
  below from `facejax/losses/triplet.py` before it went O(B^2)), timed at
  B = 180; at 1,800 and 7,200 it is only compiled, and the table gives the
  memory XLA would need for it ("does not fit");
* a straightforward float64 numpy implementation (anchor by anchor, explicit
  [positives, negatives] matrices, no sorting) up to B = 1,800, for
  correctness only (loss, valid/active counts); TF-addons'
  `triplet_semihard_loss` is not installed here.
Batch-hard did not change (it was already O(B^2)) and has no peer row.

Finally, the losses are compiled (not run) on 4 fake CPU devices with the
embeddings sharded over a 1-D "data" mesh, as `facejax.train` does, and the
per-device XLA memory, the shape of the per-device distance matrix and the
collectives in the HLO are printed.

Usage:
  python benchmarks/mining_bench.py
  python benchmarks/mining_bench.py --batch_sizes 180,1800 --ks 40 --losses semi_hard --reps 5
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

# Sibling modules: `python benchmarks/<name>.py` puts this folder on sys.path.
# _common sets facejax's default XLA:CPU flags, before anything computes with JAX.
import _common

DIM = 128
MARGIN = 0.2
LOSSES = ("semi_hard", "batch_all", "batch_hard")
CUBIC = ("semi_hard", "batch_all")  # Losses whose previous form built [B, B, B].
# The [B, B, B] peer is run only where XLA's buffers for it stay under this (B = 180
# needs 0.05 GB, 1,800 needs 47 GB, more than this machine's RAM).
PEER_MAX_GB = 4.0
NUMPY_MAX_BATCH = 1800  # float64 per-anchor numpy check (~1 s per loss at 1,800; 20 s at 7,200).
SHARDED_DEVICES = 4


def make_batch(batch, k, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, DIM))
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  labels = (np.arange(batch) // k).astype(np.int32)
  return x.astype(np.float32), labels, np.ones(batch, bool)


# ---------------------------------------------------------------------------
# Peer 1: the [B, B, B] formulation (facejax/losses/triplet.py before the
# O(B^2) rewrite), on the same shared helpers.
# ---------------------------------------------------------------------------


def cubic_batch_all(embeddings, labels, mask, margin=0.2):
  from facejax.losses import triplet as t
  dist, pos_mask, neg_mask = t._prepare(embeddings, labels, mask)
  valid = pos_mask[:, :, None] & neg_mask[:, None, :]
  raw = dist[:, :, None] - dist[:, None, :] + margin
  return t._hinge_loss(raw, valid, dist, pos_mask, neg_mask, divide_by_active=True)


def cubic_semi_hard(embeddings, labels, mask, margin=0.2):
  import jax.numpy as jnp
  from facejax.losses import triplet as t
  dist, pos_mask, neg_mask = t._prepare(embeddings, labels, mask)
  d_ap = dist[:, :, None]
  d_an = dist[:, None, :]
  farther = neg_mask[:, None, :] & (d_an > d_ap)
  nearest_farther, has_farther = t._masked_min(
      jnp.broadcast_to(d_an, farther.shape), farther, axis=-1)
  largest_neg, has_neg = t._masked_max(dist, neg_mask, axis=-1)
  chosen = jnp.where(has_farther, nearest_farther, largest_neg[:, None])
  pair_valid = pos_mask & has_neg[:, None]
  raw = dist - chosen + margin
  return t._hinge_loss(raw, pair_valid, dist, pos_mask, neg_mask, divide_by_active=False)


CUBIC_FNS = {"batch_all": cubic_batch_all, "semi_hard": cubic_semi_hard}


# ---------------------------------------------------------------------------
# Peer 2: float64 numpy brute force (correctness only).
# ---------------------------------------------------------------------------


def numpy_reference(name, x, labels, margin):
  """(loss, num_valid, num_active) in float64, one anchor at a time (no padding).

  Per anchor: its positives' and negatives' distances, the explicit
  [positives, negatives] hinge matrix (batch-all), the nearest negative
  farther than each positive or else the farthest one (semi-hard), the
  hardest positive and negative (batch-hard). No sorting or searching.
  """
  x = np.asarray(x, np.float64)
  sq = np.sum(x * x, axis=1)
  total, num_valid, num_active = 0.0, 0, 0
  for a in range(len(labels)):
    d = np.maximum(sq[a] + sq - 2.0 * (x @ x[a]), 0.0)
    pos = labels == labels[a]
    pos[a] = False
    neg = labels != labels[a]
    d_ap, d_an = d[pos], d[neg]
    if not d_ap.size or not d_an.size:
      continue
    if name == "batch_all":
      hinge = d_ap[:, None] - d_an[None, :] + margin
      num_valid += hinge.size
      total += hinge[hinge > 0].sum()
      num_active += int(np.sum(hinge > 0))
      continue
    if name == "semi_hard":
      farther = d_an[None, :] > d_ap[:, None]
      nearest = np.where(farther, d_an[None, :], np.inf).min(1)
      hinge = np.maximum(d_ap - np.where(farther.any(1), nearest, d_an.max()) + margin, 0.0)
    elif name == "batch_hard":
      hinge = np.maximum(np.array([d_ap.max() - d_an.min() + margin]), 0.0)
    else:
      raise ValueError(name)
    num_valid += hinge.size
    num_active += int(np.sum(hinge > 0))
    total += hinge.sum()
  denominator = num_active if name == "batch_all" else num_valid
  return total / max(denominator, 1), num_valid, num_active


# ---------------------------------------------------------------------------
# Workers (one subprocess each).
# ---------------------------------------------------------------------------


def _fns(name, impl):
  import jax
  from facejax.losses import TRIPLET_LOSSES
  fn = TRIPLET_LOSSES[name] if impl == "new" else CUBIC_FNS[name]
  loss = jax.jit(lambda e, l, m: fn(e, l, m, MARGIN))
  loss_grad = jax.jit(jax.value_and_grad(lambda e, l, m: fn(e, l, m, MARGIN), has_aux=True))
  return fn, loss, loss_grad


def _xla_bytes(compiled):
  m = compiled.memory_analysis()
  return m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes


def _maxrss_bytes():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB.


def _meminfo_bytes(key):
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith(key + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def run_worker(batch, k, name, impl, peer_max_gb, warmup, reps):
  import jax
  import jax.numpy as jnp

  x_np, labels_np, mask_np = make_batch(batch, k)
  args = (jnp.asarray(x_np), jnp.asarray(labels_np), jnp.asarray(mask_np))
  fn, loss, loss_grad = _fns(name, impl)
  out = {"batch": batch, "k": k, "loss": name, "impl": impl}
  compiled = {}
  for mode, f in (("loss", loss), ("grad", loss_grad)):
    t0 = time.perf_counter()
    compiled[mode] = f.lower(*args).compile()
    out[f"compile_s_{mode}"] = time.perf_counter() - t0
    out[f"xla_bytes_{mode}"] = _xla_bytes(compiled[mode])
  if impl == "cubic" and out["xla_bytes_grad"] > peer_max_gb * 1e9:
    out["skipped"] = True  # Compiled only: XLA's memory_analysis says what it would need.
    return out

  baseline = _maxrss_bytes()
  for mode in ("loss", "grad"):
    c = compiled[mode]
    for _ in range(warmup):
      jax.block_until_ready(c(*args))
    times = []
    for _ in range(reps):
      t0 = time.perf_counter()
      jax.block_until_ready(c(*args))
      times.append(time.perf_counter() - t0)
    out[f"ms_{mode}"] = 1e3 * statistics.median(times)
    out[f"ms_all_{mode}"] = [round(1e3 * t, 1) for t in times]
    out[f"rss_growth_{mode}"] = _maxrss_bytes() - baseline

  (value, metrics), grad = compiled["grad"](*args)
  out["value"] = float(value)
  out["num_valid"] = int(metrics["num_valid_triplets"])
  out["num_active"] = int(metrics["num_active_triplets"])
  if batch <= NUMPY_MAX_BATCH:
    ref_loss, ref_valid, ref_active = numpy_reference(name, x_np, labels_np, MARGIN)
    out["numpy"] = {"rel_diff": abs(float(value) - ref_loss) / abs(ref_loss),
                    "valid_diff": out["num_valid"] - ref_valid,
                    "active_diff": out["num_active"] - ref_active}
  if impl == "cubic":  # Same process: compare with the new implementation.
    _, _, new_grad_fn = _fns(name, "new")
    (new_value, new_metrics), new_grad = new_grad_fn(*args)
    scale = float(jnp.max(jnp.abs(grad)))
    out["vs_new"] = {
        "loss_rel_diff": abs(float(new_value) - float(value)) / abs(float(value)),
        "grad_max_diff_rel": float(jnp.max(jnp.abs(new_grad - grad))) / scale,
        "metrics_equal": all(int(new_metrics[m]) == int(metrics[m])
                             for m in ("num_valid_triplets", "num_active_triplets")),
    }
  return out


def run_sharded_worker(batch_sizes, losses):
  """Per-device memory and sharding of the losses on a 4-device 'data' mesh (compile only)."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  sharding = NamedSharding(mesh, P("data"))
  rows = []
  for batch in batch_sizes:
    args = (jax.ShapeDtypeStruct((batch, DIM), jnp.float32, sharding=sharding),
            jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=sharding),
            jax.ShapeDtypeStruct((batch,), jnp.bool_, sharding=sharding))
    impls = [("new", name) for name in losses]
    impls += [("cubic", name) for name in losses if name in CUBIC]
    for impl, name in impls:
      _, _, loss_grad = _fns(name, impl)
      compiled = loss_grad.lower(*args).compile()
      hlo = compiled.as_text()
      dots = sorted(set(re.findall(r"= (f32\[\d+,\d+\])\S* dot\(", hlo)))
      sorts = sorted(set(re.findall(r"= (s32\[\d+,\d+\])\S* sort\(", hlo)))
      collectives = sorted(set(
          f"{kind} {re.sub(r'{[^}]*}', '', shape)}" for shape, kind in
          re.findall(r"= (\([^)]*\)|\S+) (all-gather|all-reduce|reduce-scatter|all-to-all)\(",
                     hlo)))
      rows.append({"batch": batch, "loss": name, "impl": impl, "devices": jax.device_count(),
                   "xla_bytes_grad": _xla_bytes(compiled), "dots": dots, "sorts": sorts,
                   "collectives": collectives})
  return rows


# ---------------------------------------------------------------------------
# Driver.
# ---------------------------------------------------------------------------


def _spawn(argv, extra_env=None):
  env = dict(os.environ, **(extra_env or {}))
  proc = subprocess.run([sys.executable, os.path.abspath(__file__)] + argv, env=env,
                        capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"worker {argv} failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _gb(n):
  return f"{n / 1e9:.3f} GB" if n < 1e11 else f"{n / 1e9:,.0f} GB"


def _ms(x):
  return f"{x:,.1f}" if x < 100 else f"{x:,.0f}"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch_sizes", default="180,1800,7200")
  parser.add_argument("--ks", default="40,4", help="images per identity")
  parser.add_argument("--losses", default=",".join(LOSSES))
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--reps", type=int, default=3, help="timed runs (B < 7,200)")
  parser.add_argument("--reps_7200", type=int, default=1, help="timed runs at B >= 7,200")
  parser.add_argument("--peer_max_gb", type=float, default=PEER_MAX_GB,
                      help="run the [B,B,B] peer only if XLA needs less than this")
  parser.add_argument("--no_sharded", action="store_true", help="skip the 4-device compile")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)

  if args.worker:  # "B,K,loss,impl,run,warmup,reps" or "sharded:B1,B2:losses"
    if args.worker.startswith("sharded:"):
      _, sizes, losses = args.worker.split(":")
      result = run_sharded_worker([int(b) for b in sizes.split(",")], losses.split(","))
    else:
      b, k, name, impl, peer_max_gb, warmup, reps = args.worker.split(",")
      result = run_worker(int(b), int(k), name, impl, float(peer_max_gb), int(warmup), int(reps))
    print(json.dumps(result))
    return

  import jax
  batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  ks = [int(k) for k in args.ks.split(",")]
  losses = [n for n in args.losses.split(",") if n]
  print("== Triplet mining benchmark (CPU) ==")
  for line in _common.environment_lines({
      "jax": f"{jax.__version__} backend={jax.default_backend()} devices={jax.device_count()}",
      "numpy": np.__version__,
      "setup": f"D={DIM}, margin={MARGIN}, float32, labels=arange(B)//K, one subprocess per row",
  }):
    print(line)
  print(flush=True)

  t_start = time.perf_counter()
  results = []
  for batch in batch_sizes:
    reps = args.reps_7200 if batch >= 7200 else args.reps
    for k in ks:
      for name in losses:
        impls = ["new"] + (["cubic"] if name in CUBIC else [])
        for impl in impls:
          r = _spawn(["--worker", f"{batch},{k},{name},{impl},{args.peer_max_gb},{args.warmup},"
                      f"{reps}"])
          results.append(r)
          if not r.get("skipped"):
            print(f"  B={batch} K={k} {name} {impl}: loss {r['ms_all_loss']} ms, "
                  f"loss+grad {r['ms_all_grad']} ms, compile {r['compile_s_loss']:.1f}"
                  f"+{r['compile_s_grad']:.1f} s, loss {r['value']:.6f}, "
                  f"valid/active {r['num_valid']:,}/{r['num_active']:,}", flush=True)
          else:
            print(f"  B={batch} K={k} {name} {impl}: compiled only, XLA needs "
                  f"{_gb(r['xla_bytes_loss'])} / {_gb(r['xla_bytes_grad'])}", flush=True)
  print(f"  load average after timing: {_common.loadavg()}")
  print()

  headers = ["B", "K", "loss", "implementation", "loss ms", "loss+grad ms",
             "XLA mem loss", "XLA mem loss+grad", "peak RSS growth loss",
             "peak RSS growth loss+grad", "check"]
  rows = []
  for r in results:
    impl = "O(B^2) sort+search" if r["impl"] == "new" else "old [B,B,B]"
    if r["loss"] == "batch_hard":
      impl = "O(B^2) (unchanged)"
    if "ms_loss" in r:
      check = ""
      if "numpy" in r:
        n = r["numpy"]
        check = (f"numpy f64: loss rel {n['rel_diff']:.1e}, valid/active counts "
                 f"{n['valid_diff']:+d}/{n['active_diff']:+d}")
      if "vs_new" in r:
        v = r["vs_new"]
        check += (f"; new vs old: loss rel {v['loss_rel_diff']:.1e}, grad "
                  f"{v['grad_max_diff_rel']:.1e}, counts "
                  f"{'equal' if v['metrics_equal'] else 'DIFFER'}")
      rows.append([r["batch"], r["k"], r["loss"], impl, _ms(r["ms_loss"]), _ms(r["ms_grad"]),
                   _gb(r["xla_bytes_loss"]), _gb(r["xla_bytes_grad"]),
                   _gb(r["rss_growth_loss"]), _gb(r["rss_growth_grad"]), check])
    else:
      ram = _meminfo_bytes("MemTotal")
      fits = ram is None or r["xla_bytes_grad"] < ram
      why = "not run" if fits else "does not fit"
      rows.append([r["batch"], r["k"], r["loss"], impl, why, why,
                   _gb(r["xla_bytes_loss"]), _gb(r["xla_bytes_grad"]), "-", "-",
                   f"needs {_gb(r['xla_bytes_grad'])}"
                   + (f" > {_gb(ram)} RAM" if not fits else f" > --peer_max_gb")
                   + f"; one f32 [B,B,B] alone is {_gb(4 * r['batch'] ** 3)}"])
  print("| " + " | ".join(headers) + " |")
  print("|" + "|".join(" --- " for _ in headers) + "|")
  for row in rows:
    print("| " + " | ".join(str(c) for c in row) + " |")
  print()
  print("XLA mem = temp + argument + output bytes of the compiled executable "
        "(memory_analysis); peak RSS growth = ru_maxrss growth over the timed runs, "
        "above the high-water mark left by compilation.")

  if not args.no_sharded:
    sizes = [b for b in batch_sizes if b >= 1800] or batch_sizes
    flags = os.environ.get("XLA_FLAGS", "")
    sharded = _spawn(
        ["--worker", f"sharded:{','.join(map(str, sizes))}:{','.join(losses)}"],
        {"XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={SHARDED_DEVICES}",
         "JAX_PLATFORMS": "cpu"})
    print()
    print(f"Sharded over a {SHARDED_DEVICES}-device 'data' mesh (fake CPU devices, compiled "
          "only), value_and_grad, per device:")
    print()
    print("| B | loss | implementation | XLA mem per device (loss+grad) | "
          "per-device distance block | per-device sort |")
    print("| --- | --- | --- | --- | --- | --- |")
    collectives = {}
    for s in sharded:
      impl = "O(B^2)" if s["impl"] == "new" else "old [B,B,B]"
      # The forward distance matrix is the dot whose output has B columns.
      block = [d for d in s["dots"] if d.endswith(f",{s['batch']}]")]
      print(f"| {s['batch']} | {s['loss']} | {impl} | {_gb(s['xla_bytes_grad'])} | "
            f"{', '.join(block)} | {', '.join(s['sorts']) or '-'} |")
      collectives.setdefault(s["batch"], set()).update(s["collectives"])
    print()
    for batch, names in collectives.items():
      print(f"collectives in the HLO at B={batch} (union over the rows): "
            f"{'; '.join(sorted(names))}")
  print()
  print(f"total wall time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
  main()
