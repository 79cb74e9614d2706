"""tf.data input pipeline: P x K identity-balanced batches and evaluation batches.

Determinism: the images of training step `s` are a pure function of
`(seed, s)` (`facejax.data.sampling`), and every random augmentation is a
stateless op keyed on `(seed, s, slot)`. A run that resumes at step `s`
therefore sees exactly the batches an uninterrupted run would have, with no
iterator state to checkpoint.
"""

import dataclasses
from collections.abc import Callable
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow as tf

from facejax import errors
from facejax.data.sampling import ClassIndex, Sampler

# tf.data runs on the host only; a GPU build of TensorFlow must not claim the
# accelerator memory that JAX needs.
tf.config.set_visible_devices([], "GPU")

STANDARDIZATIONS = ("fixed", "prewhiten")  # (x - 127.5) / 128 | per-image whitening


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How an encoded image becomes a net input.

  The source image (e.g. a 250x250 LFW original) is centre-cropped to
  `source_crop` pixels (0 = keep all), resized to `resize_size`, then cropped
  to `image_size`: a random crop when training with `random_crop`, the centre
  crop otherwise, so train and eval see faces at the same scale.

  Training augmentations after the crop, each off at its default (flip aside):
  `random_scale` (s_min, s_max): zoom by a factor drawn in the range (a crop of
  1/s of the side, resized back; s < 1 shrinks the face into a black border);
  `random_rotate`: degrees, uniform in [-d, d] about the centre (davidsandberg's
  `--random_rotate` draws in [-10, 10]); `color_jitter`: (brightness, contrast,
  saturation), brightness added in [-b, b] x 255, contrast and saturation
  factors in [1 - c, 1 + c]. Every draw is a stateless op keyed on (seed, step,
  slot), so resume stays bit-exact.
  """
  image_size: tuple[int, int]
  resize_size: tuple[int, int]
  source_crop: int = 0
  standardization: str = "fixed"  # "fixed": (x-127.5)/128 | "prewhiten"
  random_flip: bool = True
  random_crop: bool = True
  random_scale: tuple[float, float] | None = None
  random_rotate: float = 0.0
  color_jitter: tuple[float, float, float] | None = None

  def __post_init__(self):
    if self.standardization not in STANDARDIZATIONS:
      raise ValueError(
          f"config.data.standardization={self.standardization!r}: use 'fixed' or 'prewhiten'")
    if any(r < i for r, i in zip(self.resize_size, self.image_size)):
      raise ValueError(f"config.data.resize_size {self.resize_size} is smaller than "
                       f"config.data.image_size {self.image_size}")
    problems = augmentation_problems(self.random_scale, self.random_rotate, self.color_jitter)
    if problems:
      raise ValueError("; ".join(problems))

  @property
  def augments(self) -> bool:
    return bool(self.random_scale or self.random_rotate or self.color_jitter)


def augmentation_problems(random_scale, random_rotate, color_jitter) -> list[str]:
  """One message per bad augmentation setting (`Preprocessing`), naming its config key."""
  problems = []
  if random_scale is not None and not (
      len(random_scale) == 2 and 0 < random_scale[0] <= random_scale[1]):
    problems.append(f"config.data.random_scale={tuple(random_scale)!r}: (s_min, s_max) with "
                    "0 < s_min <= s_max, or None")
  if not 0 <= random_rotate <= 180:
    problems.append(f"config.data.random_rotate={random_rotate!r}: degrees in [0, 180]")
  if color_jitter is not None and not (
      len(color_jitter) == 3 and all(0 <= v < 1 for v in color_jitter)):
    problems.append(f"config.data.color_jitter={tuple(color_jitter)!r}: (brightness, "
                    "contrast, saturation), each in [0, 1), or None")
  return problems


def standardize(image: tf.Tensor, mode: str) -> tf.Tensor:
  """[H, W, 3] float32 in [0, 255] -> standardised float32."""
  if mode == "fixed":
    return (image - 127.5) / 128.0
  # Per-image whitening as in davidsandberg/facenet's `prewhiten`.
  mean = tf.reduce_mean(image)
  std = tf.math.reduce_std(image)
  n = tf.cast(tf.size(image), tf.float32)
  return (image - mean) / tf.maximum(std, 1.0 / tf.sqrt(n))


def decode_and_preprocess(encoded: tf.Tensor, seed: tf.Tensor, prep: Preprocessing,
                          train: bool) -> tf.Tensor:
  """Encoded JPEG/PNG bytes -> [image_size..., 3] float32.

  Grayscale and RGBA inputs become RGB via `channels=3`. `seed` is a [2] int
  tensor for the stateless augmentation ops.
  """
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)  # uint8
  if prep.source_crop:
    shape = tf.shape(image)
    c = tf.minimum(prep.source_crop, tf.minimum(shape[0], shape[1]))
    image = tf.image.crop_to_bounding_box(image, (shape[0] - c) // 2, (shape[1] - c) // 2, c, c)
  h, w = prep.image_size

  def crop_and_flip(image):
    if train and prep.random_crop:
      image = tf.image.stateless_random_crop(image, (h, w, 3), seed=seed)
    elif tuple(prep.resize_size) != (h, w):
      image = tf.image.resize_with_crop_or_pad(image, h, w)
    if train and prep.random_flip:
      image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    return image

  def resized():
    return crop_and_flip(tf.image.resize(image, prep.resize_size, method="bilinear",
                                         antialias=True))

  # Images already at resize_size (pre-aligned records) skip the resize, which would be the
  # identity, exactly, and are cropped and flipped as uint8: the same values, at a fraction
  # of the cost of the float path.
  same_size = tf.reduce_all(tf.equal(tf.shape(image)[:2], prep.resize_size))
  image = tf.cond(same_size, lambda: tf.cast(crop_and_flip(image), tf.float32), resized)
  image.set_shape((h, w, 3))
  if train and prep.augments:
    image = augment(image, seed, prep)
  return standardize(image, prep.standardization)


def _rotation_and_zoom(angle: tf.Tensor, zoom: tf.Tensor, h: int, w: int) -> tf.Tensor:
  """[8] projective transform (output -> input coordinates) rotating by `angle` radians and
  zooming by `zoom` about the image centre."""
  cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
  cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
  return tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                   sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])


def augment(image: tf.Tensor, seed: tf.Tensor, prep: Preprocessing) -> tf.Tensor:
  """The optional training augmentations (`Preprocessing`) of a [H, W, 3] float image."""
  h, w = prep.image_size
  angle, zoom = tf.constant(0.0), tf.constant(1.0)
  if prep.random_rotate:
    limit = prep.random_rotate * np.pi / 180
    angle = tf.random.stateless_uniform([], seed + 2, -limit, limit)
  if prep.random_scale:
    zoom = tf.random.stateless_uniform([], seed + 3, *prep.random_scale)
  if prep.random_rotate or prep.random_scale:
    image = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=_rotation_and_zoom(angle, zoom, h, w)[None],
        output_shape=tf.constant([h, w]), fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT")[0]
  if prep.color_jitter:
    brightness, contrast, saturation = prep.color_jitter
    if brightness:
      image = image + tf.random.stateless_uniform([], seed + 4, -brightness, brightness) * 255
    if contrast:
      image = tf.image.stateless_random_contrast(image, 1 - contrast, 1 + contrast, seed + 5)
    if saturation:
      image = tf.image.stateless_random_saturation(image, 1 - saturation, 1 + saturation,
                                                   seed + 6)
    image = tf.clip_by_value(image, 0.0, 255.0)
  return image


# A decoder's error, or (UnknownError) an exception raised by a record read in Python.
_LOAD_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.UnknownError)


def first_bad_image(indices, read: Callable[[int], Any], name: Callable[[int], str]
                    ) -> errors.DataError:
  """The error of the first image among `indices` that cannot be read (`read` raises a
  DataError) or that TensorFlow cannot decode, for a table's `first_bad`."""
  for i in indices:
    try:
      data = read(int(i))
    except errors.DataError as e:
      return e
    try:
      tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as e:
      return ImageDecodeError(name(int(i)), e.message)
  return errors.DataError("a batch failed to load, but each of its images reads and decodes "
                          "on its own")


