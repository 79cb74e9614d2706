"""facejax.data.prepare: identity folders and .rec folders into ArrayRecord shards read back
byte for byte with their labels; bad images skipped and reported by file or record; a run
that died resumes and rewrites only the unfinished shards; the CLI's one-line errors."""

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facejax import errors
from facejax.data import prepare, record_tables, recordio, synthetic_rec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEOPLE = ("Aaron_Peirsol", "Abdullah_Gul", "Adam_Sandler", "Al_Gore", "Alvaro_Uribe")


@pytest.fixture
def folder(lfw_root, tmp_path):
  """5 people x 3 LFW JPEGs, plus a corrupt file, an empty one and a grayscale PGM (which
  TensorFlow cannot decode: re-encoded as RGB PNG)."""
  root = tmp_path / "faces"
  for name in PEOPLE:
    (root / name).mkdir(parents=True)
    for src in sorted((lfw_root / "lfw" / name).glob("*.jpg"))[:3]:
      shutil.copy(src, root / name / src.name)
  (root / "Al_Gore" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
  (root / "Adam_Sandler" / "empty.jpg").write_bytes(b"")
  Image.open(sorted((root / "Alvaro_Uribe").glob("*.jpg"))[0]).convert("L").save(
      root / "Alvaro_Uribe" / "gray.pgm")
  return root


def _read_back(out):
  table, labels, names = record_tables.array_record_table(out)
  return [table.read_bytes(i) for i in range(len(table))], labels, names


def test_identity_folder_round_trip_with_screening(folder, tmp_path):
  out = tmp_path / "ar"
  meta = prepare.prepare(prepare.parse_input(str(folder)), str(out), records_per_shard=4,
                         workers=2, progress=False)
  images, labels, names = _read_back(out)
  assert names == sorted(PEOPLE) and meta["num_classes"] == 5
  expected = []  # what should be there, in folder order, screened independently
  for c, name in enumerate(sorted(PEOPLE)):
    for f in sorted((folder / name).iterdir()):
      if f.name in ("broken.jpg", "empty.jpg"):
        continue
      if f.suffix == ".pgm":
        decoded = np.asarray(Image.open(io.BytesIO(images[len(expected)])))
        assert decoded.shape[-1] == 3
        np.testing.assert_array_equal(decoded[..., 0], np.asarray(Image.open(f)))
        expected.append((None, c))
      else:
        expected.append((f.read_bytes(), c))
  assert len(images) == len(expected) == 16 and meta["shards"] == [
      f"images-{s:05d}-of-00005.array_record" for s in range(5)]
  for got, label, (want, c) in zip(images, labels, expected):
    assert label == c and (want is None or got == want)
  report = json.loads((out / "report.json").read_text())
  assert sorted(os.path.basename(p) for p in report["skipped"]) == ["broken.jpg", "empty.jpg"]
  assert [os.path.basename(p) for p in report["converted"]] == ["gray.pgm"]


def _small_rec(lfw_root, folder, bad_key=None):
  crops = synthetic_rec.lfw_crops(lfw_root / "lfw", limit=24)
  labels = np.repeat(np.arange(6), 4)
  if bad_key is not None:
    crops[bad_key - 1] = crops[bad_key - 1][:300]  # a truncated JPEG
  synthetic_rec.write_insightface_folder(folder, crops, labels, array_labels=True)
  return crops, labels


def test_rec_round_trip_and_a_corrupt_record_named(lfw_root, tmp_path):
  crops, labels = _small_rec(lfw_root, tmp_path / "rec", bad_key=7)
  out = tmp_path / "ar"
  prepare.prepare(prepare.parse_input(str(tmp_path / "rec")), str(out), records_per_shard=10,
                  workers=1, progress=False)
  images, got_labels, names = _read_back(out)
  keep = [i for i in range(24) if i != 6]
  assert images == [crops[i] for i in keep]
  np.testing.assert_array_equal(got_labels, labels[keep])
  assert names == [str(c) for c in range(6)]
  report = json.loads((out / "report.json").read_text())
  assert list(report["skipped"]) == [f"{tmp_path / 'rec' / 'train.rec'} record 7"]
  assert report["skipped"][f"{tmp_path / 'rec' / 'train.rec'} record 7"].startswith("corrupt")


def test_a_run_that_died_resumes(folder, tmp_path):
  out = tmp_path / "ar"
  spec = prepare.parse_input(str(folder))
  prepare.prepare(spec, str(out), records_per_shard=4, workers=1, progress=False)
  first = _read_back(out)
  # The state a crash leaves: shard 2 half-written under its temporary name, no index.
  shard2 = out / "images-00002-of-00005.array_record"
  os.replace(shard2, str(shard2) + ".tmp")
  (out / "parts" / "shard-00002.json").unlink()
  (out / record_tables.INDEX_FILE).unlink()
  with pytest.raises(errors.MissingDataError, match="not a finished"):
    record_tables.array_record_table(out)
  others = {p.name: p.stat().st_mtime_ns for p in out.glob("*.array_record")}
  prepare.prepare(spec, str(out), records_per_shard=4, workers=1, progress=False)
  assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.array_record")
          if p.name in others} == others  # finished shards were not rewritten
  again = _read_back(out)
  assert again[0] == first[0] and np.array_equal(again[1], first[1])
  with pytest.raises(errors.DataError, match="partial preparation of another input"):
    prepare.prepare(spec, str(out), records_per_shard=3, workers=1, progress=False)


def test_cli_prepares_and_fails_in_one_line(folder, tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = lambda *args: subprocess.run([sys.executable, "-m", "facejax.data.prepare", *args],
                                     cwd=REPO, env=env, capture_output=True, text=True,
                                     timeout=300)
  ok = run(f"--input={folder}", f"--output={tmp_path / 'ar'}", "--records_per_shard=8",
           "--workers=2")
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "wrote 16 images of 5 classes in 3 shards" in ok.stdout
  bad = run(f"--input={folder}", f"--output={tmp_path / 'ar2'}", "--bad_images=fail",
            "--workers=1")
  assert bad.returncode == 2 and "Traceback" not in bad.stderr
  errors_shown = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors_shown) == 1, bad.stderr[-2000:]
  assert "broken.jpg: corrupt" in errors_shown[0] or "empty.jpg: empty" in errors_shown[0]


def test_tfds_input(folder, tmp_path):
  from facejax.data import tfds_builders  # pylint: disable=import-outside-toplevel
  for bad in ("broken.jpg", "empty.jpg", "gray.pgm"):  # TFDS itself would reject these
    next(folder.rglob(bad)).unlink()
  builder = tfds_builders.prepare_identity_folder(folder, tmp_path / "tfds")
  name = builder.info.full_name.rsplit("/", 1)[0]  # facejax_identity_folder/<config>
  prepare.prepare(prepare.parse_input(f"tfds:{name}", str(tmp_path / "tfds")),
                  str(tmp_path / "ar"), workers=1, progress=False)
  images, labels, names = _read_back(tmp_path / "ar")
  assert names == sorted(PEOPLE)
  expected = sorted((f.read_bytes(), names.index(f.parent.name)) for f in folder.rglob("*.jpg"))
  assert sorted(zip(images, labels.tolist())) == expected  # TFDS stores the JPEG bytes as is
  with pytest.raises(errors.DataError, match="tfds:no_such_dataset"):
    prepare.prepare(prepare.parse_input("tfds:no_such_dataset", str(tmp_path / "tfds")),
                    str(tmp_path / "ar2"), workers=1, progress=False)
