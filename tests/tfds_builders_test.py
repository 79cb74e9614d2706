"""Tests for facejax.data.tfds_builders on tiny trees of real LFW JPEGs (never the full LFW)."""

import os
import shutil
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from facejax.data import lfw
from facejax.data import tfds_builders as tb
from facejax.data.identity_folder import scan_identity_folder
from facejax.data.paths import DataNotFoundError

# name -> number of images copied. Sorted labels: AJ_Cook 0, Aaron_Eckhart 1,
# Aaron_Peirsol 2, Abdullah_Gul 3 (ASCII order puts "AJ" before "Aa").
_TINY = {"Aaron_Peirsol": 3, "Abdullah_Gul": 2, "AJ_Cook": 1, "Aaron_Eckhart": 1}
_TINY_TEXT = {
    "pairs.txt": "2\t1\nAaron_Peirsol\t1\t2\nAaron_Peirsol\t3\tAJ_Cook\t1\n"
                 "Abdullah_Gul\t1\t2\nAbdullah_Gul\t2\tAaron_Eckhart\t1\n",
    "pairsDevTrain.txt": "1\nAaron_Peirsol\t2\t3\nAJ_Cook\t1\tAaron_Peirsol\t1\n",
    "pairsDevTest.txt": "1\nAbdullah_Gul\t1\t2\nAaron_Eckhart\t1\tAbdullah_Gul\t2\n",
    "peopleDevTrain.txt": "2\nAJ_Cook\t1\nAaron_Peirsol\t3\n",
    "peopleDevTest.txt": "2\nAaron_Eckhart\t1\nAbdullah_Gul\t2\n",
    "lfw-names.txt": "AJ_Cook\t1\nAaron_Eckhart\t1\nAaron_Peirsol\t3\nAbdullah_Gul\t2\n",
}


def _copy_images(lfw_root, images_dir, spec):
  for name, k in spec.items():
    (images_dir / name).mkdir(parents=True)
    for i in range(1, k + 1):
      shutil.copy(lfw_root / "lfw" / name / f"{name}_{i:04d}.jpg", images_dir / name)


@pytest.fixture(scope="module")
def tiny_lfw(lfw_root, tmp_path_factory):
  """<tmp>/data/lfw: a 7-image LFW-layout root with consistent protocol files."""
  root = tmp_path_factory.mktemp("tiny") / "data" / "lfw"
  _copy_images(lfw_root, root / "lfw", _TINY)
  for fname, text in _TINY_TEXT.items():
    (root / fname).write_text(text)
  return root


@pytest.fixture(scope="module")
def tiny_lfw_builder(tiny_lfw, tmp_path_factory):
  return tb.prepare_lfw(tiny_lfw, tmp_path_factory.mktemp("tfds"))


def _assert_matches_source(root, images, labels, paths, class_names):
  for img, label, path in zip(images, labels, paths):
    assert img == (root / path).read_bytes()
    assert class_names[label] == path.split("/")[-2]


# --- IdentityFolder ---------------------------------------------------------------------------


@pytest.mark.parametrize("file_format", ["array_record", "tfrecord"])
def test_identity_folder_roundtrip(lfw_root, tmp_path, file_format):
  root = tmp_path / "faces"
  _copy_images(lfw_root, root, {"Aaron_Peirsol": 3, "Abdullah_Gul": 2, "Akhmed_Zakayev": 3})
  scan = scan_identity_folder(root)
  builder = tb.prepare_identity_folder(root, tmp_path / "tfds", file_format=file_format)
  assert builder.info.file_format.value == file_format
  assert builder.info.splits["train"].num_examples == 8
  assert builder.info.features["label"].names == list(scan.class_names)

  images, labels, paths = tb.load_encoded(builder, "train")
  assert labels.dtype == np.int32 and labels.shape == (8,)
  assert sorted(paths) == list(scan.paths)
  by_path = dict(zip(scan.paths, scan.labels.tolist()))
  assert [by_path[p] for p in paths] == labels.tolist()
  _assert_matches_source(root, images, labels, paths, scan.class_names)
  assert tb.encoded_by_path(builder, "train")[scan.paths[0]] == (root / scan.paths[0]).read_bytes()

  # Decoding through TFDS gives the 250x250 RGB image.
  if file_format == "array_record":
    example = builder.as_data_source("train")[0]
  else:
    example = next(iter(tfds.as_numpy(builder.as_dataset(split="train"))))
  assert example["image"].shape == (250, 250, 3) and example["image"].dtype == np.uint8

  # Preparing again reuses the records.
  shard = next(p for p in builder.data_path.iterdir() if "train" in p.name)
  mtime = os.stat(shard).st_mtime_ns
  start = time.perf_counter()
  again = tb.prepare_identity_folder(root, tmp_path / "tfds", file_format=file_format)
  assert time.perf_counter() - start < 5.0
  assert again.data_dir == builder.data_dir and os.stat(shard).st_mtime_ns == mtime


def test_identity_folder_configs_keep_trees_apart(lfw_root, tmp_path):
  a, b = tmp_path / "a" / "My Faces!", tmp_path / "b" / "My Faces!"
  _copy_images(lfw_root, a, {"AJ_Cook": 1, "Aaron_Peirsol": 2})
  _copy_images(lfw_root, b, {"Abdullah_Gul": 2})
  cfg_a, cfg_b = tb.identity_folder_config(a), tb.identity_folder_config(b)
  assert cfg_a.name.startswith("my_faces_") and cfg_a.name != cfg_b.name
  assert tb.identity_folder_config(a).name == cfg_a.name
  assert tb.identity_folder_config(a, min_images_per_identity=2).name != cfg_a.name

  ba = tb.prepare_identity_folder(a, tmp_path / "tfds")
  bb = tb.prepare_identity_folder(b, tmp_path / "tfds")
  assert ba.data_dir != bb.data_dir
  assert ba.info.splits["train"].num_examples == 3 and bb.info.splits["train"].num_examples == 2
  filtered = tb.prepare_identity_folder(a, tmp_path / "tfds", min_images_per_identity=2)
  assert filtered.info.features["label"].names == ["Aaron_Peirsol"]
  with pytest.raises(ValueError, match="root="):
    tb.IdentityFolder(data_dir=str(tmp_path / "tfds"))


