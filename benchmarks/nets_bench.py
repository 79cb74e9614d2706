r"""Per-net CPU benchmark: facejax (JAX/Flax) vs a PyTorch port of the same net.

For each net: parameter count (Flax "params" collection; torch `parameters()`,
BN running stats excluded on both sides), multiply-adds per image (XLA cost
`facejax.models.flops.multiply_adds`: conv + dense, as papers count them), and images/s of a
training step and of inference, for JAX and PyTorch, timed interleaved
(JAX, torch, JAX, torch, ...) in one process so both see the same machine load.

* Train step: forward + backward + plain SGD (lr 0.01, no momentum) on a P x K
  batch with the batch-all triplet loss (margin 0.2) on L2-normalised
  embeddings. JAX: `facejax.train.make_jitted_step` over `make_mesh()` with
  `config.loss.name='batch_all'`; PyTorch: the torch ports below, channels_last,
  `torch_batch_all_triplet_loss` from `train_step_bench.py`, `torch.optim.SGD`.
* Inference: jitted `model.apply(..., train=False)` vs torch `eval()` under
  `torch.inference_mode()`.
* Synthetic standardised images (no input pipeline), native input size.

The torch ports are independent re-implementations written for parameter-count
parity (asserted and printed; a mismatch is flagged with '!' in the table),
not for weight import. NN1 is `train_step_bench.build_torch_model`.

Usage:
  python benchmarks/nets_bench.py                       # all nets, batch 32, 3 steps
  python benchmarks/nets_bench.py --nets nn4,sphereface20 --steps 5 --batch 64
"""

import argparse
import os
import time

import numpy as np

from configs import common, nn1

# Sibling modules: `python benchmarks/<name>.py` puts this folder on sys.path.
# _common sets facejax's default XLA:CPU flags, before anything computes with JAX.
import _common
import train_step_bench as tsb

NETS = ["nn1", "nn2", "nn4", "nns2", "nn4_small2", "inception_resnet_v1", "sphereface20",
        "iresnet50", "mobilefacenet"]
# net -> default batch (P identities x K=4 images)
DEFAULT_BATCH = {"nn2": 16}
# Not in the default run (--nets names them): iresnet18/34/100/200, mobilefacenet_large.
EXTRA_NETS = ["iresnet18", "iresnet34", "iresnet100", "iresnet200", "mobilefacenet_large"]
K = 4

# ---------------------------------------------------------------------------
# PyTorch ports (NCHW logical layout, run channels_last).
# ---------------------------------------------------------------------------


