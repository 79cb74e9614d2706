r"""Input-pipeline throughput on real LFW: facejax's tf.data pipeline vs plain PIL + numpy.

* facejax: `facejax.data.input_pipeline.train_batches` over the source built by
  `facejax.data.datasets.build_train_source(config.data)` (data.source =
  'folder': JPEGs read from disk) with `datasets.preprocessing(config.data,
  train=True)` -- decode, centre crop to `source_crop`, antialiased bilinear
  resize to `resize_size`, random crop to `image_size`, random flip,
  (x - 127.5) / 128 -- batched as P x K identity-balanced batches.
* peer: the same steps with PIL + numpy on a ThreadPoolExecutor with one
  worker per core, reading the very same files (the P x K indices of the same
  training steps, from `sampling.sample_pk`), with the same
  batch shape and a prefetch of 2 batches.

Only the loaders run (no model). Before timing, every file of the measured
steps is read once so that both loaders find them in the page cache, and a
centre-crop (no augmentation) output of both loaders is compared on a few
images (mean |diff| in standardised units) to show they do the same work.
Loaders alternate over `--rounds` rounds so both see the same machine load;
the reported figure is the median over rounds.

Data: `--data_dir` or the FACEJAX_DATA_DIR environment variable (the folder
holding `lfw/`, or the LFW root itself).

Usage:
  FACEJAX_DATA_DIR=/path/to/data python benchmarks/input_pipeline_bench.py
  python benchmarks/input_pipeline_bench.py --data_dir /path/to/data --configs cpu --steps 30
"""

import argparse
import collections
import concurrent.futures
import os
import statistics
import time

import numpy as np

from configs import nn1

# Sibling modules: `python benchmarks/<name>.py` puts this folder on sys.path.
# _common sets facejax's default XLA:CPU flags, before anything computes with JAX.
import _common

# name -> configs/nn1.py variant
CONFIGS = {"cpu": "cpu", "paper": None}


class PilLoader:
  """Plain PIL + numpy version of facejax's train-time preprocessing."""

  def __init__(self, paths, prep, seed: int, workers: int, prefetch: int = 2):
    from PIL import Image
    self._Image = Image
    self.paths = paths
    self.prep = prep
    self.seed = seed
    self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers)
    self.prefetch = prefetch

  def close(self):
    self.pool.shutdown()

  def load(self, path: str, rng: np.random.Generator | None) -> np.ndarray:
    """One image; `rng` None = eval-style centre crop and no flip."""
    prep = self.prep
    with self._Image.open(path) as im:
      im = im.convert("RGB")
      if prep.source_crop:
        w, h = im.size
        c = min(prep.source_crop, h, w)
        top, left = (h - c) // 2, (w - c) // 2
        im = im.crop((left, top, left + c, top + c))
      rh, rw = prep.resize_size
      # PIL's BILINEAR widens its filter when downscaling, i.e. it is antialiased.
      im = im.resize((rw, rh), self._Image.BILINEAR)
      x = np.asarray(im, dtype=np.float32)
    h, w = prep.image_size
    if rng is not None and prep.random_crop:
      top = int(rng.integers(0, rh - h + 1))
      left = int(rng.integers(0, rw - w + 1))
    else:
      top, left = (rh - h) // 2, (rw - w) // 2
    x = x[top:top + h, left:left + w]
    if rng is not None and prep.random_flip and rng.random() < 0.5:
      x = x[:, ::-1]
    if prep.standardization == "fixed":
      return (x - 127.5) / 128.0
    std = max(float(x.std()), 1.0 / np.sqrt(x.size))
    return (x - x.mean()) / std

  def _submit(self, step, indices):
    futures = []
    for slot, i in enumerate(indices):
      rng = np.random.default_rng([self.seed, step, slot])
      futures.append(self.pool.submit(self.load, self.paths[i], rng))
    return futures

  def batches(self, step_batches):
    """step_batches: iterable of (step, indices, labels, mask). Yields dicts like facejax's."""
    pending = collections.deque()
    it = iter(step_batches)

    def fill():
      while len(pending) < self.prefetch + 1:
        try:
          step, idx, lab, msk = next(it)
        except StopIteration:
          return
        pending.append((step, idx, lab, msk, self._submit(step, idx)))

    fill()
    while pending:
      step, idx, lab, msk, futures = pending.popleft()
      images = np.stack([f.result() for f in futures])
      fill()
      yield {"image": images, "label": lab, "mask": msk, "index": idx, "step": np.int64(step)}


def steps_indices(source, config, start, stop):
  from facejax.data import sampling
  for step in range(start, stop):
    idx, lab, msk = sampling.sample_pk(
        source.classes, config.num_identities, config.images_per_identity,
        config.seed, step)
    yield step, idx, lab, msk


