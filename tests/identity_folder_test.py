"""Tests for facejax.data.identity_folder."""

import time

import numpy as np
import pytest

from facejax.data import lfw
from facejax.data.identity_folder import scan_identity_folder


def test_scan_real_lfw(lfw_root):
  start = time.perf_counter()
  ds = scan_identity_folder(lfw_root / "lfw")
  elapsed = time.perf_counter() - start
  assert elapsed < 5.0, f"scanning LFW took {elapsed:.2f}s"
  assert (len(ds), ds.num_classes) == (13233, 5749)
  assert ds.labels.dtype == np.int32 and ds.labels.shape == (13233,)
  assert list(ds.paths) == sorted(ds.paths, key=lambda p: tuple(p.split("/")))
  assert np.all(np.diff(ds.labels) >= 0) and set(np.unique(ds.labels)) == set(range(5749))
  names = lfw.read_people(lfw_root / "lfw-names.txt")
  assert list(ds.class_names) == sorted(names)
  assert dict(zip(ds.class_names, ds.class_counts().tolist())) == names
  groups = ds.indices_by_class()
  assert len(groups) == 5749 and sum(map(len, groups)) == 13233
  for label in (0, 1000, 5748):
    idx = groups[label]
    assert np.all(ds.labels[idx] == label)
    assert all(ds.paths[i].startswith(ds.class_names[label] + "/") for i in idx)
  assert ds.paths[0] == "AJ_Cook/AJ_Cook_0001.jpg" and ds.abspath(0).is_file()


def test_min_images_per_identity_matches_names_file(lfw_root):
  names = lfw.read_people(lfw_root / "lfw-names.txt")
  kept = {n: c for n, c in names.items() if c >= 10}
  ds = scan_identity_folder(lfw_root / "lfw", min_images_per_identity=10)
  assert (ds.num_classes, len(ds)) == (len(kept), sum(kept.values())) == (158, 4324)
  assert set(ds.class_names) == set(kept)
  assert ds.labels.max() == ds.num_classes - 1  # contiguous after filtering


def test_include_exclude_people_files(lfw_root):
  train_file = lfw_root / "peopleDevTrain.txt"
  train = scan_identity_folder(lfw_root / "lfw", include=train_file)
  assert (train.num_classes, len(train)) == (4038, 9525)
  test = scan_identity_folder(lfw_root / "lfw", exclude=str(train_file))
  assert (test.num_classes, len(test)) == (1711, 3708)
  assert set(test.class_names) == set(lfw.dev_people(lfw_root, "test"))


def test_include_names_and_max_identities(lfw_root):
  ds = scan_identity_folder(lfw_root / "lfw", include={"George_W_Bush", "Colin_Powell", "Not_A_Person"})
  assert ds.class_names == ("Colin_Powell", "George_W_Bush")
  assert len(ds) == 236 + 530
  ds = scan_identity_folder(lfw_root / "lfw", min_images_per_identity=2, max_identities=3)
  assert ds.num_classes == 3 and ds.labels.max() == 2


def _touch(path, data=b"x"):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(data)


@pytest.fixture
def messy_tree(tmp_path):
  root = tmp_path / "faces"
  for rel in ("bob/b2.jpg", "bob/b1.JPG", "bob/notes.txt", "bob/.hidden.jpg", "bob/Thumbs.db",
              "alice/a.png", "alice/a.jpeg", "alice/c.bmp", "alice/nested/deep.jpg",
              "carol/only.jpg", "README.md", ".git/x.jpg"):
    _touch(root / rel)
  (root / "empty").mkdir()
  (root / "docs_only").mkdir()
  _touch(root / "docs_only" / "readme.txt")
  return root


def test_messy_tree(messy_tree):
  ds = scan_identity_folder(messy_tree)
  assert ds.class_names == ("alice", "bob", "carol")
  assert ds.paths == ("alice/a.jpeg", "alice/a.png", "alice/c.bmp", "bob/b1.JPG", "bob/b2.jpg",
                      "carol/only.jpg")
  assert ds.labels.tolist() == [0, 0, 0, 1, 1, 2]
  assert [g.tolist() for g in ds.indices_by_class()] == [[0, 1, 2], [3, 4], [5]]
  only_jpg = scan_identity_folder(messy_tree, extensions=("jpg",))
  assert only_jpg.paths == ("bob/b1.JPG", "bob/b2.jpg", "carol/only.jpg")
  assert only_jpg.labels.tolist() == [0, 0, 1]


def test_filters_that_remove_everything_are_named(messy_tree, tmp_path):
  with pytest.raises(ValueError, match=r"0 with >= 5 images"):
    scan_identity_folder(messy_tree, min_images_per_identity=5)
  with pytest.raises(ValueError, match=r"0 after include \(1 names\)"):
    scan_identity_folder(messy_tree, include=["dave"])
  with pytest.raises(ValueError, match=r"0 after exclude"):
    scan_identity_folder(messy_tree, exclude=["alice", "bob", "carol", "empty", "docs_only"])
  with pytest.raises(FileNotFoundError, match="does not exist"):
    scan_identity_folder(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="people.txt"):
    scan_identity_folder(messy_tree, include=str(tmp_path / "people.txt"))


def test_people_file_filter(messy_tree, tmp_path):
  people = tmp_path / "people.txt"
  people.write_text("2\nbob\t2\ncarol\t1\n")
  ds = scan_identity_folder(messy_tree, include=people)
  assert ds.class_names == ("bob", "carol") and ds.labels.tolist() == [0, 0, 1]
