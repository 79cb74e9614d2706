"""RecordIO: records written by this test's own writer (framing per dmlc-core, written
word by word) read back by facejax byte for byte, with their labels; insightface's header
and identity records; split records; and each bad-file case naming the file and record."""

import struct

import numpy as np
import pytest

from facejax import errors
from facejax.data import recordio

MAGIC = 0xCED7230A


def _frame(cflag, chunk):
  pad = b"\0" * (-len(chunk) % 4)
  return struct.pack("<I", MAGIC) + struct.pack("<I", (cflag << 29) | len(chunk)) + chunk + pad


def _write_record(payload):
  """dmlc's writer: split at every 4-aligned magic word of the payload, dropping it."""
  words = len(payload) // 4
  splits = [4 * w for w in range(words)
            if struct.unpack_from("<I", payload, 4 * w)[0] == MAGIC]
  if not splits:
    return _frame(0, payload)
  out, start = b"", 0
  for n, at in enumerate(splits):
    out += _frame(1 if n == 0 else 2, payload[start:at])
    start = at + 4
  return out + _frame(3, payload[start:])


def _header(flag, label, id1=0):
  return struct.pack("<I", flag) + struct.pack("<f", label) + struct.pack("<QQ", id1, 0)


def _write(folder, records, *, property_text=None, shift_idx=0):
  """records: {key: payload}; writes train.rec/.idx (and property)."""
  folder.mkdir(parents=True, exist_ok=True)
  data, lines = b"", []
  for key, payload in records.items():
    lines.append(f"{key}\t{len(data) + shift_idx}")
    data += _write_record(payload)
  (folder / "train.rec").write_bytes(data)
  (folder / "train.idx").write_text("\n".join(lines) + "\n")
  if property_text:
    (folder / "property").write_text(property_text)
  return folder


def _insightface(folder, sizes, *, array_labels=False, **kw):
  """insightface's layout: header, images grouped by identity, identity records."""
  rng = np.random.default_rng(0)
  n = sum(sizes)
  records, images, key = {}, {}, 1
  for c, size in enumerate(sizes):
    for _ in range(size):
      image = bytes(rng.integers(0, 256, int(rng.integers(1, 60)), dtype=np.uint8))
      if array_labels:  # face2rec2: [class, aligned]
        payload = _header(2, 0.0, key) + struct.pack("<ff", c, 1.0) + image
      else:
        payload = _header(0, float(c), key) + image
      records[key], images[key] = payload, (c, image)
      key += 1
  first = n + 1
  records = {0: _header(2, 0.0) + struct.pack("<ff", first, first + len(sizes)), **records}
  start = 1
  for c, size in enumerate(sizes):
    records[first + c] = _header(2, 0.0) + struct.pack("<ff", start, start + size)
    start += size
  return _write(folder, records, **kw), images


@pytest.mark.parametrize("array_labels", [False, True])
def test_round_trip_insightface_layout(tmp_path, array_labels):
  sizes = [3, 1, 5, 2]
  folder, images = _insightface(tmp_path / "rec", sizes, array_labels=array_labels,
                                property_text="4,112,112")
  rec = recordio.InsightfaceRec(folder)
  index = rec.label_index()
  assert index.num_classes == 4
  assert index.keys.tolist() == list(range(1, 12))
  assert index.labels.tolist() == [c for c, s in enumerate(sizes) for _ in range(s)]
  for key, (c, image) in images.items():
    header, body = rec.image(key)
    assert body == image and int(header.label[0]) == c and header.id == key


def test_split_records_rejoin_with_the_magic(tmp_path):
  magic = struct.pack("<I", MAGIC)
  payloads = {1: b"abcd" + magic + b"efgh" + magic + b"xy",  # two aligned magics: 3 pieces
              2: magic + b"tail",                             # a split at offset 0
              3: b"ab" + magic + b"cd",                       # unaligned: not split
              4: b"1234" + magic}                             # empty last piece
  _write(tmp_path, payloads)
  # frames: 3, 2, 1 (its unaligned magic kept inside), 2
  assert (tmp_path / "train.rec").read_bytes().count(magic) == 3 + 2 + (1 + 1) + 2
  rec = recordio.RecordFile(tmp_path / "train.rec")
  for key, payload in payloads.items():
    assert rec.read(key) == payload