class ImageDecodeError(errors.DataError):
  """An image could not be decoded; the message names the file."""

  def __init__(self, path: str, detail: str):
    super().__init__(f"cannot decode image {path}: {detail.splitlines()[0]}")
    self.path = path


class ImageTable:
  """Random access to encoded images: file paths on disk, or bytes in memory.

  `paths` are absolute file paths; `encoded` (optional) holds the same images
  already read into memory, e.g. from a prepared TFDS dataset. `replacements`
  (optional) maps an index to encoded bytes used instead of that image, for
  files TensorFlow cannot decode as PIL would (see `image_check.rgb_png_bytes`).
  """

  def __init__(self, paths: Sequence[str], encoded: Sequence[bytes] | None = None,
               replacements: dict[int, bytes] | None = None):
    self.paths = list(paths)
    self._paths_t = tf.constant(self.paths)
    self._encoded_t = None if encoded is None else tf.constant(list(encoded))
    self.replacements = dict(replacements or {})
    outside = [i for i in self.replacements if not 0 <= i < len(self.paths)]
    if outside:
      raise ValueError(f"replacement indices {sorted(outside)[:5]} are outside the "
                       f"{len(self.paths)} images of the table")
    self._slot_t = self._replacement_t = None
    if self.replacements:
      order = sorted(self.replacements)
      # slot[i] is the row of image i in the replacement table, -1 for images read as usual.
      slot = np.full(len(self.paths), -1, np.int32)
      slot[order] = np.arange(len(order), dtype=np.int32)
      self._slot_t = tf.constant(slot)
      self._replacement_t = tf.constant([self.replacements[i] for i in order])

  def __len__(self):
    return len(self.paths)

  def first_bad(self, indices) -> errors.DataError:
    """The decode error of the first image among `indices` that TensorFlow cannot decode."""
    return first_bad_image(indices, lambda i: self.read(tf.constant(i)),
                           lambda i: self.paths[i])

  def _read_original(self, index: tf.Tensor) -> tf.Tensor:
    if self._encoded_t is not None:
      return tf.gather(self._encoded_t, index)
    return tf.io.read_file(tf.gather(self._paths_t, index))

  def read(self, index: tf.Tensor) -> tf.Tensor:
    """Scalar int index -> scalar tf.string of encoded image bytes (works in graphs)."""
    if self._slot_t is None:
      return self._read_original(index)
    slot = tf.gather(self._slot_t, index)
    # tf.cond runs one branch only: the file of a replaced image is never read.
    return tf.cond(slot >= 0, lambda: tf.gather(self._replacement_t, slot),
                   lambda: self._read_original(index))


