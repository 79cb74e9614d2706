"""Tests for facejax.data.lfw (protocol files) and facejax.data.paths (locating LFW)."""

import pathlib

import pytest

from facejax.data import lfw
from facejax.data.paths import DataNotFoundError, resolve_data_dir


# --- the real protocol files --------------------------------------------------------------


def test_view2_has_10_balanced_folds(lfw_root):
  pairs = lfw.view2_pairs(lfw_root)
  assert len(pairs) == 6000
  for fold in range(10):
    in_fold = [p for p in pairs if p.fold == fold]
    assert len(in_fold) == 600
    assert sum(p.issame for p in in_fold) == 300
  assert {p.fold for p in pairs} == set(range(10))
  # Folds are consecutive blocks: first 300 matched, then 300 mismatched.
  assert [p.issame for p in pairs[:600]] == [True] * 300 + [False] * 300


@pytest.mark.parametrize("split,n", [("train", 2200), ("test", 1000)])
def test_view1_pairs(lfw_root, split, n):
  pairs = lfw.view1_pairs(lfw_root, split)
  assert len(pairs) == n
  assert sum(p.issame for p in pairs) == n // 2
  assert {p.fold for p in pairs} == {0}
  assert all(p.issame == (p.name_a == p.name_b) for p in pairs)


def test_dev_people_counts_and_disjoint(lfw_root):
  train, test = lfw.dev_people(lfw_root, "train"), lfw.dev_people(lfw_root, "test")
  assert (len(train), sum(train.values())) == (4038, 9525)
  assert (len(test), sum(test.values())) == (1711, 3708)
  assert not set(train) & set(test)
  names = lfw.read_people(lfw_root / "lfw-names.txt")
  assert (len(names), sum(names.values())) == (5749, 13233)
  # View 1 people partition LFW, with the same per-person counts as lfw-names.txt.
  assert {**train, **test} == names


def test_every_pair_image_exists_and_index_in_range(lfw_root):
  names = lfw.read_people(lfw_root / "lfw-names.txt")
  for pairs in (lfw.view2_pairs(lfw_root), lfw.view1_pairs(lfw_root, "train"),
                lfw.view1_pairs(lfw_root, "test")):
    lfw.check_images_exist(lfw_root / "lfw", pairs)
    for p in pairs:
      assert 1 <= p.index_a <= names[p.name_a] and 1 <= p.index_b <= names[p.name_b]


def test_pair_paths(lfw_root):
  first = lfw.view1_pairs(lfw_root, "train")[0]
  assert first == lfw.Pair("lfw/Aaron_Peirsol/Aaron_Peirsol_0001.jpg",
                           "lfw/Aaron_Peirsol/Aaron_Peirsol_0002.jpg", True, 0,
                           "Aaron_Peirsol", 1, "Aaron_Peirsol", 2)
  assert (lfw_root / first.path_a).is_file()


def test_view2_unique_images_match_independent_count(lfw_root):
  images = lfw.unique_images(lfw.view2_pairs(lfw_root))
  assert images == sorted(set(images))
  # Independent count: (name, int index) tokens straight from the text.
  tokens = set()
  for line in (lfw_root / "pairs.txt").read_text().splitlines()[1:]:
    f = line.split("\t")
    if len(f) == 3:
      tokens |= {(f[0], int(f[1])), (f[0], int(f[2]))}
    else:
      tokens |= {(f[0], int(f[1])), (f[2], int(f[3]))}
  assert len(images) == len(tokens) == 7701


def test_check_images_exist_reports_missing(lfw_root):
  pairs = lfw.view1_pairs(lfw_root, "test")[:2]
  bogus = lfw.Pair("lfw/Nobody/Nobody_0001.jpg", pairs[0].path_b, True, 0, "Nobody", 1, "Nobody", 2)
  with pytest.raises(FileNotFoundError, match="Nobody_0001.jpg"):
    lfw.check_images_exist(lfw_root / "lfw", pairs + [bogus])


# --- malformed files ------------------------------------------------------------------------

_GOOD_VIEW2 = ["2\t1", "A\t1\t2", "A\t1\tB\t1", "C\t1\t3", "C\t2\tD\t1"]
_GOOD_VIEW1 = ["2", "A\t1\t2", "B\t1\t2", "A\t1\tB\t1", "C\t2\tD\t1"]


def _write(tmp_path, lines, name="pairs.txt"):
  path = tmp_path / name
  path.write_text("\n".join(lines) + "\n")
  return path


def test_good_small_files_parse(tmp_path):
  v2 = lfw.read_pairs(_write(tmp_path, _GOOD_VIEW2))
  assert [(p.fold, p.issame) for p in v2] == [(0, True), (0, False), (1, True), (1, False)]
  assert v2[3].path_b == "lfw/D/D_0001.jpg"
  v1 = lfw.read_pairs(_write(tmp_path, _GOOD_VIEW1, "pairsDevTest.txt"))
  assert [(p.fold, p.issame) for p in v1] == [(0, True)] * 2 + [(0, False)] * 2
  # Space-separated fields and trailing blank lines are accepted.
  v2_spaces = lfw.read_pairs(_write(tmp_path, [l.replace("\t", " ") for l in _GOOD_VIEW2] + ["", ""]))
  assert v2_spaces == v2


