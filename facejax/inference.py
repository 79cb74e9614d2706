"""How to embed images with a checkpoint: `Embedder`.

  from facejax.inference import Embedder
  embedder = Embedder.from_workdir(config, "workdirs/nn1_smoke")        # newest good step
  out = embedder.embed_files(["a.jpg", "b.png", "subject01.happy"])    # FileEmbeddings
  out.embeddings                  # [N, D] float32, unit rows (flip="concat": [N, 2D])
  out.skipped                     # {path: why} for files that could not be used
  embedder.embed_arrays(images)   # [N, H, W, 3] pixels in [0, 255] at config.data.image_size

An `Embedder` holds the net (`create_model(config.model)`), its variables (replicated on
the local devices), the evaluation preprocessing of `config.data` (centre `source_crop`,
resize to `resize_size`, centre crop to `image_size`, standardisation), the flip mode and
a batch size. Batches are sharded over a mesh of the local devices and run by one jitted
function per (net, flip, standardisation), which compiles once per batch shape: the last
batch is zero-padded.

Two ways in from files:

* `embed_files` (the tools, any folder): each file is decoded ONCE by Pillow, in a thread
  pool (Pillow releases the GIL while decoding and resizing), cropped and resized in uint8
  and sent to the device as uint8; standardisation runs on the device. Decoding of the
  next batches overlaps the net on the current one. Unreadable files are skipped and
  named, never fatal.
* `embed_table` (the LFW and identity-folder evaluation): the tf.data evaluation pipeline
  of training (`input_pipeline.eval_batches`), so evaluation figures are computed on
  exactly the pixels the net was trained on. The two differ only in JPEG decoding
  (TensorFlow's fast integer IDCT against libjpeg's accurate one in Pillow; about one
  8-bit level on average on LFW originals) and in the resize's uint8 arithmetic (within one
  level, 0.3 on average): in float, Pillow's bilinear resize gives TensorFlow's antialiased
  bilinear resize exactly, but costs 1.5x the time.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from PIL import Image

from facejax import checkpointing, errors
from facejax.data import datasets, input_pipeline
from facejax.models import create_model

# "none": the embedding; "concat": [e(x), e(mirror x)] (2D); "average": e(x) + e(mirror x),
# renormalised by every distance (`facejax.distances`).
FLIPS = ("none", "concat", "average")


@dataclasses.dataclass(frozen=True)
class FileEmbeddings:
  """What `Embedder.embed_files` returns.

  paths: [N] the files that worked, in input order.
  embeddings: [N, D] float32 (D doubled by flip="concat"), row i for paths[i].
  skipped: {path: reason} of the files left out (unreadable, no face under align fallback
    "skip"), in input order.
  records: [N] alignment record per path (`align.align_image`), [] without alignment.
  """
  paths: list[str]
  embeddings: np.ndarray
  skipped: dict[str, str]
  records: list[dict] = dataclasses.field(default_factory=list)

  @property
  def no_face(self) -> list[str]:
    """Aligned paths where no face was found and the fallback crop was embedded instead."""
    return [p for p, r in zip(self.paths, self.records) if r.get("status") == "fallback"]


def input_hw(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(H, W) of the net's input, `config.data.image_size`."""
  return datasets.hw(config.data.image_size)


