"""LFW evaluation protocol: strict readers for the official pairs/people text files.

Paths in `Pair` are relative to the LFW root (the folder holding pairs.txt and lfw/), in
POSIX form, e.g. ``lfw/Aaron_Peirsol/Aaron_Peirsol_0001.jpg``.

Malformed input is an error, never skipped: a silently dropped pair changes the
10-fold accuracy. Every `ProtocolFormatError` message starts with ``<file>:<line>:``
(1-based) and quotes the offending line.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterable, Sequence

from facejax import errors

PathLike = str | os.PathLike

PAIRS_FILES = {"view2": "pairs.txt", "dev_train": "pairsDevTrain.txt", "dev_test": "pairsDevTest.txt"}
PEOPLE_FILES = {"dev_train": "peopleDevTrain.txt", "dev_test": "peopleDevTest.txt"}
NAMES_FILE = "lfw-names.txt"
IMAGES_SUBDIR = "lfw"


class ProtocolFormatError(errors.DataError):
  """A protocol file does not follow the LFW format."""


def image_relpath(name: str, index: int) -> str:
  """Path of image `index` (1-based) of `name`, relative to the LFW root."""
  return f"{IMAGES_SUBDIR}/{name}/{name}_{index:04d}.jpg"


@dataclasses.dataclass(frozen=True)
class Pair:
  """One verification pair. `fold` is 0..9 for View 2 and 0 for View 1."""

  path_a: str
  path_b: str
  issame: bool
  fold: int
  name_a: str
  index_a: int
  name_b: str
  index_b: int


def _fail(source: str, lineno: int, reason: str, line: str | None = None) -> ProtocolFormatError:
  quoted = "" if line is None else f": {line!r}"
  return ProtocolFormatError(f"{source}:{lineno}: {reason}{quoted}")


def _read_lines(path: PathLike) -> tuple[str, list[str]]:
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"LFW protocol file not found: {path}")
  return str(path), path.read_text(encoding="utf-8").splitlines()


def _strip_trailing_blank(lines: list[str]) -> list[str]:
  end = len(lines)
  while end and not lines[end - 1].strip():
    end -= 1
  return lines[:end]


def _parse_index(source: str, lineno: int, line: str, token: str) -> int:
  try:
    value = int(token)
  except ValueError:
    raise _fail(source, lineno, f"image index {token!r} is not an integer", line) from None
  if value < 1:
    raise _fail(source, lineno, f"image index {value} must be >= 1", line)
  return value


def parse_pairs(lines: Sequence[str], source: str) -> list[Pair]:
  """Parses the lines of a pairs file; `source` names it in error messages.

  Header "N" (View 1: N matched then N mismatched, fold 0) or "F\\tN" (View 2: F
  consecutive folds, each N matched then N mismatched).
  """
  lines = _strip_trailing_blank(list(lines))
  if not lines:
    raise _fail(source, 1, "empty file, expected a header 'N' or 'folds<TAB>N'")
  header = lines[0].split()
  if len(header) not in (1, 2) or not all(t.isdigit() and int(t) > 0 for t in header):
    raise _fail(source, 1, "bad header, expected 'N' or 'folds<TAB>N' with positive integers", lines[0])
  folds, per_fold = (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))
  expected = folds * 2 * per_fold
  body = lines[1:]
  if len(body) < expected:
    raise _fail(
        source, len(lines),
        f"file truncated: header promises {expected} pair lines, found {len(body)}",
        lines[-1],
    )
  if len(body) > expected:
    lineno = expected + 2
    raise _fail(source, lineno, f"extra line after the {expected} pair lines the header promises",
                lines[lineno - 1])

  pairs = []
  for k, line in enumerate(body):
    lineno = k + 2
    fold, pos = divmod(k, 2 * per_fold)
    want_same = pos < per_fold
    fields = line.split()
    if len(fields) not in (3, 4):
      raise _fail(source, lineno,
                  f"expected 3 fields (matched) or 4 (mismatched), got {len(fields)}", line)
    is_same = len(fields) == 3
    if is_same != want_same:
      section = "matched" if want_same else "mismatched"
      kind = "matched" if is_same else "mismatched"
      raise _fail(source, lineno, f"{kind} pair in the {section} section of fold {fold}", line)
    if is_same:
      name_a = name_b = fields[0]
      idx_a = _parse_index(source, lineno, line, fields[1])
      idx_b = _parse_index(source, lineno, line, fields[2])
      if idx_a == idx_b:
        raise _fail(source, lineno, "matched pair compares an image with itself", line)
    else:
      name_a, name_b = fields[0], fields[2]
      idx_a = _parse_index(source, lineno, line, fields[1])
      idx_b = _parse_index(source, lineno, line, fields[3])
      if name_a == name_b:
        raise _fail(source, lineno, "mismatched pair names the same person twice", line)
    pairs.append(Pair(image_relpath(name_a, idx_a), image_relpath(name_b, idx_b), is_same, fold,
                      name_a, idx_a, name_b, idx_b))
  return pairs


def read_pairs(path: PathLike) -> list[Pair]:
  """Reads pairs.txt (View 2, folds 0..9) or pairsDevTrain/pairsDevTest.txt (View 1, fold 0)."""
  source, lines = _read_lines(path)
  return parse_pairs(lines, source)


def parse_people(lines: Sequence[str], source: str) -> dict[str, int]:
  """Parses "Name<TAB>count" lines; an optional first line with one integer is the entry count."""
  lines = _strip_trailing_blank(list(lines))
  declared = None
  start = 0
  if lines and len(lines[0].split()) == 1:
    if not lines[0].strip().isdigit():
      raise _fail(source, 1, "bad header, expected the number of people", lines[0])
    declared, start = int(lines[0]), 1
  people: dict[str, int] = {}
  for k in range(start, len(lines)):
    line, lineno = lines[k], k + 1
    fields = line.split()
    if len(fields) != 2:
      raise _fail(source, lineno, f"expected 2 fields 'Name<TAB>count', got {len(fields)}", line)
    name, count = fields
    if not count.isdigit() or int(count) < 1:
      raise _fail(source, lineno, f"image count {count!r} is not a positive integer", line)
    if name in people:
      raise _fail(source, lineno, f"duplicate person {name!r}", line)
    people[name] = int(count)
  if declared is not None and declared != len(people):
    last = lines[-1] if len(lines) > 1 else None
    raise _fail(source, len(lines),
                f"header declares {declared} people, file lists {len(people)}", last)
  if not people:
    raise _fail(source, max(len(lines), 1), "no people listed")
  return people


def read_people(path: PathLike) -> dict[str, int]:
  """Reads peopleDevTrain.txt / peopleDevTest.txt / lfw-names.txt into {name: image count}."""
  source, lines = _read_lines(path)
  return parse_people(lines, source)


def view2_pairs(root: PathLike) -> list[Pair]:
  """The 6,000 View 2 pairs (10 folds x 600) of the LFW root."""
  return read_pairs(pathlib.Path(root) / PAIRS_FILES["view2"])


def view1_pairs(root: PathLike, split: str = "test") -> list[Pair]:
  """View 1 development pairs: split 'train' (2,200) or 'test' (1,000)."""
  return read_pairs(pathlib.Path(root) / PAIRS_FILES[_dev_key(split)])


def dev_people(root: PathLike, split: str = "train") -> dict[str, int]:
  """View 1 people: split 'train' (4,038 people) or 'test' (1,711 people)."""
  return read_people(pathlib.Path(root) / PEOPLE_FILES[_dev_key(split)])


def _dev_key(split: str) -> str:
  key = {"train": "dev_train", "test": "dev_test"}.get(split, split)
  if key not in PEOPLE_FILES:
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")
  return key


def unique_images(pairs: Iterable[Pair]) -> list[str]:
  """Sorted unique relative image paths named by `pairs` (the order embeddings are computed in)."""
  return sorted({p for pair in pairs for p in (pair.path_a, pair.path_b)})


def image_path(image_root: PathLike, relpath: str) -> pathlib.Path:
  """Where a pair's image (``lfw/<Name>/<file>``) lives under `image_root`, the folder
  holding the identity folders: LFW's own ``<root>/lfw`` or an aligned copy of it."""
  prefix = IMAGES_SUBDIR + "/"
  return pathlib.Path(image_root) / (relpath[len(prefix):] if relpath.startswith(prefix) else relpath)


def check_images_exist(image_root: PathLike, pairs: Iterable[Pair], max_report: int = 10) -> None:
  """Raises FileNotFoundError listing the first `max_report` images of `pairs` missing under
  `image_root` (the folder holding the identity folders, see `image_path`)."""
  missing = [p for p in unique_images(pairs) if not image_path(image_root, p).is_file()]
  if missing:
    shown = "\n  ".join(str(image_path(image_root, p)) for p in missing[:max_report])
    more = f"\n  ... and {len(missing) - max_report} more" if len(missing) > max_report else ""
    raise FileNotFoundError(
        f"{len(missing)} LFW image(s) named by the pairs are missing:\n  {shown}{more}")