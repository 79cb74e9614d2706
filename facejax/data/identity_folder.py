"""Scanning `<root>/<identity>/<image>` trees (LFW's lfw/ folder, CASIA-WebFace, VGGFace2).

The result is a plain, deterministic index (paths sorted by identity then file name,
labels 0..C-1 over the identities in sorted order), so two scans of the same tree give
identical labels on every machine.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Collection, Iterable

import numpy as np
from absl import logging

from facejax.data.lfw import read_people

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

NameFilter = str | os.PathLike | Collection[str] | None


@dataclasses.dataclass(frozen=True, eq=False)
class IdentityDataset:
  """Index of an identity-folder tree.

  Attributes:
    root: the scanned folder.
    paths: image paths relative to `root` ("<identity>/<file>", POSIX), sorted.
    labels: int32 array of shape [len(paths)], values in [0, num_classes).
    class_names: identity folder names; label i is class_names[i] (sorted).
    non_image_files: other regular files found in the scanned identity folders
      ("<identity>/<file>", suffix not in the scan's extensions), sorted; hidden files are
      left out. Screening (`image_check`) reports them.
  """

  root: pathlib.Path
  paths: tuple[str, ...]
  labels: np.ndarray
  class_names: tuple[str, ...]
  non_image_files: tuple[str, ...] = ()

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def __len__(self) -> int:
    return len(self.paths)

  def abspath(self, i: int) -> pathlib.Path:
    return self.root / self.paths[i]

  def class_counts(self) -> np.ndarray:
    """int64 array of shape [num_classes]: images per identity."""
    return np.bincount(self.labels, minlength=self.num_classes)

  def indices_by_class(self) -> list[np.ndarray]:
    """For each label, the int64 indices (ascending) of its images."""
    # Paths are sorted by identity, so each class is one contiguous run.
    bounds = np.cumsum(self.class_counts())[:-1]
    return np.split(np.arange(len(self.paths), dtype=np.int64), bounds)


def _names(spec: NameFilter, what: str) -> frozenset[str] | None:
  """A name collection, or a people file (str/PathLike) such as peopleDevTrain.txt."""
  if spec is None:
    return None
  if isinstance(spec, (str, os.PathLike)):
    return frozenset(read_people(spec))
  names = frozenset(spec)
  if not all(isinstance(n, str) for n in names):
    raise TypeError(f"{what} must be a people-file path or a collection of names")
  return names


def scan_identity_folder(
    root: str | os.PathLike,
    *,
    min_images_per_identity: int = 1,
    include: NameFilter = None,
    exclude: NameFilter = None,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    max_identities: int | None = None,
) -> IdentityDataset:
  """Indexes the images of `root/<identity>/<image>`.

  Args:
    root: folder with one sub-folder per identity.
    min_images_per_identity: identities with fewer images are dropped (empty folders
      are always dropped).
    include: keep only these identities: a collection of names, or a path to a people
      file ("Name<TAB>count" lines, optional count header) read with `read_people`.
    exclude: drop these identities (same forms as `include`).
    extensions: image file suffixes, compared case-insensitively; other files are skipped.
    max_identities: keep the first N identities (sorted by name) surviving the filters.

  Raises:
    FileNotFoundError: `root` is not a directory.
    ValueError: no identity survives; the message gives the count after each filter.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"Identity folder root does not exist or is not a directory: {root}")
  exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
  include_set, exclude_set = _names(include, "include"), _names(exclude, "exclude")

  with os.scandir(root) as it:
    identity_dirs = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
  funnel = [f"{len(identity_dirs)} identity folders under {root}"]
  if include_set is not None:
    absent = include_set.difference(identity_dirs)
    if absent:
      logging.warning("include: %d listed identities have no folder under %s, e.g. %s",
                      len(absent), root, sorted(absent)[:5])
    identity_dirs = [n for n in identity_dirs if n in include_set]
    funnel.append(f"{len(identity_dirs)} after include ({len(include_set)} names)")
  if exclude_set is not None:
    identity_dirs = [n for n in identity_dirs if n not in exclude_set]
    funnel.append(f"{len(identity_dirs)} after exclude ({len(exclude_set)} names)")

  files_by_identity: list[tuple[str, list[str]]] = []
  skipped: dict[str, int] = {}
  non_image_files: list[str] = []
  for name in identity_dirs:
    images = []
    with os.scandir(os.path.join(root, name)) as it:
      for e in it:
        suffix = os.path.splitext(e.name)[1].lower()
        if suffix in exts and not e.name.startswith(".") and e.is_file():
          images.append(e.name)
        else:
          key = suffix or "<no suffix>"
          skipped[key] = skipped.get(key, 0) + 1
          if not e.name.startswith(".") and e.is_file():
            non_image_files.append(f"{name}/{e.name}")
    if len(images) >= max(min_images_per_identity, 1):
      files_by_identity.append((name, sorted(images)))
  if skipped:
    logging.info("Skipped %d non-image entries under %s by suffix: %s",
                 sum(skipped.values()), root, dict(sorted(skipped.items())))
  funnel.append(f"{len(files_by_identity)} with >= {max(min_images_per_identity, 1)} images of {exts}")
  if max_identities is not None:
    files_by_identity = files_by_identity[:max_identities]
    funnel.append(f"{len(files_by_identity)} after max_identities={max_identities}")
  if not files_by_identity:
    raise ValueError("No identities survive the filters: " + " -> ".join(funnel))

  paths = tuple(f"{name}/{f}" for name, files in files_by_identity for f in files)
  labels = np.repeat(np.arange(len(files_by_identity), dtype=np.int32),
                     [len(files) for _, files in files_by_identity])
  return IdentityDataset(root=root, paths=paths, labels=labels,
                         class_names=tuple(name for name, _ in files_by_identity),
                         non_image_files=tuple(sorted(non_image_files,
                                                      key=lambda p: tuple(p.split("/")))))