def restore_model_vars(config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
                       model=None) -> tuple[dict, int]:
  """({"params", "batch_stats"}, step) of `step` (default: newest good) of `workdir`.

  Reads the "model" item only, through a read-only manager. Raises
  `checkpointing.NoCheckpointError` (a `facejax.errors.CheckpointError`) for a workdir without
  checkpoints or without `step`, `checkpointing.IncompatibleCheckpointError` for a
  checkpoint of another net or embedding size (naming both). With no `step`, a damaged
  newest step is skipped with a warning; an explicitly asked-for damaged step is an error.
  """
  ckpt_dir = checkpointing.checkpoint_dir(workdir)
  if not epath.Path(ckpt_dir).exists():
    # Checked before Orbax is asked: a read-only manager on a missing folder warns.
    raise checkpointing.NoCheckpointError(
        f"no checkpoint in {ckpt_dir}: train first with `python -m facejax.main "
        f"--config=... --workdir={workdir}` or pass another --workdir")
  with contextlib.closing(checkpointing.make_manager(workdir, read_only=True)) as manager:
    steps = sorted(manager.all_steps())
    if not steps:
      raise checkpointing.NoCheckpointError(
          f"no checkpoint in {ckpt_dir}: train first with `python -m facejax.main "
          f"--config=... --workdir={workdir}` or pass another --workdir")
    if step is not None and step not in steps:
      raise checkpointing.NoCheckpointError(f"checkpoint step {step} not in {ckpt_dir} "
                                   f"(available: {steps})")
    model = model or create_model(config.model)
    h, w = input_hw(config)
    target = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, h, w, 3)), train=False))
    target = {"params": target["params"], "batch_stats": target.get("batch_stats", {})}
    if step is None:
      step, _, model_vars, _ = checkpointing.restore_latest_good(
          manager, workdir, config, target, quarantine=False)
    else:
      _, model_vars, _ = checkpointing.restore_verified(manager, step, config, target, None,
                                                        f"{ckpt_dir}/{step}")
  return model_vars, step


def standardize(x: jax.Array, mode: str) -> jax.Array:
  """[B, H, W, 3] pixels in [0, 255] -> float32 net input, per `input_pipeline.standardize`."""
  x = x.astype(jnp.float32)
  if mode == "fixed":
    return (x - 127.5) / 128.0
  # davidsandberg's prewhiten, per image: (x - mean) / max(std, 1 / sqrt(size)).
  n = x[0].size
  mean = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
  std = jnp.std(x, axis=(1, 2, 3), keepdims=True)
  return (x - mean) / jnp.maximum(std, 1.0 / np.sqrt(n))


def embed_images(model, variables: dict, x: jax.Array, flip: str,
                 standardization: str | None) -> jax.Array:
  """The evaluator's embedding of x [B, H, W, 3] -> [B, D] float32 (flip="concat": [B, 2D]).

  `standardization` None: `x` is standardised already (tf.data); else pixels in [0, 255]
  standardised here. flip "average" gives e(x) + e(mirror x), which every distance
  renormalises. Traceable with a symbolic batch (export): the mirror is `jnp.flip`, a
  reverse, where `x[:, :, ::-1]` would become a gather that TFLite cannot convert.
  The net runs in inference mode, where each image's embedding is its own: running the
  2B images in one call only changes the float rounding (about 1e-7).
  """
  if standardization is not None:
    x = standardize(x, standardization)
  if flip == "none":
    return model.apply(variables, x, train=False)[0]
  # One call on [x; mirror x]: an exported model then holds each weight once.
  b, h, w, c = x.shape
  both, _ = model.apply(variables, jnp.stack([x, jnp.flip(x, 2)]).reshape(2 * b, h, w, c),
                        train=False)
  # [2, B, D] taken apart by reshapes and a sum, not slices: a slice at a symbolic B
  # becomes a dynamic gather, which TFLite cannot convert.
  both = both.reshape(2, b, both.shape[-1])
  if flip == "concat":
    return jnp.swapaxes(both, 0, 1).reshape(-1, 2 * both.shape[-1])  # [e(x), e(mirror x)]
  return both.sum(0)


@functools.lru_cache(maxsize=32)
def _jitted_embed(model, flip: str, standardization: str | None):
  """One jitted `embed_images` per (net, flip, standardisation): chunked callers must not
  recompile."""
  return jax.jit(functools.partial(embed_images, model, flip=flip,
                                   standardization=standardization))


def _local_variables(variables: dict) -> dict:
  """{"params", "batch_stats"} as host-local arrays: in a multi-process run every process
  embeds on its own devices, so a globally sharded tree is read from its local copy."""
  variables = jax.tree.map(
      lambda x: np.asarray(x.addressable_data(0))
      if isinstance(x, jax.Array) and not x.is_fully_addressable else x, variables)
  out = {"params": variables["params"]}
  if jax.tree.leaves(variables.get("batch_stats", {})):
    out["batch_stats"] = variables["batch_stats"]
  return out