def test_facejax_writer_matches_the_independent_one(tmp_path):
  magic = struct.pack("<I", MAGIC)
  payloads = {0: b"", 1: b"abcd" + magic + b"efgh" + magic + b"xy", 7: b"odd", 3: magic}
  _write(tmp_path / "a", payloads)
  (tmp_path / "b").mkdir()
  with recordio.RecordWriter(tmp_path / "b" / "train.rec") as w:
    for key, payload in payloads.items():
      w.write(key, payload)
  for name in ("train.rec", "train.idx"):
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
  assert recordio.pack([3, 1], b"img") == _header(2, 0.0) + struct.pack("<ff", 3, 1) + b"img"
  assert recordio.pack(5, b"img", 9) == _header(0, 5.0, 9) + b"img"


def test_rec_without_header_is_scanned(tmp_path):
  records = {k: _header(0, float(c)) + b"jpeg" for k, c in enumerate([0, 0, 2, 1, 2])}
  _write(tmp_path, records)
  rec = recordio.InsightfaceRec(tmp_path)
  with pytest.raises(errors.DataError, match="prepare"):
    rec.label_index()
  index = rec.label_index(scan=True)
  assert index.keys.tolist() == [0, 1, 2, 3, 4]
  assert index.labels.tolist() == [0, 0, 2, 1, 2] and index.num_classes == 3


def test_truncated_rec_names_the_record(tmp_path):
  folder, _ = _insightface(tmp_path, [2, 2])
  data = (folder / "train.rec").read_bytes()
  (folder / "train.rec").write_bytes(data[:len(data) - 30])
  rec = recordio.InsightfaceRec(folder)
  with pytest.raises(errors.DataError, match=r"train.rec: record 6 is truncated"):
    rec.label_index()
  (folder / "train.rec").write_bytes(data[:40])
  with pytest.raises(errors.DataError, match=r"truncated or not the file of .*train.idx: "
                                             r"record \d+ starts at byte"):
    recordio.InsightfaceRec(folder)


def test_idx_that_disagrees_with_its_rec(tmp_path):
  folder, _ = _insightface(tmp_path, [2, 2], shift_idx=4)
  with pytest.raises(errors.DataError, match=r"train.rec: record 0: no record starts at byte 4 "
                                             r".*does not match this .rec"):
    recordio.InsightfaceRec(folder).label_index()
  (folder / "train.idx").write_text("0\t0\n1\tx\n")
  with pytest.raises(errors.DataError, match=r"train.idx:2: expected key<TAB>offset"):
    recordio.RecordFile(folder / "train.rec")


def test_identity_ranges_and_property_are_checked(tmp_path):
  folder, _ = _insightface(tmp_path / "a", [2, 2], property_text="1,112,112")
  with pytest.raises(errors.DataError, match=r"property: 1 classes, but the records have "
                                             r"labels up to 1"):
    recordio.InsightfaceRec(folder).label_index()
  records = {0: _header(2, 0.0) + struct.pack("<ff", 4, 6),
             1: _header(0, 0.0), 2: _header(0, 0.0), 3: _header(0, 1.0),
             4: _header(2, 0.0) + struct.pack("<ff", 1, 3),
             5: _header(2, 0.0) + struct.pack("<ff", 2, 4)}  # overlaps identity 0
  _write(tmp_path / "b", records)
  with pytest.raises(errors.DataError, match=r"identity record 5 has image range \[2, 4\]"):
    recordio.InsightfaceRec(tmp_path / "b").label_index()


def test_handle_reopens_in_another_process(tmp_path):
  import multiprocessing  # pylint: disable=import-outside-toplevel
  _write(tmp_path, {0: b"zero", 1: b"one!"})
  rec = recordio.RecordFile(tmp_path / "train.rec")
  assert rec.read(1) == b"one!"
  with multiprocessing.get_context("spawn").Pool(1) as pool:
    assert pool.apply(rec.read, (0,)) == b"zero"
