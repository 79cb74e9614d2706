r"""Training-step throughput of FaceNet NN1: facejax (JAX/Flax) vs a PyTorch port.

One "step" is forward + backward + AdaGrad update on a P x K batch with the
batch-all triplet loss, in both frameworks:

* JAX: the project's own step (`facejax.train.make_jitted_step` over
  `make_mesh()`, state from `create_train_state`, optimizer from
  `facejax.optimizers.create_optimizer`), with `config.loss.name='batch_all'`
  (`facejax.losses.batch_all_triplet_loss`) and `config.optimizer` forced to
  AdaGrad lr 0.05 (the paper's) so both sides run the same optimizer. The
  facejax step also computes a few cheap metrics (grad norm, embedding spread).
* PyTorch: `TorchNN1` below, an independent port of the same architecture,
  the batch-all loss re-written in torch, and `torch.optim.Adagrad(lr=0.05,
  initial_accumulator_value=0.1, eps=1e-7)`. Before timing, the torch net is
  loaded with the Flax initial parameters and both forward passes and losses
  are compared on the benchmark batch (printed as max |diff|).

Both frameworks see the same synthetic batch (random standardised images,
labels = P identities x K images), so only compute is measured; the input
pipeline is benchmarked separately (`input_pipeline_bench.py`).

Configurations (`--configs`):
  cpu    configs/nn1.py:cpu  -- 96x96, conv width 0.5, maxout 1024, batch 32x4=128
  paper  configs/nn1.py      -- 220x220 paper NN1 (140M params), batch 4x4=16

Usage:
  python benchmarks/train_step_bench.py                       # both configs
  python benchmarks/train_step_bench.py --configs cpu --steps 20 --warmup 3
  python benchmarks/train_step_bench.py --configs paper --steps 3 --warmup 1

Timing: after JAX compilation (timed separately, never counted) and
`--warmup` untimed steps of each framework, the timed steps alternate
JAX, PyTorch, JAX, PyTorch, ... so that both see the same machine load (the
box may be shared). Reported per framework: median images/s and ms/step
(wall clock), median process CPU seconds per step (less sensitive to other
processes on the machine than wall time), and GFLOP/s achieved on the XLA
cost-analysis FLOP count of the compiled JAX step (the same count is used
for PyTorch, which runs the same arithmetic); then the JAX/PyTorch images/s
ratio (> 1: JAX faster). `--threads` sets `torch.set_num_threads`; XLA:CPU
sizes its own thread pool to the machine's cores.
"""

import argparse
import os
import statistics
import time

import numpy as np

from configs import common, nn1

# Sibling modules: `python benchmarks/<name>.py` puts this folder on sys.path.
# _common sets facejax's default XLA:CPU flags, before anything computes with JAX.
import _common

# name -> (configs/nn1.py variant, P identities, K images each, default steps, default warm-up)
CONFIGS = {
    "cpu": ("cpu", 32, 4, 10, 2),
    "paper": (None, 4, 4, 3, 1),
}


# ---------------------------------------------------------------------------
# PyTorch port.
# ---------------------------------------------------------------------------

