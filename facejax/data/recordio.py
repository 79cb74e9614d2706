"""MXNet RecordIO (insightface's `train.rec` / `train.idx` / `property`), read without mxnet.

Framing (dmlc-core): each record is a little-endian uint32 magic 0xCED7230A, a uint32
`cflag << 29 | length`, the payload and zero padding to 4 bytes. cflag 0 is a whole record;
1, 2, 3 are the first, middle and last pieces of a payload that the writer split where the
magic word stood at a 4-byte boundary (the reader puts the magic back between pieces).

The `.idx` has one `key<TAB>offset` line per record. `RecordFile` reads a record by key with
`os.pread` at its offset, so the `.rec` is never loaded or scanned whole, and a handle can be
sent to worker processes (it reopens the file in each).

Payloads start with an IRHeader (`<IfQQ`: flag, label, id, id2); with flag > 0, `flag`
float32 labels follow the header and the header's label is 0 (`unpack`).

insightface's layout (`InsightfaceRec`): record 0 is a header whose labels are
[N + 1, N + 1 + K]; images are keys 1..N grouped by identity; keys N+1 .. N+K hold each
identity's [first, last + 1) image keys. The label index is built from those K records, not
from the N images. A `.rec` without that header (im2rec, WebFace42M) is indexed by reading
every image's IRHeader, which `facejax.data.prepare` does once.
"""

from __future__ import annotations

import dataclasses
import os
import struct

import numpy as np

from facejax import errors

MAGIC = 0xCED7230A
_FRAME = struct.Struct("<II")
_MAGIC_BYTES = struct.pack("<I", MAGIC)
IRHEADER = struct.Struct("<IfQQ")
_FLOAT32_EXACT = 2 ** 24  # header ranges above this are not exact (SCALE.md 1)


@dataclasses.dataclass(frozen=True)
class IRHeader:
  flag: int
  label: np.ndarray  # [max(flag, 1)] float32: the header label, or the `flag` array labels
  id: int
  id2: int


def unpack(payload: bytes) -> tuple[IRHeader, bytes]:
  """A record's payload -> (IRHeader, the bytes after the header and its labels)."""
  if len(payload) < IRHEADER.size:
    raise ValueError(f"payload of {len(payload)} bytes is shorter than an IRHeader")
  flag, label, id1, id2 = IRHEADER.unpack_from(payload)
  body = IRHEADER.size
  if flag > 0:
    end = body + 4 * flag
    if len(payload) < end:
      raise ValueError(f"IRHeader flag {flag} asks for {flag} labels, the payload is too short")
    labels = np.frombuffer(payload, np.float32, flag, body).copy()
    body = end
  else:
    labels = np.array([label], np.float32)
  return IRHeader(flag, labels, id1, id2), payload[body:]