# --- Pillow decoding (embed_files) --------------------------------------------------------------

def preprocess_pil(image: Image.Image, prep: input_pipeline.Preprocessing) -> np.ndarray:
  """An RGB PIL image -> [image_size..., 3] uint8: `prep`'s evaluation crop and resize.

  Centre crop of `source_crop` (clipped to the shorter side), bilinear resize to
  `resize_size` (antialiased when shrinking, like TensorFlow's `antialias=True`), centre
  crop to `image_size` (offset (resize - size) // 2, as `resize_with_crop_or_pad`).
  """
  width, height = image.size
  box = (0, 0, width, height)
  if prep.source_crop:
    c = min(prep.source_crop, height, width)
    top, left = (height - c) // 2, (width - c) // 2
    box = (left, top, left + c, top + c)
  rh, rw = prep.resize_size
  if box == (0, 0, rw, rh):
    x = np.asarray(image)
  else:
    # The crop box goes to resize() itself: one pass, no intermediate copy.
    x = np.asarray(image.resize((rw, rh), Image.BILINEAR, box=box))
  h, w = prep.image_size
  top, left = (rh - h) // 2, (rw - w) // 2
  return x[top:top + h, left:left + w]


def _load(path: str, prep: input_pipeline.Preprocessing,
          aligner: Callable[[np.ndarray], tuple[np.ndarray | None, dict]] | None):
  """One file -> (uint8 [image_size..., 3] or None, alignment record, reason if None).

  Any mode Pillow reads (grayscale, CMYK, RGBA, palette, 16-bit) becomes RGB as PIL's
  convert("RGB") makes it: the pixels `image_check.rgb_png_bytes` gives the pipeline.
  """
  try:
    with Image.open(path) as im:
      rgb = im.convert("RGB")
  except Exception as e:  # noqa: BLE001 -- report the file, go on with the others
    return None, {}, f"unreadable: {type(e).__name__}: {e}"[:200]
  record = {}
  if aligner is not None:
    aligned, record = aligner(np.asarray(rgb))
    if aligned is None:
      return None, record, record.get("detail", "no face found")
    rgb = Image.fromarray(aligned)
  return preprocess_pil(rgb, prep), record, ""


class _ThreadAligner:
  """`align.align_image` with one MTCNN detector per thread (OpenCV nets are not shared)."""

  def __init__(self, spec):
    self.spec = spec
    self._local = threading.local()

  def __call__(self, image: np.ndarray):
    from facejax.data import align  # noqa: PLC0415 -- OpenCV only when aligning
    if not hasattr(self._local, "detector"):
      self._local.detector = align.Detector(self.spec.min_face_size)
    return align.align_image(image, self._local.detector, self.spec)


def _progress(total: int, desc: str, progress: bool | None):
  from tqdm import tqdm  # noqa: PLC0415
  # disable=None: tqdm turns itself off when stderr is not a terminal (logs, CI).
  disable = None if progress is None else not progress
  return tqdm(total=total, desc=desc, unit="img", disable=disable, leave=False)


# --- the embedder -------------------------------------------------------------------------------