def build_torch_net(name, model_kwargs, hw):
  import torch
  from torch import nn
  import torch.nn.functional as F

  def l2pool(x, stride, pad):
    s = F.avg_pool2d(x.square(), 3, stride, pad, count_include_pad=True) * 9.0
    return torch.sqrt(s + 1e-6)

  def maxpool(x, stride, pad):
    return F.max_pool2d(x, 3, stride, pad)

  def l2norm(x):
    return x * torch.rsqrt(x.square().sum(-1, keepdim=True).clamp_min(1e-10))

  def flat_hwc(x):
    return x.permute(0, 2, 3, 1).flatten(1)

  def infer_flat(features, c_in=3):
    with torch.no_grad():
      return features(torch.zeros(1, c_in, *hw)).flatten(1).shape[1]

  if name == "nn1":
    return tsb.build_torch_model(model_kwargs["conv_width"], model_kwargs["maxout_features"],
                                 model_kwargs["embedding_dim"], hw[0])

  if name in ("nn2", "nn4", "nns2"):
    from facejax.models.inception import NETS as SPECS
    spec = SPECS[name]

    class CU(nn.Module):  # conv (bias) -> ReLU
      def __init__(self, cin, cout, k, s=1):
        super().__init__()
        self.c = nn.Conv2d(cin, cout, k, s, (k - 1) // 2)

      def forward(self, x):
        return F.relu(self.c(x))

    class Incep(nn.Module):
      def __init__(self, cin, m):
        super().__init__()
        self.m, s = m, m.stride
        self.b1 = CU(cin, m.n1x1, 1) if m.n1x1 else None
        self.b3 = nn.Sequential(CU(cin, m.n3x3_reduce, 1), CU(m.n3x3_reduce, m.n3x3, 3, s)) if m.n3x3 else None
        self.b5 = nn.Sequential(CU(cin, m.n5x5_reduce, 1), CU(m.n5x5_reduce, m.n5x5, 5, s)) if m.n5x5 else None
        self.pp = CU(cin, m.pool_proj, 1) if m.pool_proj else None
        self.cout = m.n1x1 + m.n3x3 + m.n5x5 + (m.pool_proj or cin)

      def forward(self, x):
        out = [b(x) for b in (self.b1, self.b3, self.b5) if b is not None]
        y = maxpool(x, self.m.stride, 1) if self.m.pool == "max" else l2pool(x, self.m.stride, 1)
        out.append(self.pp(y) if self.pp is not None else y)
        return torch.cat(out, 1)

    class Features(nn.Module):
      def __init__(self):
        super().__init__()
        self.conv1 = CU(3, spec.conv1, 7, 2)
        self.conv2r = CU(spec.conv1, spec.conv2_reduce, 1)
        self.conv2 = CU(spec.conv2_reduce, spec.conv2, 3)
        self.lrn = nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)
        mods, c = [], spec.conv2
        for m in spec.modules:
          mods.append(Incep(c, m))
          c = mods[-1].cout
        self.mods = nn.Sequential(*mods)
        self.cout = c

      def forward(self, x):
        x = self.lrn(maxpool(self.conv1(x), 2, 1))
        x = maxpool(self.lrn(self.conv2(self.conv2r(x))), 2, 1)
        x = self.mods(x)
        return x.mean((2, 3)) if spec.head == "avg" else flat_hwc(x)

    class Net(nn.Module):
      def __init__(self):
        super().__init__()
        self.features = Features()
        d = self.features.cout if spec.head == "avg" else infer_flat(self.features)
        fcs = []
        for n in spec.fc_hidden:
          fcs += [nn.Linear(d, n), nn.ReLU()]
          d = n
        self.head = nn.Sequential(*fcs, nn.Linear(d, model_kwargs.get("embedding_dim", 128)))

      def forward(self, x):
        return l2norm(self.head(self.features(x)))

    return Net()

  if name == "nn4_small2":
    from facejax.models.openface import _INCEPTION, POOLING_GEOMETRIES
    geom = POOLING_GEOMETRIES["def"]

    def cbn(cin, cout, k, s=1):
      return nn.Sequential(nn.Conv2d(cin, cout, k, s, (k - 1) // 2), nn.BatchNorm2d(cout, 1e-5, 0.1),
                           nn.ReLU())

    def pad_to(x, h, w):
      dh, dw = h - x.shape[2], w - x.shape[3]
      return x if dh == dw == 0 else F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))

    class Incep(nn.Module):
      def __init__(self, cin, widths, pool):
        super().__init__()
        n1, n3r, n3, n5r, n5, proj, s = widths
        self.pool = pool
        self.b3 = nn.Sequential(cbn(cin, n3r, 1), cbn(n3r, n3, 3, s))
        self.b5 = nn.Sequential(cbn(cin, n5r, 1), cbn(n5r, n5, 5, s)) if n5 else None
        self.pp = cbn(cin, proj, 1) if proj else None
        self.b1 = cbn(cin, n1, 1) if n1 else None
        self.cout = n3 + n5 + (proj or cin) + n1

      def forward(self, x):
        out = [self.b3(x)]
        if self.b5 is not None:
          out.append(self.b5(x))
        kind, s, p = self.pool
        y = maxpool(x, s, p) if kind == "max" else l2pool(x, s, p)
        out.append(self.pp(y) if self.pp is not None else y)
        if self.b1 is not None:
          out.append(self.b1(x))
        h, w = out[0].shape[2:]
        return torch.cat([pad_to(o, h, w) for o in out], 1)

    class Net(nn.Module):
      def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = cbn(3, 64, 7, 2), cbn(64, 64, 1), cbn(64, 192, 3)
        self.lrn = nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)
        mods, c = [], 192
        for n in ("3a", "3b", "3c", "4a", "4e", "5a", "5b"):
          mods.append(Incep(c, _INCEPTION[n], geom[n]))
          c = mods[-1].cout
        self.mods = nn.Sequential(*mods)
        self.linear = nn.Linear(c, model_kwargs.get("embedding_dim", 128))

      def forward(self, x):
        x = self.lrn(maxpool(self.conv1(x), 2, 1))
        x = maxpool(self.lrn(self.conv3(self.conv2(x))), 2, 1)
        return l2norm(self.linear(self.mods(x).mean((2, 3))))

    return Net()

  if name == "inception_resnet_v1":
    class BNBeta(nn.Module):  # BatchNorm without scale, learned offset (TF scale=False)
      def __init__(self, c, two_d=True):
        super().__init__()
        self.bn = (nn.BatchNorm2d if two_d else nn.BatchNorm1d)(c, 1e-3, 0.005, affine=False)
        self.beta = nn.Parameter(torch.zeros(c))

      def forward(self, x):
        x = self.bn(x)
        return x + (self.beta[:, None, None] if x.dim() == 4 else self.beta)

    def cbn(cin, cout, k, s=1, valid=False):
      k = (k, k) if isinstance(k, int) else k
      pad = (0, 0) if valid else (k[0] // 2, k[1] // 2)
      return nn.Sequential(nn.Conv2d(cin, cout, k, s, pad, bias=False), BNBeta(cout), nn.ReLU())

    class Block(nn.Module):
      def __init__(self, c, spec, scale, relu=True):
        super().__init__()
        self.scale, self.relu = scale, relu
        self.branches = nn.ModuleList()
        tot = 0
        for br in spec:
          layers, cin = [], c
          for f, k in br:
            layers.append(cbn(cin, f, k))
            cin = f
          self.branches.append(nn.Sequential(*layers))
          tot += cin
        self.up = nn.Conv2d(tot, c, 1)

      def forward(self, x):
        x = x + self.scale * self.up(torch.cat([b(x) for b in self.branches], 1))
        return F.relu(x) if self.relu else x

    from facejax.models.inception_resnet_v1 import _BLOCK35, _BLOCK17, _BLOCK8

    class Net(nn.Module):
      def __init__(self):
        super().__init__()
        emb = model_kwargs.get("embedding_dim", 512)
        self.stem = nn.Sequential(
            cbn(3, 32, 3, 2, True), cbn(32, 32, 3, valid=True), cbn(32, 64, 3), nn.MaxPool2d(3, 2),
            cbn(64, 80, 1, valid=True), cbn(80, 192, 3, valid=True), cbn(192, 256, 3, 2, True))
        self.b35 = nn.Sequential(*[Block(256, _BLOCK35, 0.17) for _ in range(5)])
        self.ra0 = cbn(256, 384, 3, 2, True)
        self.ra1 = nn.Sequential(cbn(256, 192, 1), cbn(192, 192, 3), cbn(192, 256, 3, 2, True))
        self.b17 = nn.Sequential(*[Block(896, _BLOCK17, 0.10) for _ in range(10)])
        self.rb0 = nn.Sequential(cbn(896, 256, 1), cbn(256, 384, 3, 2, True))
        self.rb1 = nn.Sequential(cbn(896, 256, 1), cbn(256, 256, 3, 2, True))
        self.rb2 = nn.Sequential(cbn(896, 256, 1), cbn(256, 256, 3), cbn(256, 256, 3, 2, True))
        self.b8 = nn.Sequential(*[Block(1792, _BLOCK8, 0.20) for _ in range(5)],
                                Block(1792, _BLOCK8, 1.0, relu=False))
        self.drop = nn.Dropout(model_kwargs.get("dropout_rate", 0.2))
        self.bottleneck = nn.Linear(1792, emb, bias=False)
        self.bn = BNBeta(emb, two_d=False)

      def forward(self, x):
        x = self.b35(self.stem(x))
        x = torch.cat([self.ra0(x), self.ra1(x), maxpool(x, 2, 0)], 1)
        x = self.b17(x)
        x = torch.cat([self.rb0(x), self.rb1(x), self.rb2(x), maxpool(x, 2, 0)], 1)
        x = self.b8(x).mean((2, 3))
        return l2norm(self.bn(self.bottleneck(self.drop(x))))

    return Net()

  if name == "sphereface20":
    from facejax.models.sphereface import UNITS, STAGE_WIDTHS

    def cp(cin, cout, s, bias):
      return nn.Sequential(nn.Conv2d(cin, cout, 3, s, 1, bias=bias), nn.PReLU(cout, 0.25))

    class Unit(nn.Module):
      def __init__(self, c):
        super().__init__()
        self.f = nn.Sequential(cp(c, c, 1, False), cp(c, c, 1, False))

      def forward(self, x):
        return x + self.f(x)

    class Net(nn.Module):
      def __init__(self):
        super().__init__()
        layers, c = [], 3
        for n, w in zip(UNITS[20], STAGE_WIDTHS):
          layers.append(cp(c, w, 2, True))
          layers += [Unit(w) for _ in range(n)]
          c = w
        self.features = nn.Sequential(*layers)
        self.fc5 = nn.Linear(infer_flat(self.features), model_kwargs.get("embedding_dim", 512))

      def forward(self, x):
        return l2norm(self.fc5(flat_hwc(self.features(x))))

    return Net()

  if name.startswith("iresnet"):
    from facejax.models.iresnet import BLOCKS, STAGE_WIDTHS as IR_WIDTHS

    class IBlock(nn.Module):
      def __init__(self, cin, c, s):
        super().__init__()
        self.f = nn.Sequential(nn.BatchNorm2d(cin, eps=1e-5), nn.Conv2d(cin, c, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(c, eps=1e-5), nn.PReLU(c),
                               nn.Conv2d(c, c, 3, s, 1, bias=False), nn.BatchNorm2d(c, eps=1e-5))
        self.down = (nn.Sequential(nn.Conv2d(cin, c, 1, s, bias=False), nn.BatchNorm2d(c, eps=1e-5))
                     if s != 1 or cin != c else None)

      def forward(self, x):
        return self.f(x) + (x if self.down is None else self.down(x))

    class Net(nn.Module):
      def __init__(self):
        super().__init__()
        layers, c = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)], 64
        for n, w in zip(BLOCKS[int(name[len("iresnet"):])], IR_WIDTHS):
          layers += [IBlock(c if i == 0 else w, w, 2 if i == 0 else 1) for i in range(n)]
          c = w
        layers.append(nn.BatchNorm2d(512))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(infer_flat(self.features), model_kwargs.get("embedding_dim", 512))
        self.bn = nn.BatchNorm1d(self.fc.out_features)
        self.bn.weight.requires_grad_(False)  # arcface_torch freezes this gamma

      def forward(self, x):
        return l2norm(self.bn(self.fc(flat_hwc(self.features(x)))))

    return Net()

  if name in ("mobilefacenet", "mobilefacenet_large"):
    blocks, k = ((1, 4, 6, 2), 2) if name == "mobilefacenet" else ((2, 8, 12, 4), 4)

    def cbn(cin, cout, kernel=1, s=1, g=1, p=0, act=True):
      mods = [nn.Conv2d(cin, cout, kernel, s, p, groups=g, bias=False), nn.BatchNorm2d(cout)]
      return nn.Sequential(*mods, *([nn.PReLU(cout)] if act else []))

    class DW(nn.Module):
      def __init__(self, cin, cout, g, s=1, residual=False):
        super().__init__()
        self.residual = residual
        self.f = nn.Sequential(cbn(cin, g), cbn(g, g, 3, s, g, 1), cbn(g, cout, act=False))

      def forward(self, x):
        return x + self.f(x) if self.residual else self.f(x)

    def res(c, n, g):
      return [DW(c, c, g, residual=True) for _ in range(n)]

    class Net(nn.Module):
      def __init__(self):
        super().__init__()
        c64, c128 = 64 * k, 128 * k
        first = [cbn(c64, c64, 3, 1, 64, 1)] if blocks[0] == 1 else res(c64, blocks[0], 128)
        self.features = nn.Sequential(
            cbn(3, c64, 3, 2, 1, 1), *first, DW(c64, c64, 128, 2), *res(c64, blocks[1], 128),
            DW(c64, c128, 256, 2), *res(c128, blocks[2], 256), DW(c128, c128, 512, 2),
            *res(c128, blocks[3], 256), cbn(c128, 512), cbn(512, 512, 7, 1, 512, act=False),
            nn.Flatten(), nn.Linear(512, model_kwargs.get("embedding_dim", 512), bias=False),
            nn.BatchNorm1d(model_kwargs.get("embedding_dim", 512)))

      def forward(self, x):
        return l2norm(self.features(x))

    return Net()

  raise ValueError(name)


