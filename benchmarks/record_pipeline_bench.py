"""Record-format training data at scale: start-up, memory and decode+augment throughput of
facejax's `.rec` source against an arcface_torch-style PyTorch loader over the same file.

Data: synthetic insightface folders (`facejax.data.synthetic_rec`: 112x112 JPEGs of LFW
crops reused under permuted identities), written once under --root:
  N = 10k (1k identities), 100k (10k), 1M (100k).

Per N, each in a fresh process (so its memory is its own):
* facejax: `datasets.build_train_source` (data.source="rec": the .idx and the K identity
  records, `ClassIndex`) then `input_pipeline.train_batches` (P x K = 64 x 2 at 112x112,
  random flip, fixed standardisation) to the first batch, then `--steps` more batches;
  start-up = process start to the first batch, RSS = the process's peak resident set
  (`ru_maxrss`) after those batches, index = `ClassIndex.nbytes()`.
* peer: arcface_torch's `MXFaceDataset`, written here without mxnet: the .idx read into a
  dict of offsets (as `MXIndexedRecordIO`), record 0's header for the image range, then a
  `torch.utils.data.DataLoader` (shuffle, batch 128, --workers processes) whose
  `__getitem__` preads the record, strips the IRHeader, decodes the JPEG with PIL and
  applies RandomHorizontalFlip + ToTensor + Normalize(0.5, 0.5) (written in numpy/torch,
  as torchvision's would).

Throughput: images/s of both, on the same cores, with the same worker count; per core =
images/s / cores used.

Training (`--train`): `facejax.main --config=configs/nn1.py:smoke` on each .rec for 20 steps
(P x K = 8 x 3, no evaluation), in a fresh process: its peak RSS and wall time.

  python benchmarks/record_pipeline_bench.py --make          # writes the three folders
  python benchmarks/record_pipeline_bench.py                 # the table

Against the train step (`--vs_step`): in a fresh process each, the pipeline's images/s
(as above) and the images/s of an IResNet-50 train step on the same cores (112x112, batch
32, ArcFace on a Partial FC head of the .rec's classes, SGD momentum, `train.make_jitted_step`
on synthetic batches: compute only), and their ratio (the goal: the pipeline at >= 3x).
  python benchmarks/record_pipeline_bench.py --sizes=10000 --vs_step
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIZES = ((10_000, 1_000), (100_000, 10_000), (1_000_000, 100_000))
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def _folder(root, n):
  return os.path.join(root, f"rec_{n}")


def make(root):
  sys.path.insert(0, REPO)
  from facejax.data import synthetic_rec
  from facejax.data.paths import resolve_data_dir
  crops = synthetic_rec.lfw_crops(resolve_data_dir(None, "lfw") / "lfw")
  for n, k in SIZES:
    if not os.path.exists(os.path.join(_folder(root, n), "property")):
      t = time.perf_counter()
      synthetic_rec.write_synthetic(_folder(root, n), crops, n, k)
      print(f"wrote {n} records, {k} identities in {time.perf_counter() - t:.0f} s")


def run_facejax(folder, steps):
  """In a child process: start-up to the first batch, then `steps` batches."""
  t0 = time.perf_counter()
  import _common  # noqa: F401  (XLA flags, as the CLIs)
  import ml_collections
  from facejax.data import datasets, input_pipeline, sampling
  imported = time.perf_counter()
  data = ml_collections.ConfigDict(dict(
      source="rec", train_dir=folder, train_people=None, min_images_per_identity=2,
      source_crop=0, image_size=112, resize_size=112, standardization="fixed",
      random_flip=True, random_crop=False))
  source = datasets.build_train_source(data)
  indexed = time.perf_counter()
  sampler = sampling.Sampler(num_identities=64, images_per_identity=2, seed=0)
  batches = input_pipeline.train_batches(
      source.table, source.classes, datasets.preprocessing(data, train=True), sampler,
      start_step=0, num_steps=steps + 1)
  next(batches)
  first = time.perf_counter()
  for _ in batches:
    pass
  done = time.perf_counter()
  return {"import_s": imported - t0, "index_s": indexed - imported,
          "startup_s": first - imported, "images_per_s": steps * 128 / (done - first),
          "index_mib": source.classes.nbytes() / 2**20,
          "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


class MXFaceDataset:
  """arcface_torch's dataset, without mxnet (module docstring)."""

  def __init__(self, folder):
    import struct
    self.rec_path = os.path.join(folder, "train.rec")
    self.fd = None
    self.offsets = {}
    with open(os.path.join(folder, "train.idx")) as f:
      for line in f:
        key, offset = line.split("\t")
        self.offsets[int(key)] = int(offset)
    header = self._payload(0)
    flag, = struct.unpack_from("<I", header)
    first, end = struct.unpack_from("<ff", header, 24)
    self.keys = list(range(1, int(first))) if flag > 0 else sorted(self.offsets)
    os.close(self.fd)
    self.fd = None  # each DataLoader worker opens its own

  def _payload(self, key):
    import struct
    if self.fd is None:
      self.fd = os.open(self.rec_path, os.O_RDONLY)
    at = self.offsets[key]
    _, lrec = struct.unpack("<II", os.pread(self.fd, 8, at))
    return os.pread(self.fd, lrec & ((1 << 29) - 1), at + 8)

  def __len__(self):
    return len(self.keys)

  def __getitem__(self, i):
    import io
    import struct
    import numpy as np
    import torch
    from PIL import Image
    payload = self._payload(self.keys[i])
    flag, label = struct.unpack_from("<If", payload)
    body = 24 + 4 * flag
    if flag > 0:
      label = struct.unpack_from("<f", payload, 24)[0]
    image = np.asarray(Image.open(io.BytesIO(payload[body:])).convert("RGB"))
    if np.random.rand() < 0.5:
      image = image[:, ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)
    return tensor.sub(0.5).div(0.5), int(label)