def time_iterator(make_iter, warmup: int, steps: int, batch_size: int):
  """images/s over `steps` batches after `warmup` batches (iterator set-up untimed)."""
  it = make_iter()
  for _ in range(warmup):
    next(it)
  t0 = time.perf_counter()
  c0 = time.process_time()
  n = 0
  for _ in range(steps):
    b = next(it)
    n += b["image"].shape[0]
  dt = time.perf_counter() - t0
  dc = time.process_time() - c0
  assert n == steps * batch_size, (n, steps, batch_size)
  return n / dt, dt, dc


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data_dir", default=None,
                      help="folder holding lfw/ (default: $FACEJAX_DATA_DIR)")
  parser.add_argument("--configs", default="cpu,paper",
                      help="comma-separated subset of: " + ", ".join(CONFIGS))
  parser.add_argument("--steps", type=int, default=20, help="timed batches per loader and round")
  parser.add_argument("--warmup", type=int, default=2, help="untimed batches before timing")
  parser.add_argument("--rounds", type=int, default=3,
                      help="alternating rounds of (facejax, PIL); median reported")
  parser.add_argument("--threads", type=int, default=os.cpu_count(),
                      help="ThreadPoolExecutor workers of the PIL loader")
  args = parser.parse_args(argv)
  names = [c.strip() for c in args.configs.split(",") if c.strip()]
  for n in names:
    if n not in CONFIGS:
      parser.error(f"unknown config {n!r}; choose from {', '.join(CONFIGS)}")
  data_dir = args.data_dir or os.environ.get("FACEJAX_DATA_DIR")
  if not data_dir:
    parser.error("no data location: pass --data_dir or set FACEJAX_DATA_DIR")

  import PIL
  import tensorflow as tf
  from facejax.data import datasets, input_pipeline, sampling

  print("== facejax input pipeline benchmark ==")
  for line in _common.environment_lines({
      "tensorflow": tf.__version__, "pillow": PIL.__version__, "numpy": np.__version__,
      "data_dir": data_dir, "PIL workers": str(args.threads)}):
    print(line)
  print()

  rows = []
  for name in names:
    config = nn1.get_config(CONFIGS[name])
    config.data.data_dir = data_dir
    config.data.source = "folder"
    total_steps = args.warmup + args.steps
    config.num_train_steps = total_steps
    source = datasets.build_train_source(config.data)
    prep = datasets.preprocessing(config.data, train=True)
    b = config.num_identities * config.images_per_identity
    print(f"-- config {name}: {config.data.image_size}x{config.data.image_size} "
          f"(source crop {config.data.source_crop}, resize {config.data.resize_size}), "
          f"batch {config.num_identities}x{config.images_per_identity}={b}, "
          f"{source.num_images} images of {source.classes.num_classes} identities")

    # Same files for both loaders: the P x K indices of steps 0 .. warmup+steps-1.
    used = sorted({int(i) for _, idx, _, _ in steps_indices(source, config, 0, total_steps)
                   for i in idx})
    nbytes = 0
    for i in used:
      with open(source.table.paths[i], "rb") as f:
        nbytes += len(f.read())
    print(f"   page cache warmed: {len(used)} distinct files, {nbytes / 1e6:.1f} MB")

    pil = PilLoader(source.table.paths, prep, config.seed, args.threads)
    # Same-work check: eval-style centre crop, no flip, on a few images.
    check_idx = used[:8]
    tf_out = np.stack([input_pipeline.decode_and_preprocess(
        source.table.read(tf.constant(i)), tf.zeros([2], tf.int64), prep, train=False).numpy()
        for i in check_idx])
    pil_out = np.stack([pil.load(source.table.paths[i], None) for i in check_idx])
    print(f"   same-work check (centre crop, {len(check_idx)} images): shapes "
          f"{tf_out.shape[1:]} vs {pil_out.shape[1:]}, mean |tf - pil| = "
          f"{np.mean(np.abs(tf_out - pil_out)):.4f} (standardised units; pixel step = "
          f"{1 / 128:.4f})")

    def make_tf():
      return input_pipeline.train_batches(
          source.table, source.classes, prep, sampling.Sampler.from_config(config),
          start_step=0, num_steps=total_steps)

    def make_pil():
      return pil.batches(steps_indices(source, config, 0, total_steps))

    results = {"facejax tf.data": [], f"PIL+numpy ({args.threads} threads)": []}
    makers = dict(zip(results, (make_tf, make_pil)))
    cpu_rates = {k: [] for k in results}
    for r in range(args.rounds):
      order = list(results) if r % 2 == 0 else list(reversed(results))
      for loader in order:
        load = _common.loadavg()
        ips, dt, dc = time_iterator(makers[loader], args.warmup, args.steps, b)
        results[loader].append(ips)
        cpu_rates[loader].append(args.steps * b / dc)
        print(f"   round {r + 1} {loader:22s}: {ips:7.1f} images/s ({args.steps} batches in "
              f"{dt:.2f} s, process CPU {dc:.2f} s; load before {load})")
    pil.close()
    for loader, vals in results.items():
      rows.append([loader, f"{config.data.image_size}x{config.data.image_size}", b,
                   f"{statistics.median(vals):.1f}",
                   f"{statistics.median(cpu_rates[loader]):.1f}",
                   " / ".join(f"{v:.1f}" for v in vals)])
    print()

  print("== Results (median over rounds; page cache warm; images/CPU-s = images per second "
        "of this process's CPU time, less sensitive to other load) ==")
  _common.print_table(["loader", "image size", "batch", "images/s", "images/CPU-s",
                       "images/s per round"], rows)
  print(f"load average at end: {_common.loadavg()}")


if __name__ == "__main__":
  main()