# --- Lfw --------------------------------------------------------------------------------------


def test_lfw_splits(tiny_lfw, tiny_lfw_builder):
  builder = tiny_lfw_builder
  assert builder.name == "facejax_lfw"
  assert builder.info.file_format.value == tb.default_file_format()
  assert {s: i.num_examples for s, i in builder.info.splits.items()} == {"dev_train": 4, "dev_test": 3}
  names = builder.info.features["label"].names
  assert names == ["AJ_Cook", "Aaron_Eckhart", "Aaron_Peirsol", "Abdullah_Gul"]

  images, labels, paths = tb.load_encoded(builder, "all")
  expected = [f"lfw/{n}/{n}_{i:04d}.jpg" for n, k in _TINY.items() for i in range(1, k + 1)]
  assert sorted(paths) == sorted(expected)
  _assert_matches_source(tiny_lfw, images, labels, paths, names)
  _, _, train_paths = tb.load_encoded(builder, "dev_train")
  assert {p.split("/")[1] for p in train_paths} == {"AJ_Cook", "Aaron_Peirsol"}
  assert tb.load_lfw_people(builder, "dev_test") == {"Aaron_Eckhart": 1, "Abdullah_Gul": 2}


def test_lfw_pairs_survive_reload(tiny_lfw, tiny_lfw_builder):
  # A fresh builder (no lfw_root) restores labels and protocol files from data_dir.
  builder = tb.Lfw(data_dir=tiny_lfw_builder.data_dir_root)
  assert builder.info.features["label"].num_classes == 4
  for which, fname in lfw.PAIRS_FILES.items():
    assert tb.load_lfw_pairs(builder, which) == lfw.read_pairs(tiny_lfw / fname)
  view2 = tb.load_lfw_pairs(builder, "view2")
  assert [(p.fold, p.issame) for p in view2] == [(0, True), (0, False), (1, True), (1, False)]
  _, _, paths = tb.load_encoded(builder, "all")
  assert set(lfw.unique_images(view2)) <= set(paths)


def _variant(tiny_lfw, tmp_path, **texts):
  root = tmp_path / "lfw"
  shutil.copytree(tiny_lfw, root)
  for fname, text in texts.items():
    if text is None:
      (root / fname).unlink()
    else:
      (root / fname).write_text(text)
  return root


def test_lfw_rejects_inconsistent_roots(tiny_lfw, tmp_path):
  bad_names = _variant(tiny_lfw, tmp_path / "1", **{"lfw-names.txt": "AJ_Cook\t1\nAaron_Eckhart\t1\n"})
  with pytest.raises(ValueError, match="disagrees with"):
    tb.prepare_lfw(bad_names, tmp_path / "tfds1")
  overlap = _variant(tiny_lfw, tmp_path / "2", **{"peopleDevTest.txt": "1\nAJ_Cook\t1\n"})
  with pytest.raises(ValueError, match="must partition"):
    tb.prepare_lfw(overlap, tmp_path / "tfds2")
  missing = _variant(tiny_lfw, tmp_path / "3", **{"pairsDevTest.txt": None})
  with pytest.raises(DataNotFoundError, match="pairsDevTest.txt"):
    tb.prepare_lfw(missing, tmp_path / "tfds3")
  bad_pairs = _variant(tiny_lfw, tmp_path / "4", **{
      "pairsDevTrain.txt": "1\nAaron_Peirsol\t2\t9\nAJ_Cook\t1\tAaron_Peirsol\t1\n"})
  with pytest.raises(FileNotFoundError, match="Aaron_Peirsol_0009.jpg"):
    tb.prepare_lfw(bad_pairs, tmp_path / "tfds4")


def test_lfw_from_env_var(tiny_lfw, tmp_path, monkeypatch):
  monkeypatch.setenv("FACEJAX_DATA_DIR", str(tiny_lfw.parent))
  builder = tb.prepare_lfw(None, tmp_path / "tfds")
  assert builder.info.splits["dev_train"].num_examples == 4


def test_lfw_offline_without_local_copy_explains(tmp_path, monkeypatch):
  monkeypatch.delenv("FACEJAX_DATA_DIR", raising=False)

  def offline(*args, **kwargs):
    raise OSError("network is unreachable")

  # No network in tests: the download manager fails as it would offline.
  monkeypatch.setattr(tfds.download.DownloadManager, "download", offline)
  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", offline)
  with pytest.raises(DataNotFoundError) as err:
    tb.prepare_lfw(None, tmp_path / "tfds")
  msg = str(err.value)
  assert "FACEJAX_DATA_DIR" in msg and "lfw_root" in msg and "network is unreachable" in msg
  assert not (tmp_path / "tfds" / "facejax_lfw" / "1.0.0").exists()


@pytest.mark.slow
def test_prepare_full_lfw(lfw_root, tmp_path):
  """Full LFW (about 10 s to prepare, 190 MB): `pytest -m slow tests/tfds_builders_test.py`."""
  builder = tb.prepare_lfw(lfw_root, tmp_path)
  images, labels, paths = tb.load_encoded(builder, "all")
  assert len(images) == len(set(paths)) == 13233
  assert builder.info.features["label"].num_classes == 5749
  assert len(tb.load_lfw_pairs(builder, "view2")) == 6000