def build_torch_model(conv_width: float, maxout_features: int, embedding_dim: int,
                      image_size: int):
  import torch
  from torch import nn

  def width(c):
    return max(1, int(round(c * conv_width)))

  class MaxoutLinear(nn.Module):
    """Linear to features*pieces units, max over adjacent groups of `pieces`."""

    def __init__(self, in_features, features, pieces=2):
      super().__init__()
      self.features, self.pieces = features, pieces
      self.linear = nn.Linear(in_features, features * pieces)

    def forward(self, x):
      y = self.linear(x)
      return y.view(y.shape[0], self.features, self.pieces).amax(dim=-1)

  class TorchNN1(nn.Module):
    # (name, out channels before width scaling, kernel); None = pool, "lrn" = LRN.
    LAYOUT = [("conv1", 64, 7), None, "lrn", ("conv2a", 64, 1), ("conv2", 192, 3), "lrn", None,
              ("conv3a", 192, 1), ("conv3", 384, 3), None,
              ("conv4a", 384, 1), ("conv4", 256, 3), ("conv5a", 256, 1), ("conv5", 256, 3),
              ("conv6a", 256, 1), ("conv6", 256, 3), None]

    def __init__(self):
      super().__init__()
      self.convs = nn.ModuleDict()
      layers = []
      cin, size = 3, image_size
      for item in self.LAYOUT:
        if item is None:
          layers.append(nn.MaxPool2d(3, stride=2, padding=1))
          size = (size + 2 - 3) // 2 + 1
        elif item == "lrn":
          layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))
        else:
          name, cout, k = item
          stride = 2 if name == "conv1" else 1
          conv = nn.Conv2d(cin, width(cout), k, stride=stride, padding=(k - 1) // 2)
          self.convs[name] = conv
          layers += [conv, nn.ReLU(inplace=True)]
          size = (size + 2 * ((k - 1) // 2) - k) // stride + 1
          cin = width(cout)
      self.features = nn.Sequential(*layers)
      self.flat_dim = cin * size * size
      self.fc1 = MaxoutLinear(self.flat_dim, maxout_features)
      self.fc2 = MaxoutLinear(maxout_features, maxout_features)
      self.fc7128 = nn.Linear(maxout_features, embedding_dim)

    def forward(self, x):  # x: [B, 3, H, W]
      x = self.features(x)
      # Flatten in H, W, C order so the fc1 weights line up with the Flax (NHWC) net.
      x = x.permute(0, 2, 3, 1).flatten(1)
      x = self.fc7128(self.fc2(self.fc1(x)))
      norm_sq = x.square().sum(dim=-1, keepdim=True)
      return x * torch.rsqrt(norm_sq.clamp_min(1e-10))

  return TorchNN1()


def torch_batch_all_triplet_loss(emb, labels, mask, margin: float = 0.2):
  """Batch-all triplet loss, mean over active triplets (as facejax's)."""
  import torch
  emb = torch.where(mask[:, None], emb, torch.zeros_like(emb))
  gram = emb @ emb.T
  sq = torch.diagonal(gram)
  dist = (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min(0.0)
  eye = torch.eye(emb.shape[0], dtype=torch.bool, device=emb.device)
  dist = torch.where(eye, torch.zeros_like(dist), dist)
  valid_pair = mask[:, None] & mask[None, :]
  same = labels[:, None] == labels[None, :]
  pos = valid_pair & same & ~eye
  neg = valid_pair & ~same
  valid = pos[:, :, None] & neg[:, None, :]
  raw = dist[:, :, None] - dist[:, None, :] + margin
  per = torch.where(valid, torch.relu(raw), torch.zeros_like(raw))
  num_active = (per > 0).sum()
  return per.sum() / num_active.clamp_min(1).to(per.dtype)


def load_flax_params_into_torch(model, params) -> None:
  """Copies Flax NN1 params (HWIO convs, [in, out] dense) into the torch port."""
  import torch
  with torch.no_grad():
    for name, conv in model.convs.items():
      conv.weight.copy_(torch.from_numpy(np.array(params[name]["kernel"]).transpose(3, 2, 0, 1).copy()))
      conv.bias.copy_(torch.from_numpy(np.array(params[name]["bias"])))
    for name, lin in (("fc1", model.fc1.linear), ("fc2", model.fc2.linear),
                      ("fc7128", model.fc7128)):
      p = params[name]["linear"] if name != "fc7128" else params[name]
      lin.weight.copy_(torch.from_numpy(np.array(p["kernel"]).T.copy()))
      lin.bias.copy_(torch.from_numpy(np.array(p["bias"])))


# ---------------------------------------------------------------------------
# Benchmarks.
# ---------------------------------------------------------------------------

def make_config(name: str, steps: int):
  variant, p, k, _, _ = CONFIGS[name]
  config = nn1.get_config(variant)
  config.num_identities, config.images_per_identity = p, k
  config.batch_size = p * k
  config.loss.name = "batch_all"
  # The paper's NN1 has no BatchNorm and neither has the PyTorch port; the
  # cpu training variant's opt-in BatchNorm is left out for a like-for-like step.
  config.model.batch_norm = False
  config.optimizer = common.optimizer("adagrad", 0.05, initial_accumulator_value=0.1, eps=1e-7)
  config.num_train_steps = steps
  return config


def synthetic_batch(config, seed=0):
  rng = np.random.default_rng(seed)
  s = config.data.image_size
  b = config.batch_size
  images = rng.standard_normal((b, s, s, 3), dtype=np.float32) * 0.5
  labels = np.repeat(np.arange(config.num_identities, dtype=np.int32), config.images_per_identity)
  mask = np.ones((b,), bool)
  return {"image": images, "label": labels, "mask": mask}


def time_interleaved(runners: dict, warmup: int, steps: int) -> dict:
  """Warm-up, then timed steps alternating between frameworks (same load for both).

  Returns {name: (wall seconds per step list, process CPU seconds per step list)}.
  """
  for run_one in runners.values():
    for _ in range(warmup):
      run_one()
  out = {name: ([], []) for name in runners}
  for _ in range(steps):
    for name, run_one in runners.items():
      c0, t0 = time.process_time(), time.perf_counter()
      run_one()
      t1, c1 = time.perf_counter(), time.process_time()
      out[name][0].append(t1 - t0)
      out[name][1].append(c1 - c0)
  return out


def flops_of(compiled) -> float | None:
  try:
    ca = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(ca, (list, tuple)):
    ca = ca[0] if ca else None
  if not ca:
    return None
  return float(ca.get("flops", 0.0)) or None


def setup_jax(config, batch_np, torch_model=None):
  import jax
  from facejax import optimizers
  from facejax import train as ftrain
  from facejax.losses import batch_all_triplet_loss
  from facejax.models import create_model

  model = create_model(config.model)
  tx = optimizers.create_optimizer(config.optimizer, config.num_train_steps)
  state = ftrain.create_train_state(config, model, tx, jax.random.key(config.seed))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))

  check = None
  if torch_model is not None:
    import torch
    load_flax_params_into_torch(torch_model, state.params)
    emb_jax = np.asarray(jax.jit(lambda p, x: model.apply({"params": p}, x)[0])(
        state.params, batch_np["image"]))
    loss_jax = float(batch_all_triplet_loss(emb_jax, batch_np["label"], batch_np["mask"],
                                            margin=config.loss.margin)[0])
    with torch.no_grad():
      emb_t = torch_model(torch.from_numpy(batch_np["image"]).permute(0, 3, 1, 2).contiguous())
      loss_t = float(torch_batch_all_triplet_loss(emb_t, torch.from_numpy(batch_np["label"]),
                                                  torch.from_numpy(batch_np["mask"]),
                                                  config.loss.margin))
    check = (float(np.max(np.abs(emb_jax - emb_t.numpy()))), loss_jax, loss_t)

  mesh = ftrain.make_mesh()
  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  step_fn = ftrain.make_jitted_step(config, model, tx, mesh)
  batch = ftrain.shard_batch(batch_np, mesh)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  flops = flops_of(compiled)

  holder = {"state": state}

  def run_one():
    new_state, metrics = compiled(holder["state"], batch)
    jax.block_until_ready((new_state, metrics))
    holder["state"] = new_state
    holder["loss"] = metrics["loss"]

  return run_one, dict(compile_s=compile_s, flops=flops, n_params=n_params, check=check,
                      holder=holder)


def setup_torch(model, config, batch_np):
  import torch
  opt = torch.optim.Adagrad(model.parameters(), lr=0.05, initial_accumulator_value=0.1, eps=1e-7)
  images = torch.from_numpy(batch_np["image"]).permute(0, 3, 1, 2).contiguous()
  labels = torch.from_numpy(batch_np["label"])
  mask = torch.from_numpy(batch_np["mask"])
  model.train()
  holder = {}

  def run_one():
    opt.zero_grad(set_to_none=True)
    loss = torch_batch_all_triplet_loss(model(images), labels, mask, config.loss.margin)
    loss.backward()
    opt.step()
    holder["loss"] = float(loss.detach())

  return run_one, holder


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", default="cpu,paper",
                      help="comma-separated subset of: " + ", ".join(CONFIGS))
  parser.add_argument("--steps", type=int, default=None,
                      help="timed steps per framework (default: cpu 10, paper 3)")
  parser.add_argument("--warmup", type=int, default=None,
                      help="untimed steps after compilation (default: cpu 2, paper 1)")
  parser.add_argument("--threads", type=int, default=os.cpu_count(),
                      help="torch.set_num_threads (XLA:CPU sizes its own pool to the cores)")
  parser.add_argument("--no_torch", action="store_true", help="skip the PyTorch column")
  args = parser.parse_args(argv)
  names = [c.strip() for c in args.configs.split(",") if c.strip()]
  for n in names:
    if n not in CONFIGS:
      parser.error(f"unknown config {n!r}; choose from {', '.join(CONFIGS)}")

  import jax
  import flax
  import optax
  try:
    import tensorflow as tf
    tf_version = tf.__version__
  except ImportError:
    tf_version = "not installed"
  torch = None
  torch_msg = "skipped (--no_torch)"
  if not args.no_torch:
    try:
      import torch  # noqa: F811
      torch.set_num_threads(args.threads)
      torch_msg = f"{torch.__version__} (num_threads={torch.get_num_threads()})"
    except ImportError as e:
      torch = None
      torch_msg = (f"NOT importable ({e}); PyTorch column skipped. Install the CPU wheel "
                   "with: /work/venv/bin/pip install torch==2.13.0")
  print("== NN1 training-step benchmark ==")
  for line in _common.environment_lines({
      "jax": f"{jax.__version__} backend={jax.default_backend()} devices={jax.device_count()}",
      "flax/optax": f"{flax.__version__}/{optax.__version__}",
      "tensorflow": tf_version, "torch": torch_msg}):
    print(line)
  print()

  rows, ratios = [], []
  for name in names:
    _, _, _, d_steps, d_warmup = CONFIGS[name]
    steps = args.steps if args.steps is not None else d_steps
    warmup = args.warmup if args.warmup is not None else d_warmup
    config = make_config(name, steps + warmup)
    batch_np = synthetic_batch(config)
    size = config.data.image_size
    print(f"-- config {name}: {size}x{size}, conv_width {config.model.conv_width}, maxout "
          f"{config.model.maxout_features}, batch {config.num_identities}x"
          f"{config.images_per_identity}={config.batch_size}, warmup {warmup}, steps {steps}")

    torch_model = None
    if torch is not None:
      torch.manual_seed(0)
      torch_model = build_torch_model(config.model.conv_width, config.model.maxout_features,
                                      config.model.embedding_dim, size)

    rj_run, rj = setup_jax(config, batch_np, torch_model)
    flops = rj["flops"]
    print(f"   JAX params: {rj['n_params']:,}; compile {rj['compile_s']:.1f} s (not timed)")
    print("   XLA cost-analysis FLOPs per step: "
          + (f"{flops / 1e9:.1f} GFLOP ({flops / config.batch_size / 1e9:.2f} GFLOP/image)"
             if flops else "unavailable"))
    runners = {"jax": rj_run}
    if torch_model is not None:
      n_torch = sum(p.numel() for p in torch_model.parameters())
      print(f"   PyTorch params: {n_torch:,} -> "
            + ("same as Flax" if n_torch == rj["n_params"] else "MISMATCH"))
      if n_torch != rj["n_params"]:
        raise SystemExit("parameter counts differ: the PyTorch port is not the same net")
      diff, lj, lt = rj["check"]
      print(f"   same init weights: max |emb_jax - emb_torch| = {diff:.2e}; "
            f"batch-all loss jax {lj:.6f} torch {lt:.6f}")
      rt_run, rt = setup_torch(torch_model, config, batch_np)
      runners["torch"] = rt_run
    else:
      print("   PyTorch: skipped (torch not importable)")

    load_before = _common.loadavg()
    print(f"   load before timing: {load_before}")
    timings = time_interleaved(runners, warmup, steps)
    load_after = _common.loadavg()
    print(f"   load after timing:  {load_after}")
    med = {}
    for fw, (wall, cpu) in timings.items():
      med[fw] = statistics.median(wall)
      print(f"   {fw:5s} step wall s: " + ", ".join(f"{t:.3f}" for t in wall)
            + " | process CPU s: " + ", ".join(f"{t:.2f}" for t in cpu))
      rows.append([name, f"{size}x{size}", config.batch_size, fw,
                   f"{rj['n_params']:,}" if fw == "jax" else f"{n_torch:,}",
                   f"{config.batch_size / med[fw]:.1f}", f"{med[fw] * 1e3:.0f}",
                   f"{statistics.median(cpu):.2f}",
                   f"{flops / med[fw] / 1e9:.1f}" if flops else "n/a", load_before])
    if "torch" in med:
      print(f"   loss after {warmup + steps} steps: jax {float(rj['holder']['loss']):.4f} "
            f"torch {rt['loss']:.4f}")
      ratios.append([name, f"{size}x{size}", f"{med['torch'] / med['jax']:.2f}"])
    else:
      ratios.append([name, f"{size}x{size}", "n/a (no torch)"])
    del torch_model, runners
    print()

  print("== Results: median over timed steps (JAX and PyTorch steps interleaved); "
        "GFLOP/s = XLA step FLOPs / median wall time ==")
  _common.print_table(
      ["config", "input", "batch", "framework", "params", "img/s", "ms/step",
       "CPU s/step", "GFLOP/s", "load before"], rows)
  print()
  _common.print_table(["config", "input", "JAX/PyTorch img/s ratio"], ratios)
  print(f"load average at end: {_common.loadavg()}")


if __name__ == "__main__":
  main()