class Embedder:
  """A net with its variables and evaluation preprocessing, jitted and batched (module doc).

  Attributes:
    config: the experiment config (model and data sections are used).
    model: `create_model(config.model)`.
    variables: {"params"[, "batch_stats"]}, replicated on `mesh`.
    preprocessing: `datasets.preprocessing(config.data, train=False)` with the
      standardisation override.
    flip: one of FLIPS.
    batch_size: images per device call, a multiple of the mesh size.
    step, workdir: where the variables came from (None when given in memory).
  """

  def __init__(self, config: ml_collections.ConfigDict, model, variables: dict, *,
               flip: str | None = None, standardization: str | None = None,
               batch_size: int | None = None, mesh: Mesh | None = None,
               step: int | None = None, workdir: str | None = None,
               preprocessing: input_pipeline.Preprocessing | None = None):
    flip = flip or config.eval.flip
    if flip not in FLIPS:
      raise errors.ConfigError(f"flip={flip!r}: choose one of {FLIPS}")
    prep = preprocessing or datasets.preprocessing(config.data, train=False)
    if standardization:
      prep = dataclasses.replace(prep, standardization=standardization)
    self.config, self.model, self.preprocessing, self.flip = config, model, prep, flip
    self.mesh = mesh or Mesh(np.asarray(jax.local_devices()), ("data",))
    batch_size = batch_size or config.eval.batch_size
    self.batch_size = -(-batch_size // self.mesh.size) * self.mesh.size
    self.step, self.workdir = step, None if workdir is None else str(workdir)
    self._sharding = NamedSharding(self.mesh, P("data"))
    self.variables = jax.device_put(_local_variables(variables), NamedSharding(self.mesh, P()))

  @classmethod
  def from_variables(cls, config: ml_collections.ConfigDict, variables: dict, *,
                     model=None, **overrides) -> "Embedder":
    """An embedder on variables in memory (the trainer's, a converted net's).

    `overrides`: flip, standardization, batch_size, mesh, step, workdir, preprocessing
    (default: `config.data`'s evaluation preprocessing).
    """
    return cls(config, model or create_model(config.model), variables, **overrides)

  @classmethod
  def from_workdir(cls, config: ml_collections.ConfigDict, workdir: str, step: int | None = None,
                   **overrides) -> "Embedder":
    """Restores the "model" item of `step` (default: the newest good one) of `workdir`.

    Raises `facejax.errors.CheckpointError` (no checkpoint, no such step, another net).
    """
    model = overrides.pop("model", None) or create_model(config.model)
    variables, step = restore_model_vars(config, workdir, step, model)
    return cls(config, model, variables, step=step, workdir=workdir, **overrides)

  def replace(self, **overrides) -> "Embedder":
    """The same net and variables with other flip / standardization / batch_size /
    preprocessing (whose standardisation applies unless `standardization` is given)."""
    kwargs = dict(flip=self.flip, standardization=self.preprocessing.standardization,
                  batch_size=self.batch_size, mesh=self.mesh, step=self.step,
                  workdir=self.workdir, preprocessing=self.preprocessing)
    if overrides.get("preprocessing") is not None and overrides.get("standardization") is None:
      kwargs["standardization"] = overrides["preprocessing"].standardization
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return Embedder(self.config, self.model, self.variables, **kwargs)

  @property
  def standardization(self) -> str:
    return self.preprocessing.standardization

  @property
  def embedding_dim(self) -> int:
    """Columns of the output: config.model.embedding_dim, doubled by flip="concat"."""
    return self.config.model.embedding_dim * (2 if self.flip == "concat" else 1)

  # -- the device side -----------------------------------------------------------------------

  def _dispatch(self, batch: np.ndarray, standardize_on_device: bool) -> tuple[jax.Array, int]:
    """Starts the net on `batch` [n <= batch_size, H, W, 3] (zero-padded to batch_size so
    the jitted function compiles once); returns (device result, n) without waiting."""
    n = len(batch)
    if n < self.batch_size:
      pad = np.zeros((self.batch_size - n,) + batch.shape[1:], batch.dtype)
      batch = np.concatenate([batch, pad])
    fn = _jitted_embed(self.model, self.flip,
                       self.standardization if standardize_on_device else None)
    return fn(self.variables, jax.device_put(batch, self._sharding)), n

  def _collect(self, batches: Any, total: int, desc: str, progress: bool | None,
               standardize_on_device: bool) -> np.ndarray:
    """Runs the net over `batches` (arrays) with at most 2 batches in flight."""
    out, in_flight = [], collections.deque()
    with _progress(total, desc, progress) as bar:
      for batch in batches:
        in_flight.append(self._dispatch(batch, standardize_on_device))
        if len(in_flight) > 2:  # back-pressure: the host never runs far ahead of the net
          e, n = in_flight.popleft()
          out.append(np.asarray(e)[:n])
          bar.update(n)
      while in_flight:
        e, n = in_flight.popleft()
        out.append(np.asarray(e)[:n])
        bar.update(n)
    if not out:
      return np.zeros((0, self.embedding_dim), np.float32)
    return np.concatenate(out).astype(np.float32)

  # -- the ways in ---------------------------------------------------------------------------

  def embed_arrays(self, images: np.ndarray, *, progress: bool | None = False,
                   desc: str = "embed") -> np.ndarray:
    """[N, H, W, 3] pixels in [0, 255] (uint8 or float), already at `image_size` ->
    [N, D] float32. Standardisation (`self.standardization`) and flip are applied here."""
    images = np.asarray(images)
    h, w = self.preprocessing.image_size
    if images.ndim != 4 or images.shape[1:] != (h, w, 3):
      raise ValueError(f"embed_arrays takes [N, {h}, {w}, 3] images (config.data.image_size), "
                       f"got shape {images.shape}")
    batches = (images[i:i + self.batch_size] for i in range(0, len(images), self.batch_size))
    return self._collect(batches, len(images), desc, progress, standardize_on_device=True)

  def embed_table(self, table: input_pipeline.ImageTable, *, progress: bool | None = None,
                  desc: str = "embed") -> np.ndarray:
    """Every image of `table` through the tf.data evaluation pipeline -> [N, D] float32.

    The pixels of training's decoder (see the module docstring): what the LFW and
    identity-folder evaluations use. `table.replacements` supply images TensorFlow
    cannot decode as Pillow does.
    """
    batches = (images[:valid] for images, valid in
               input_pipeline.eval_batches(table, self.preprocessing, self.batch_size))
    return self._collect(batches, len(table), desc, progress, standardize_on_device=False)

  def embed_files(self, paths: Sequence[str | os.PathLike], *, align_spec=None,
                  progress: bool | None = None, desc: str = "embed",
                  num_workers: int | None = None) -> FileEmbeddings:
    """Embeds image files, each decoded once by Pillow in a thread pool (module docstring).

    Args:
      paths: any files; the same path twice is embedded twice.
      align_spec: an `align.AlignSpec` to align each image with MTCNN first (a probe photo
        is cropped like the aligned training faces); files with no face follow its
        fallback ("center_crop" is recorded in `records`, "skip" lands in `skipped`).
      progress: a tqdm bar; None shows it on a terminal only.
      num_workers: decoding threads (default: the CPU count, at most 16).
    """
    paths = [os.fspath(p) for p in paths]
    aligner = _ThreadAligner(align_spec) if align_spec is not None else None
    workers = num_workers or min(16, os.cpu_count() or 1)
    load = functools.partial(_load, prep=self.preprocessing, aligner=aligner)
    kept, records, skipped = [], [], {}

    def batches(pool, bar):
      # A bounded window of decodes in flight: enough to keep every thread busy while the
      # net runs, never the whole folder in memory.
      window, upcoming = collections.deque(), iter(paths)
      limit = 2 * self.batch_size + 2 * workers
      buffer = []
      while True:
        while len(window) < limit:
          path = next(upcoming, None)
          if path is None:
            break
          window.append((path, pool.submit(load, path)))
        if not window:
          break
        path, future = window.popleft()
        image, record, reason = future.result()
        bar.update(1)
        if image is None:
          skipped[path] = reason
          bar.set_postfix(skipped=len(skipped))
          continue
        kept.append(path)
        records.append(record)
        buffer.append(image)
        if len(buffer) == self.batch_size:
          yield np.stack(buffer)
          buffer = []
      if buffer:
        yield np.stack(buffer)

    with concurrent.futures.ThreadPoolExecutor(workers) as pool, \
        _progress(len(paths), desc, progress) as bar:
      emb = self._collect(batches(pool, bar), len(paths), desc, False,
                          standardize_on_device=True)
    return FileEmbeddings(kept, emb, skipped, records if aligner is not None else [])
