"""Which images each training step draws: a pure function of (seed, step), at a cost per step
that does not grow with the dataset.

`ClassIndex` is the integer label index of a training table (N images, K classes): the
images sorted by class and each class's offset, 4 or 8 bytes per image. The P x K sampler
picks P classes with numpy's Floyd sampling (O(P)) and K images of each; the shuffle
sampler walks a keyed pseudo-random permutation of the N images (a Feistel network with
cycle walking, `permute`), so step s reads positions s*B .. s*B+B-1 of the epoch order in
O(B), with no permutation of N built. A restart at step s gets the same batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

SAMPLINGS = ("pk", "shuffle")
_ROUNDS = 6
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassIndex:
  """Images by class. labels: [N] int32 class of each table row; images: [N] the rows sorted
  by class (stable); offsets: [K + 1], class c's rows are images[offsets[c]:offsets[c + 1]];
  eligible: [K'] the classes with at least `min_images` images (the P x K sampler's)."""
  labels: np.ndarray
  images: np.ndarray
  offsets: np.ndarray
  eligible: np.ndarray

  @classmethod
  def from_labels(cls, labels: np.ndarray, num_classes: int | None = None,
                  min_images: int = 1) -> "ClassIndex":
    labels = np.asarray(labels, np.int32)
    num_classes = int(labels.max()) + 1 if num_classes is None and labels.size else \
        int(num_classes or 0)
    index_type = np.int32 if labels.size < 2 ** 31 else np.int64
    images = np.argsort(labels, kind="stable").astype(index_type)
    counts = np.bincount(labels, minlength=num_classes)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    eligible = np.flatnonzero(counts >= max(min_images, 1)).astype(np.int32)
    return cls(labels, images, offsets, eligible)

  @classmethod
  def from_lists(cls, indices_by_class: Sequence[np.ndarray]) -> "ClassIndex":
    """From one array of row indices per class (rows 0..N-1, each in one class)."""
    n = sum(len(m) for m in indices_by_class)
    labels = np.full(n, -1, np.int32)
    for c, members in enumerate(indices_by_class):
      labels[np.asarray(members, np.int64)] = c
    if (labels < 0).any():
      raise ValueError("indices_by_class must cover rows 0..N-1 exactly once")
    return cls.from_labels(labels, len(indices_by_class))

  @property
  def num_images(self) -> int:
    return int(self.labels.size)

  @property
  def num_classes(self) -> int:
    return int(self.offsets.size - 1)

  def members(self, c: int) -> np.ndarray:
    return self.images[self.offsets[c]:self.offsets[c + 1]]

  def counts(self) -> np.ndarray:
    return np.diff(self.offsets)

  def nbytes(self) -> int:
    return sum(a.nbytes for a in (self.labels, self.images, self.offsets, self.eligible))


def _mix(x: np.ndarray, key: np.uint64) -> np.ndarray:
  """A 64-bit mixing function (splitmix64's finaliser) of x ^ key."""
  with np.errstate(over="ignore"):
    z = (x ^ key) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _feistel(x: np.ndarray, half_bits: int, keys: np.ndarray) -> np.ndarray:
  """A balanced Feistel network: a bijection of [0, 4**half_bits)."""
  mask = np.uint64((1 << half_bits) - 1)
  shift = np.uint64(half_bits)
  left, right = x >> shift, x & mask
  for key in keys:
    left, right = right, left ^ (_mix(right, key) & mask)
  return (left << shift) | right


def permute(positions: np.ndarray, n: int, key: Sequence[int]) -> np.ndarray:
  """The images at `positions` ([B] in [0, n)) of a pseudo-random permutation of [0, n) keyed
  by `key`: a bijection, evaluated in O(B) (cycle walking keeps the Feistel network's
  outputs in [0, n); the domain is under 4n, so a few walks on average)."""
  positions = np.asarray(positions, np.int64)
  if n <= 1:
    return np.zeros_like(positions)
  half_bits = max(1, (int(n - 1).bit_length() + 1) // 2)
  keys = np.random.default_rng(list(key)).integers(0, 2 ** 63, _ROUNDS, dtype=np.uint64)
  x = positions.astype(np.uint64)
  x = _feistel(x, half_bits, keys)
  outside = x >= np.uint64(n)
  while outside.any():
    x[outside] = _feistel(x[outside], half_bits, keys)
    outside = x >= np.uint64(n)
  return x.astype(np.int64)


def sample_pk(classes: ClassIndex, num_identities: int, images_per_identity: int, seed: int,
              step: int):
  """The identity-balanced batch of one training step, a function of (seed, step).

  Picks P classes without replacement among `classes.eligible`, then up to K of each one's
  images without replacement. A class with fewer than K images fills its remaining slots
  with masked rows (mask False) instead of duplicates: a duplicated image would form a
  trivially easy positive pair.

  Returns:
    indices [P*K] int64 (table rows), labels [P*K] int32 (class), mask [P*K] bool.
  """
  rng = np.random.default_rng([seed, step])
  picked = classes.eligible[rng.choice(classes.eligible.size, size=num_identities,
                                       replace=False)]
  k = images_per_identity
  indices = np.zeros((num_identities, k), np.int64)
  mask = np.zeros((num_identities, k), bool)
  for row, c in enumerate(picked):
    members = classes.members(c)
    take = min(k, len(members))
    indices[row, :take] = members[rng.choice(len(members), size=take, replace=False)]
    indices[row, take:] = indices[row, 0]
    mask[row, :take] = True
  labels = np.repeat(picked.astype(np.int32), k)
  return indices.reshape(-1), labels, mask.reshape(-1)


def sample_shuffled(classes: ClassIndex, batch_size: int, seed: int, step: int):
  """A plain shuffled batch (classification losses), a function of (seed, step).

  Epoch e visits every image once, in the order of the permutation keyed by (seed, e).
  Step s takes images s*B .. s*B+B-1 of the concatenated epochs, so a batch may straddle two
  epochs, and a restart at any step gets the same batches.

  Returns:
    indices [B] int64, labels [B] int32, mask [B] bool (all True).
  """
  n = classes.num_images
  positions = np.arange(step * batch_size, (step + 1) * batch_size, dtype=np.int64)
  epochs, offsets = positions // n, positions % n
  rows = np.empty(batch_size, np.int64)
  for e in np.unique(epochs):
    here = epochs == e
    rows[here] = permute(offsets[here], n, (seed, int(e), 1))
  return rows, classes.labels[rows].astype(np.int32), np.ones(batch_size, bool)


@dataclasses.dataclass(frozen=True)
class Sampler:
  """Which images each training step draws: a pure function of `(seed, step)`.

  `sampling` "pk" draws identity-balanced P x K batches (`sample_pk`, P = `num_identities`,
  K = `images_per_identity`); "shuffle" draws `batch_size` images in epoch order
  (`sample_shuffled`), which is what the classification losses need.
  """
  sampling: str = "pk"
  num_identities: int = 0
  images_per_identity: int = 0
  batch_size: int | None = None  # "shuffle" only; P x K for "pk"
  seed: int = 0

  def __post_init__(self):
    if self.sampling not in SAMPLINGS:
      raise ValueError(f"sampling={self.sampling!r}: use one of {SAMPLINGS}")
    if self.sampling == "shuffle" and not self.batch_size:
      raise ValueError("sampling='shuffle' needs a batch_size")

  @classmethod
  def from_config(cls, config) -> "Sampler":
    """The sampler of an experiment config (its top level and `data.sampling`)."""
    return cls(sampling=config.data.get("sampling", "pk"), num_identities=config.num_identities,
               images_per_identity=config.images_per_identity, batch_size=config.batch_size,
               seed=config.seed)

  @property
  def global_batch(self) -> int:
    if self.sampling == "pk":
      return self.num_identities * self.images_per_identity
    return self.batch_size

  def sample(self, classes: ClassIndex, step: int):
    """indices [B] int64, labels [B] int32, mask [B] bool of the global batch of `step`."""
    if self.sampling == "pk":
      return sample_pk(classes, self.num_identities, self.images_per_identity, self.seed, step)
    return sample_shuffled(classes, self.batch_size, self.seed, step)