@pytest.mark.parametrize("lines,lineno,needle", [
    (["2\t1\t5"] + _GOOD_VIEW2[1:], 1, "bad header"),
    (["x"] + _GOOD_VIEW1[1:], 1, "bad header"),
    (["2\t1", "A\t1\t2\t3\t4"] + _GOOD_VIEW2[2:], 2, "got 5"),
    (["2\t1", "A\t1"] + _GOOD_VIEW2[2:], 2, "got 2"),
    (_GOOD_VIEW2[:3] + ["C\tone\t3"] + _GOOD_VIEW2[4:], 4, "not an integer"),
    (_GOOD_VIEW2[:3] + ["C\t0\t3"] + _GOOD_VIEW2[4:], 4, ">= 1"),
    (["2\t1", "A\t1\tB\t1"] + _GOOD_VIEW2[2:], 2, "mismatched pair in the matched section of fold 0"),
    (_GOOD_VIEW1[:2] + ["B\t1\tC\t2"] + _GOOD_VIEW1[3:], 3, "mismatched pair in the matched section"),
    (_GOOD_VIEW2[:2] + ["A\t1\t3"] + _GOOD_VIEW2[3:], 3, "matched pair in the mismatched section"),
    (_GOOD_VIEW2[:4], 4, "truncated"),
    (_GOOD_VIEW2 + ["E\t1\t2"], 6, "extra line"),
    (["2\t1", "A\t2\t2"] + _GOOD_VIEW2[2:], 2, "with itself"),
    (_GOOD_VIEW2[:2] + ["A\t1\tA\t2"] + _GOOD_VIEW2[3:], 3, "same person"),
])
def test_malformed_pairs_name_file_and_line(tmp_path, lines, lineno, needle):
  path = _write(tmp_path, lines)
  with pytest.raises(lfw.ProtocolFormatError) as err:
    lfw.read_pairs(path)
  msg = str(err.value)
  assert f"{path}:{lineno}:" in msg and "pairs.txt:" in msg
  assert needle in msg
  assert repr(lines[lineno - 1]) in msg  # the offending line is quoted


def test_empty_pairs_file(tmp_path):
  path = _write(tmp_path, [""])
  with pytest.raises(lfw.ProtocolFormatError, match=r"pairs\.txt:1: empty file"):
    lfw.read_pairs(path)


def test_missing_file_names_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    lfw.read_pairs(tmp_path / "nope.txt")
  with pytest.raises(FileNotFoundError, match="peopleDevTrain.txt"):
    lfw.dev_people(tmp_path, "train")


def test_people_files(tmp_path):
  assert lfw.read_people(_write(tmp_path, ["2", "A\t3", "B\t1"], "p.txt")) == {"A": 3, "B": 1}
  assert lfw.read_people(_write(tmp_path, ["A\t3", "B\t1"], "names.txt")) == {"A": 3, "B": 1}


@pytest.mark.parametrize("lines,lineno,needle", [
    (["3", "A\t3", "B\t1"], 3, "declares 3 people, file lists 2"),
    (["2", "A\t3", "B"], 3, "got 1"),
    (["2", "A\tx", "B\t1"], 2, "not a positive integer"),
    (["2", "A\t3", "A\t1"], 3, "duplicate"),
    (["two", "A\t3"], 1, "bad header"),
])
def test_malformed_people(tmp_path, lines, lineno, needle):
  path = _write(tmp_path, lines, "peopleDevTrain.txt")
  with pytest.raises(lfw.ProtocolFormatError) as err:
    lfw.read_people(path)
  assert f"{path}:{lineno}:" in str(err.value) and needle in str(err.value)


def test_view1_split_name_validated(lfw_root):
  with pytest.raises(ValueError, match="'train' or 'test'"):
    lfw.view1_pairs(lfw_root, "val")


# --- locating the data ----------------------------------------------------------------------


def test_resolve_unconfigured_explains_fix(monkeypatch):
  monkeypatch.delenv("FACEJAX_DATA_DIR", raising=False)
  with pytest.raises(DataNotFoundError) as err:
    resolve_data_dir(None)
  msg = str(err.value)
  for needle in ("config.data.data_dir", "FACEJAX_DATA_DIR", "<Name>/<Name>_0001.jpg",
                 "pairs.txt", "downloaded", "official LFW site"):
    assert needle in msg
  assert isinstance(err.value, FileNotFoundError)


def test_resolve_from_config_and_env(monkeypatch, lfw_root):
  monkeypatch.delenv("FACEJAX_DATA_DIR", raising=False)
  assert resolve_data_dir(str(lfw_root.parent)) == lfw_root
  assert resolve_data_dir(str(lfw_root)) == lfw_root  # the LFW root itself is accepted too
  monkeypatch.setenv("FACEJAX_DATA_DIR", str(lfw_root.parent))
  assert resolve_data_dir(None) == lfw_root
  assert resolve_data_dir("") == lfw_root


def test_resolve_names_missing_file(monkeypatch, tmp_path):
  monkeypatch.delenv("FACEJAX_DATA_DIR", raising=False)
  (tmp_path / "lfw" / "lfw").mkdir(parents=True)
  with pytest.raises(DataNotFoundError, match=r"lfw/pairs\.txt") as err:
    resolve_data_dir(str(tmp_path))
  assert "config.data.data_dir" in str(err.value)
  monkeypatch.setenv("FACEJAX_DATA_DIR", str(tmp_path / "absent"))
  with pytest.raises(DataNotFoundError,
                     match=r"absent \(from environment variable `FACEJAX_DATA_DIR`\) does not exist"):
    resolve_data_dir(None)
  with pytest.raises(DataNotFoundError, match=r"lfw/"):
    resolve_data_dir(str(pathlib.Path(tmp_path) / "lfw" / "lfw"))