def read_idx(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """`.idx` -> (keys [R] int64, offsets [R] int64), in file order."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise errors.MissingDataError(f"{path}: cannot read the RecordIO index ({e.strerror})")
  fields = raw.split()
  if len(fields) % 2:
    raise errors.DataError(f"{path}: an odd number of fields; each line is key<TAB>offset")
  try:
    table = np.array(fields, dtype=np.int64).reshape(-1, 2)
  except ValueError:
    bad = next(n for n, line in enumerate(raw.splitlines(), 1)
               if len(line.split()) != 2 or not all(v.isdigit() for v in line.split()))
    raise errors.DataError(f"{path}:{bad}: expected key<TAB>offset") from None
  return table[:, 0].copy(), table[:, 1].copy()


class RecordFile:
  """Random access by key to the records of a `.rec`, through its `.idx` (module docstring)."""

  def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
    self.rec_path = os.fspath(rec_path)
    self.idx_path = os.fspath(idx_path) if idx_path else os.path.splitext(self.rec_path)[0] + ".idx"
    if not os.path.isfile(self.rec_path):
      raise errors.MissingDataError(f"{self.rec_path}: no such RecordIO file")
    self.size = os.path.getsize(self.rec_path)
    self.keys, self.offsets = read_idx(self.idx_path)
    self._dense = bool(self.keys.size and np.array_equal(
        self.keys, np.arange(self.keys[0], self.keys[0] + self.keys.size)))
    if not self._dense:
      order = np.argsort(self.keys, kind="stable")
      self._sorted_keys, self._order = self.keys[order], order
    beyond = np.flatnonzero(self.offsets + _FRAME.size > self.size)
    if beyond.size:
      k = int(self.keys[beyond[0]])
      raise errors.DataError(
          f"{self.rec_path}: truncated or not the file of {self.idx_path}: record {k} starts at "
          f"byte {int(self.offsets[beyond[0]])}, the file has {self.size} bytes "
          f"({beyond.size} records past its end)")
    self._fd, self._pid = None, None

  def __len__(self) -> int:
    return int(self.keys.size)

  def __getstate__(self):
    return {**self.__dict__, "_fd": None, "_pid": None}

  def _file(self) -> int:
    if self._fd is None or self._pid != os.getpid():
      self._fd, self._pid = os.open(self.rec_path, os.O_RDONLY), os.getpid()
    return self._fd

  def close(self) -> None:
    if self._fd is not None and self._pid == os.getpid():
      os.close(self._fd)
    self._fd = None

  def offset(self, key: int) -> int:
    if self._dense:
      i = key - int(self.keys[0])
      found = 0 <= i < self.keys.size
    else:
      j = int(np.searchsorted(self._sorted_keys, key))
      found = j < self.keys.size and self._sorted_keys[j] == key
      i = int(self._order[j]) if found else -1
    if not found:
      raise errors.DataError(f"{self.idx_path}: no record {key}")
    return int(self.offsets[i])

  def _pread(self, n: int, at: int, key: int) -> bytes:
    data = os.pread(self._file(), n, at)
    if len(data) != n:
      raise errors.DataError(f"{self.rec_path}: record {key} is truncated: {n} bytes wanted "
                             f"at byte {at}, the file has {self.size}")
    return data

  def read(self, key: int) -> bytes:
    """The payload of record `key`; DataError naming the file and key on a bad frame."""
    at = self.offset(key)
    pieces = []
    while True:
      magic, lrec = _FRAME.unpack(self._pread(_FRAME.size, at, key))
      if magic != MAGIC:
        raise errors.DataError(
            f"{self.rec_path}: record {key}: no record starts at byte {at} (magic "
            f"{magic:#010x}, expected {MAGIC:#010x}); the .idx {self.idx_path} does not "
            "match this .rec")
      cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
      pieces.append(self._pread(length, at + _FRAME.size, key))
      first = len(pieces) == 1
      if cflag == 0 and not first or cflag == 3 and first or cflag in (1, 2) and \
          first != (cflag == 1):
        raise errors.DataError(f"{self.rec_path}: record {key}: piece flag {cflag} out of "
                               f"order at byte {at}")
      if cflag in (0, 3):
        break
      at += _FRAME.size + length  # pieces before the last carry no padding
    return _MAGIC_BYTES.join(pieces)

  def read_header(self, key: int) -> IRHeader:
    try:
      return unpack(self.read(key))[0]
    except ValueError as e:
      raise errors.DataError(f"{self.rec_path}: record {key}: {e}") from None


def read_property(path: str | os.PathLike) -> tuple[int, int, int] | None:
  """`property` -> (num_classes, height, width), or None when there is no such file."""
  if not os.path.isfile(path):
    return None
  text = open(path).read().strip()
  try:
    num_classes, height, width = (int(v) for v in text.split(","))
  except ValueError:
    raise errors.DataError(f"{path}: expected 'num_classes,height,width', got {text[:60]!r}") \
        from None
  return num_classes, height, width


@dataclasses.dataclass
class LabelIndex:
  """Which records are images and their integer labels, without the images themselves.

  keys: [N] int64 record keys of the images; labels: [N] int32 in [0, num_classes).
  """
  keys: np.ndarray
  labels: np.ndarray
  num_classes: int

  def __post_init__(self):
    if self.keys.shape != self.labels.shape:
      raise ValueError("keys and labels differ in length")


class InsightfaceRec:
  """An insightface training folder: `train.rec`, `train.idx`, optionally `property`."""

  def __init__(self, folder: str | os.PathLike, name: str = "train"):
    self.folder = os.fspath(folder)
    self.records = RecordFile(os.path.join(self.folder, f"{name}.rec"),
                              os.path.join(self.folder, f"{name}.idx"))
    self.property = read_property(os.path.join(self.folder, "property"))

  def image(self, key: int) -> tuple[IRHeader, bytes]:
    """(IRHeader, encoded image bytes) of image record `key`."""
    payload = self.records.read(key)
    try:
      return unpack(payload)
    except ValueError as e:
      raise errors.DataError(f"{self.records.rec_path}: record {key}: {e}") from None

  def label_index(self, *, scan: bool = False) -> LabelIndex:
    """The image keys and labels: from the identity records when record 0 is insightface's
    header (K reads), else, with `scan`, from every image's IRHeader (N reads)."""
    rec = self.records
    head = rec.read_header(int(rec.keys.min())) if len(rec) else None
    if head is not None and head.flag > 0 and head.label.size >= 2 and \
        head.label[1] <= _FLOAT32_EXACT:
      index = self._from_identity_records(head)
    elif scan:
      index = self._scan()
    else:
      raise errors.DataError(
          f"{rec.rec_path}: record 0 is not insightface's header (labels [N+1, N+1+K]); "
          "index it once with `python -m facejax.data.prepare`")
    if self.property and self.property[0] < index.num_classes:
      raise errors.DataError(f"{os.path.join(self.folder, 'property')}: {self.property[0]} "
                             f"classes, but the records have labels up to "
                             f"{index.num_classes - 1}")
    if self.property:
      index.num_classes = self.property[0]
    return index

  def _from_identity_records(self, head: IRHeader) -> LabelIndex:
    first_identity, end = int(head.label[0]), int(head.label[1])
    ranges = np.zeros((end - first_identity, 2), np.int64)
    for c, key in enumerate(range(first_identity, end)):
      h = self.records.read_header(key)
      if h.label.size < 2:
        raise errors.DataError(f"{self.records.rec_path}: record {key} should be identity "
                               f"{c}'s [first, last + 1) image range, has label {h.label}")
      ranges[c] = h.label[:2]
    sizes = ranges[:, 1] - ranges[:, 0]
    bad = (sizes <= 0) | (ranges[:, 0] != np.r_[1, ranges[:-1, 1]])
    bad[-1] |= ranges[-1, 1] != first_identity
    if bad.any():
      c = int(np.flatnonzero(bad)[0])
      raise errors.DataError(
          f"{self.records.rec_path}: identity record {first_identity + c} has image range "
          f"{ranges[c].tolist()}; the ranges must tile keys 1..{first_identity - 1} in order")
    keys = np.arange(1, first_identity, dtype=np.int64)
    labels = np.repeat(np.arange(len(ranges), dtype=np.int32), sizes)
    return LabelIndex(keys, labels, len(ranges))

  def _scan(self) -> LabelIndex:
    keys = np.sort(self.records.keys)
    labels = np.empty(keys.size, np.int64)
    for i, key in enumerate(keys.tolist()):
      labels[i] = int(self.records.read_header(key).label[0])
    if labels.size and labels.min() < 0:
      i = int(np.argmin(labels))
      raise errors.DataError(f"{self.records.rec_path}: record {int(keys[i])} has label "
                             f"{labels[i]}")
    return LabelIndex(keys, labels.astype(np.int32), int(labels.max()) + 1 if labels.size else 0)


class RecordWriter:
  """Writes a `.rec` and its `.idx` (for synthetic data and tests of other readers)."""

  def __init__(self, rec_path: str | os.PathLike, idx_path: str | os.PathLike | None = None):
    rec_path = os.fspath(rec_path)
    self._rec = open(rec_path, "wb")
    self._idx = open(idx_path or os.path.splitext(rec_path)[0] + ".idx", "w")

  def write(self, key: int, payload: bytes) -> None:
    self._idx.write(f"{key}\t{self._rec.tell()}\n")
    # dmlc splits the payload where the magic word sits at a 4-byte boundary.
    cuts = [i for i in range(0, len(payload) - 3, 4) if payload[i:i + 4] == _MAGIC_BYTES]
    starts = [0] + [c + 4 for c in cuts]
    ends = cuts + [len(payload)]
    for n, (a, b) in enumerate(zip(starts, ends)):
      last = n == len(cuts)
      cflag = 0 if not cuts else 1 if n == 0 else 3 if last else 2
      self._rec.write(_FRAME.pack(MAGIC, cflag << 29 | (b - a)))
      self._rec.write(payload[a:b])
      if last:
        self._rec.write(b"\0" * (-(b - a) % 4))

  def close(self) -> None:
    self._rec.close()
    self._idx.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def pack(label, image: bytes, id1: int = 0) -> bytes:
  """An IRHeader (a scalar or an array label, as mxnet's `pack`) followed by `image`."""
  label = np.asarray(label, np.float32).reshape(-1) if np.ndim(label) else float(label)
  if isinstance(label, float):
    return IRHEADER.pack(0, label, id1, 0) + image
  return IRHEADER.pack(label.size, 0.0, id1, 0) + label.tobytes() + image