def run_torch(folder, steps, workers):
  t0 = time.perf_counter()
  import torch
  imported = time.perf_counter()
  dataset = MXFaceDataset(folder)
  indexed = time.perf_counter()
  loader = torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True,
                                       num_workers=workers, drop_last=True,
                                       persistent_workers=workers > 0)
  it = iter(loader)
  next(it)
  first = time.perf_counter()
  for _ in range(steps):
    next(it)
  done = time.perf_counter()
  del it, loader  # joins the workers, so that their peak RSS counts among the children
  import gc
  gc.collect()
  children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
  return {"import_s": imported - t0, "index_s": indexed - imported,
          "startup_s": first - imported, "images_per_s": steps * 128 / (done - first),
          "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "worker_rss_mib": children}


def measure_training(folder, steps=20):
  """Peak RSS (MiB) and wall time of a short `facejax.main` run on `folder`, in a wrapper
  process of its own (RUSAGE_CHILDREN is the largest child's)."""
  import tempfile
  workdir = tempfile.mkdtemp(prefix="recbench_")
  cmd = [sys.executable, "-m", "facejax.main", "--config=configs/nn1.py:smoke",
         f"--workdir={workdir}", "--config.data.source=rec", f"--config.data.train_dir={folder}",
         "--config.data.train_people=", "--config.data.source_crop=0",
         f"--config.num_train_steps={steps}", "--config.checkpoint.every_steps=1000",
         "--config.evals.lfw_dev_test.at_end=False", "--config.evals.lfw_view2.at_end=False"]
  wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "print('RESULT', r.returncode, time.perf_counter() - t, "
             "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); "
             "sys.stderr.write(r.stderr[-3000:])")
  out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                       cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  line = [l for l in out.stdout.splitlines() if l.startswith("RESULT")][-1].split()
  if line[1] != "0":
    raise RuntimeError(f"training on {folder} failed:\n{out.stderr}")
  return float(line[2]), float(line[3])


