"""Training tables over record files: an insightface `.rec`, or the ArrayRecord shards that
`facejax.data.prepare` writes. They offer `ImageTable`'s interface to the tf.data pipeline:
`read(index)` inside the graph (a `tf.numpy_function` that fetches one record by pread, so
nothing is loaded whole and start-up does not grow with the images), `len`, and
`first_bad(indices)`, which names the record behind a failed batch.

Decoding and augmentation stay in tf.data (`input_pipeline`): its C++ decoders and ops run
on a thread pool without the GIL, one process per host holds one copy of the index, and the
stateless augmentation ops keyed on (seed, step, slot) keep resume bit-exact. Only the read
itself takes the GIL, for a few microseconds per record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

from facejax import errors
from facejax.data import input_pipeline, recordio

INDEX_FILE = "index.npz"  # labels [N] int32, shard_sizes [S] int64
META_FILE = "meta.json"  # source, counts, class names file, the screening report
CLASSES_FILE = "classes.txt"  # one class name per line, in label order


class RecordTable:
  """Encoded images by row, read through `read_row(row) -> bytes`."""

  replacements: dict = {}

  def __init__(self, num_rows: int, read_row: Callable[[int], bytes],
               name_row: Callable[[int], str]):
    self._num_rows, self._read_row, self.name = num_rows, read_row, name_row

  def __len__(self) -> int:
    return self._num_rows

  def read_bytes(self, row: int) -> bytes:
    return self._read_row(int(row))

  def read_rows(self, rows) -> np.ndarray:
    """[n] object array of the encoded images of `rows` (read in Python, for tf.data's
    generator: `input_pipeline.train_batches`)."""
    out = np.empty(len(rows), object)
    for j, row in enumerate(rows):
      out[j] = self._read_row(int(row))
    return out

  def read(self, index: tf.Tensor) -> tf.Tensor:
    """Scalar int index -> scalar tf.string of the encoded image (works in graphs)."""
    out = tf.numpy_function(lambda i: np.bytes_(self._read_row(int(i))), [index], tf.string,
                            stateful=False)
    out.set_shape([])
    return out

  def first_bad(self, indices: Iterable[int]) -> errors.DataError:
    """The error of the first record among `indices` that cannot be read or decoded."""
    return input_pipeline.first_bad_image(indices, self._read_row, self.name)


def rec_table(rec: recordio.InsightfaceRec, keys: np.ndarray) -> RecordTable:
  """Rows 0..N-1 are the image records `keys` of `rec` (IRHeader stripped)."""
  keys = np.asarray(keys, np.int64)

  def read_row(row):
    return rec.image(int(keys[row]))[1]

  return RecordTable(len(keys), read_row,
                     lambda row: f"{rec.records.rec_path} record {int(keys[row])}")


def array_record_table(folder: str | os.PathLike) -> tuple[RecordTable, np.ndarray, list[str]]:
  """(table, labels [N] int32, class names) of a folder `facejax.data.prepare` wrote."""
  from array_record.python import array_record_data_source  # pylint: disable=import-outside-toplevel
  folder = os.fspath(folder)
  try:
    with np.load(os.path.join(folder, INDEX_FILE)) as index:
      labels, shard_sizes = index["labels"], index["shard_sizes"]
    with open(os.path.join(folder, META_FILE)) as f:
      meta = json.load(f)
    with open(os.path.join(folder, CLASSES_FILE)) as f:
      names = f.read().splitlines()
  except FileNotFoundError as e:
    raise errors.MissingDataError(
        f"{folder}: not a finished `facejax.data.prepare` output ({e.filename} is missing; "
        "run the same prepare command again to finish it)") from None
  shards = [os.path.join(folder, name) for name in meta["shards"]]
  if len(shards) != len(shard_sizes) or int(shard_sizes.sum()) != len(labels):
    raise errors.DataError(f"{os.path.join(folder, INDEX_FILE)}: {len(labels)} labels for "
                           f"shards of {shard_sizes.tolist()} records")
  source = array_record_data_source.ArrayRecordDataSource(shards)
  if len(source) != len(labels):
    raise errors.DataError(f"{folder}: the shards hold {len(source)} records, the index "
                           f"{len(labels)}")
  if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
    row = int(np.flatnonzero((labels < 0) | (labels >= len(names)))[0])
    raise errors.DataError(f"{os.path.join(folder, INDEX_FILE)}: record {row} has label "
                           f"{int(labels[row])}, outside the {len(names)} classes")
  starts = np.concatenate([[0], np.cumsum(shard_sizes)])

  def name_row(row):
    s = int(np.searchsorted(starts, row, side="right") - 1)
    return f"{shards[s]} record {row - int(starts[s])}"

  return RecordTable(len(labels), lambda row: source[row], name_row), labels, names