# ---------------------------------------------------------------------------
# Setup.
# ---------------------------------------------------------------------------


def make_config(net, batch, steps):
  import ml_collections
  from facejax.models import MODELS
  config = nn1.get_config("cpu")
  if net == "nn1":
    kw = dict(config.model)
    kw["batch_norm"] = False
    hw = (config.data.image_size, config.data.image_size)
  else:
    kw = dict(name=net, dtype="float32")
    hw = MODELS[net][1]
  config.model = ml_collections.ConfigDict(kw)
  data = config.data.to_dict()
  data['image_size'] = hw
  config.data = ml_collections.ConfigDict(data)
  config.num_identities, config.images_per_identity = batch // K, K
  config.batch_size = (batch // K) * K
  config.loss.name = "batch_all"
  config.loss.margin = 0.2
  config.optimizer = common.optimizer("sgd", 0.01, momentum=0.0)
  config.num_train_steps = steps
  return config, kw, hw


def setup_jax(config, hw, batch_np):
  import jax
  from facejax import optimizers
  from facejax import train as ftrain
  from facejax.models import create_model, flops

  model = create_model(config.model)
  tx = optimizers.create_optimizer(config.optimizer, config.num_train_steps)
  state = ftrain.create_train_state(config, model, tx, jax.random.key(0))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  mesh = ftrain.make_mesh()
  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  step_fn = ftrain.make_jitted_step(config, model, tx, mesh)
  batch = ftrain.shard_batch(batch_np, mesh)
  t0 = time.perf_counter()
  step_c = step_fn.lower(state, batch).compile()

  fwd = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])
  fwd_c = fwd.lower(state.model_vars(), batch["image"]).compile()
  compile_s = time.perf_counter() - t0
  macs = flops.multiply_adds(model, (*hw, 3))
  holder = {"state": state}

  def train_one():
    new_state, metrics = step_c(holder["state"], batch)
    jax.block_until_ready((new_state, metrics))
    holder["state"] = new_state

  def infer_one():
    jax.block_until_ready(fwd_c(holder["state"].model_vars(), batch["image"]))

  return train_one, infer_one, n_params, macs, compile_s