def run_train_step(folder, steps, batch=32):
  """In a child process: images/s of the IResNet-50 ArcFace train step on synthetic batches."""
  import _common  # noqa: F401  (XLA flags, as the CLIs)
  import jax
  import numpy as np
  from configs import common
  from facejax import optimizers, train
  from facejax.data import recordio
  from facejax.losses import make_objective
  from facejax.models import create_model
  c = common.base(model=dict(name="iresnet50", embedding_dim=512, dtype="float32"),
                  optimizer=common.optimizer("sgd", 0.1, momentum=0.9, weight_decay=5e-4),
                  loss=dict(name="partial_fc", sample_rate=1.0), image_size=112)
  c.data.sampling = "shuffle"
  c.batch_size = batch
  num_classes = recordio.read_property(os.path.join(folder, "property"))[0]
  model = create_model(c.model)
  objective = make_objective(c.loss, num_classes=num_classes, feature_dim=512)
  tx = optimizers.create_optimizer(c.optimizer, 1000)
  mesh = train.make_mesh()
  state = train.create_sharded_train_state(c, model, tx, jax.random.key(0), mesh, objective)
  step = train.make_jitted_step(c, model, tx, mesh, objective)
  rng = np.random.default_rng(0)
  data = train.shard_batch({"image": rng.normal(size=(batch, 112, 112, 3)).astype(np.float32),
                            "label": rng.integers(0, num_classes, batch).astype(np.int32),
                            "mask": np.ones(batch, bool)}, mesh)
  state, m = step(state, data)  # compile
  jax.block_until_ready(m)
  t = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, data)
  jax.block_until_ready(m)
  return {"images_per_s": steps * batch / (time.perf_counter() - t), "classes": num_classes}


def child(args):
  if args.child == "train_step":
    out = run_train_step(args.folder, args.steps)
  elif args.child == "facejax":
    out = run_facejax(args.folder, args.steps)
  else:
    out = run_torch(args.folder, args.steps, args.workers)
  print("RESULT " + json.dumps(out))


def measure(kind, folder, steps, workers):
  cmd = [sys.executable, os.path.abspath(__file__), f"--child={kind}", f"--folder={folder}",
         f"--steps={steps}", f"--workers={workers}"]
  env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE)
  lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
  if out.returncode or not lines:
    raise RuntimeError(f"{kind} on {folder} failed:\n{out.stderr[-3000:]}")
  return json.loads(lines[-1][len("RESULT "):])


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--root", default="/tmp/facejax_rec_bench")
  parser.add_argument("--make", action="store_true")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
  parser.add_argument("--sizes", default=",".join(str(n) for n, _ in SIZES))
  parser.add_argument("--train", action="store_true", help="Also a short facejax.main run.")
  parser.add_argument("--vs_step", action="store_true",
                      help="Only the pipeline against the IResNet-50 train step.")
  parser.add_argument("--child", default=None)
  parser.add_argument("--folder", default=None)
  args = parser.parse_args()
  if args.child:
    return child(args)
  if args.make:
    return make(args.root)
  sys.path.insert(0, HERE)
  import _common
  print("\n".join(_common.environment_lines()))
  cores = len(os.sched_getaffinity(0))
  if args.vs_step:
    print("\n| N | pipeline images/s | IResNet-50 ArcFace train step images/s (batch 32) | "
          "ratio |")
    print("|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
      pipe = measure("facejax", _folder(args.root, n), args.steps, args.workers)
      step = measure("train_step", _folder(args.root, n), 3, args.workers)
      print(f"| {n:,} | {pipe['images_per_s']:.0f} | {step['images_per_s']:.2f} | "
            f"{pipe['images_per_s'] / step['images_per_s']:.0f}x |", flush=True)
    return None
  print(f"\n| N | loader | start-up to 1st batch (s) | of which index (s) | index MiB | "
        f"peak RSS MiB (main + workers) | images/s | images/s per core |")
  print("|---|---|---|---|---|---|---|---|")
  for n in (int(s) for s in args.sizes.split(",")):
    folder = _folder(args.root, n)
    for kind in ("facejax", "torch"):
      r = measure(kind, folder, args.steps, args.workers)
      rss = f"{r['rss_mib']:.0f}"
      if "worker_rss_mib" in r:
        rss += f" + {args.workers} workers of <= {r['worker_rss_mib']:.0f}"
      index = f"{r['index_mib']:.1f}" if "index_mib" in r else "dict"
      print(f"| {n:,} | {kind} | {r['startup_s']:.2f} | {r['index_s']:.2f} | "
            f"{index} | {rss} | {r['images_per_s']:.0f} | "
            f"{r['images_per_s'] / cores:.0f} |", flush=True)
  if args.train:
    print("\n| N | facejax.main nn1:smoke, 20 steps: wall (s) | peak RSS MiB |")
    print("|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
      wall, rss = measure_training(_folder(args.root, n))
      print(f"| {n:,} | {wall:.1f} | {rss:.0f} |", flush=True)


if __name__ == "__main__":
  main()