def train_batches(table: ImageTable, classes: ClassIndex, prep: Preprocessing,
                  sampler: Sampler, *, start_step: int, num_steps: int,
                  process_index: int = 0, process_count: int = 1,
                  prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
  """Yields this host's share of each global batch, steps start..num_steps-1.

  Every host samples the same global batch (`sampler`) and keeps its
  contiguous slice, so the global batch assembled on the device mesh is
  identical whatever the number of hosts.

  Yields dicts: image [B_local, H, W, 3] float32, label [B_local] int32,
  mask [B_local] bool, index [B_local] int64 (into `table`), step () int64.
  """
  global_batch = sampler.global_batch
  if global_batch % process_count:
    raise ValueError(f"global batch {global_batch} is not divisible by {process_count} hosts")
  local = global_batch // process_count
  lo = process_index * local

  def sample(step):
    return sampler.sample(classes, step)

  # Record tables are read here, in the generator's Python thread (one pread per record),
  # rather than by a tf.numpy_function per image, whose GIL round trip costs more.
  read_rows = getattr(table, "read_rows", None)

  def step_indices():
    for step in range(start_step, num_steps):
      idx, lab, msk = sample(step)
      idx, lab, msk = idx[lo:lo + local], lab[lo:lo + local], msk[lo:lo + local]
      slots = np.arange(lo, lo + local, dtype=np.int64)
      encoded = read_rows(idx) if read_rows else np.full(local, b"", object)
      yield np.int64(step), idx, lab, msk, slots, encoded

  spec = (tf.TensorSpec((), tf.int64), tf.TensorSpec((local,), tf.int64),
          tf.TensorSpec((local,), tf.int32), tf.TensorSpec((local,), tf.bool),
          tf.TensorSpec((local,), tf.int64), tf.TensorSpec((local,), tf.string))
  ds = tf.data.Dataset.from_generator(step_indices, output_signature=spec)

  def per_image(step, idx, lab, msk, slots, encoded):
    n = tf.shape(idx)[0]
    return tf.data.Dataset.from_tensor_slices(
        (tf.fill([n], step), idx, lab, msk, slots, encoded))

  def load(step, idx, lab, msk, slot, encoded):
    # Seeds depend on (seed, step, slot) only: stable across restarts and hosts.
    aug_seed = tf.stack([tf.cast(sampler.seed, tf.int64) * 1_000_003 + step, slot])
    image = decode_and_preprocess(encoded if read_rows else table.read(idx), aug_seed, prep,
                                  train=True)
    return {"image": image, "label": lab, "mask": msk, "index": idx, "step": step}

  ds = ds.flat_map(per_image)
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(local, drop_remainder=True)
  ds = ds.map(lambda b: {**b, "step": b["step"][0]})
  ds = ds.prefetch(prefetch)
  it = iter(ds.as_numpy_iterator())
  step = start_step
  while True:
    try:
      batch = next(it)
    except StopIteration:
      return
    except _LOAD_ERRORS as e:
      idx, _, _ = sample(step)
      raise table.first_bad(idx[lo:lo + local]) from e
    step += 1
    yield batch


def eval_batches(table: ImageTable, prep: Preprocessing, batch_size: int
                 ) -> Iterator[tuple[np.ndarray, int]]:
  """Yields ([batch_size, H, W, 3] float32, n_valid) over `table` in order.

  The last batch is zero-padded to `batch_size` so the jitted embedding
  function compiles once; `n_valid` says how many rows are real.
  """
  n = len(table)
  ds = tf.data.Dataset.range(n).map(
      lambda i: decode_and_preprocess(table.read(i), tf.zeros([2], tf.int64), prep, train=False),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(batch_size).prefetch(2)
  it = iter(ds.as_numpy_iterator())
  start = 0
  while True:
    try:
      images = next(it)
    except StopIteration:
      return
    except _LOAD_ERRORS as e:
      raise table.first_bad(range(start, min(n, start + batch_size))) from e
    valid = images.shape[0]
    start += valid
    if valid < batch_size:
      images = np.concatenate(
          [images, np.zeros((batch_size - valid,) + images.shape[1:], images.dtype)])
    yield images, valid