def setup_torch(model, batch_np, margin=0.2):
  import torch
  model = model.to(memory_format=torch.channels_last)
  opt = torch.optim.SGD(model.parameters(), lr=0.01)
  images = torch.from_numpy(batch_np["image"]).permute(0, 3, 1, 2).contiguous(
      memory_format=torch.channels_last)
  labels = torch.from_numpy(batch_np["label"])
  mask = torch.from_numpy(batch_np["mask"])

  def train_one():
    model.train()
    opt.zero_grad(set_to_none=True)
    loss = tsb.torch_batch_all_triplet_loss(model(images), labels, mask, margin)
    loss.backward()
    opt.step()

  def infer_one():
    model.eval()
    with torch.inference_mode():
      model(images)

  return train_one, infer_one


def synthetic_batch(batch, hw, seed=0):
  rng = np.random.default_rng(seed)
  return {"image": rng.standard_normal((batch, *hw, 3), dtype=np.float32) * 0.5,
          "label": np.repeat(np.arange(batch // K, dtype=np.int32), K),
          "mask": np.ones((batch,), bool)}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--nets", default=",".join(NETS), help="comma-separated subset of " + ",".join(NETS))
  p.add_argument("--steps", type=int, default=3, help="timed steps (median); 1 warm-up before")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--batch", type=int, default=None,
                 help="batch for every net (multiple of 4); default 32, nn2 16")
  args = p.parse_args(argv)
  nets = [n.strip() for n in args.nets.split(",") if n.strip()]
  for n in nets:
    if n not in NETS + EXTRA_NETS:
      p.error(f"unknown net {n!r}; choose from {','.join(NETS + EXTRA_NETS)}")

  import jax
  import torch
  torch.set_num_threads(os.cpu_count())
  print("== Per-net benchmark: facejax (JAX) vs PyTorch port ==")
  for line in _common.environment_lines({
      "jax": f"{jax.__version__} backend={jax.default_backend()} devices={jax.device_count()}",
      "torch": f"{torch.__version__} num_threads={torch.get_num_threads()} channels_last"}):
    print(line)
  print(f"warm-up {args.warmup}, timed steps {args.steps} (median), interleaved JAX/torch\n")

  rows = []
  for net in nets:
    batch = args.batch or DEFAULT_BATCH.get(net, 32)
    config, kw, hw = make_config(net, batch, args.steps + args.warmup)
    batch = config.batch_size
    batch_np = synthetic_batch(batch, hw)
    torch.manual_seed(0)
    tmodel = build_torch_net(net, kw, hw)
    n_torch = sum(q.numel() for q in tmodel.parameters() if q.requires_grad)
    j_train, j_inf, n_jax, macs, compile_s = setup_jax(config, hw, batch_np)
    t_train, t_inf = setup_torch(tmodel, batch_np)
    same = n_jax == n_torch
    print(f"-- {net} {hw[0]}x{hw[1]} batch {batch}: params jax {n_jax:,} torch {n_torch:,} "
          + ("(match)" if same else f"MISMATCH (torch - jax = {n_torch - n_jax:+,})")
          + f"; compile {compile_s:.1f} s; load {_common.loadavg()}")
    tr = _common.interleaved({"jax": j_train, "torch": t_train}, args.warmup, args.steps)
    inf = _common.interleaved({"jax": j_inf, "torch": t_inf}, args.warmup, args.steps)
    print(f"   train s/step jax {tr['jax']:.3f} torch {tr['torch']:.3f}; "
          f"infer s/batch jax {inf['jax']:.3f} torch {inf['torch']:.3f}")
    rows.append([net, f"{hw[0]}x{hw[1]}", batch, f"{n_jax:,}" + ("" if same else " !"),
                 f"{macs / 1e6:,.0f}M",
                 f"{batch / tr['jax']:.1f}", f"{batch / tr['torch']:.1f}",
                 f"{tr['torch'] / tr['jax']:.2f}",
                 f"{batch / inf['jax']:.1f}", f"{batch / inf['torch']:.1f}",
                 f"{inf['torch'] / inf['jax']:.2f}", _common.loadavg().split()[0]])
    del tmodel

  print("\n== Results (images/s, median of timed steps; ratio = JAX/PyTorch images/s, >1: JAX "
        "faster; MACs = conv + dense multiply-adds per image (facejax.models.flops); '!' = torch param count differs) ==")
  _common.print_table(["net", "input", "batch", "params", "MACs/img", "train jax", "train torch",
                       "train ratio", "infer jax", "infer torch", "infer ratio", "load1"], rows)
  print(f"load average at end: {_common.loadavg()}")


if __name__ == "__main__":
  main()
