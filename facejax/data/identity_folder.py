"""Scanning `<root>/<identity>/<image>` trees (LFW's lfw/ folder, CASIA-WebFace, VGGFace2).

The one identity-folder scanner of facejax: training, `facejax.data.align`, the
evaluation's `--identity_folder` and `facejax.tools` all list folders with it, so they
accept the same files (`image_files.is_image_file`: the usual suffixes, and files without
one identified by their content).

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

from facejax import errors
from facejax.data import image_files
from facejax.data.image_files import IMAGE_EXTENSIONS  # noqa: F401 -- re-exported
from facejax.data.lfw import read_people

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
      ("<identity>/<file>", not images under `image_files.is_image_file`), sorted; hidden
      files are left out. Screening (`image_check`) reports them.
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
    extensions: Iterable[str] | None = None,
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
    extensions: None for the image-file policy (`image_files.is_image_file`), or exactly
      these suffixes, compared case-insensitively (no content sniffing).
    max_identities: keep the first N identities (sorted by name) surviving the filters.

  Raises:
    errors.MissingDataError (a FileNotFoundError): `root` is not a directory.
    errors.DataError (a ValueError): no identity survives; the message gives the count
      after each filter.
  """
  root = pathlib.Path(root)
  if not root.is_dir():
    raise errors.MissingDataError(
        f"Identity folder root does not exist or is not a directory: {root}")
  include_set, exclude_set = _names(include, "include"), _names(exclude, "exclude")

  identity_dirs = image_files.identity_dirs(root)
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
  non_image_files: list[str] = []
  for name in identity_dirs:
    # Only the identity folder's own files: a nested folder is not an identity's image.
    listing = image_files.list_folder(root / name, extensions=extensions)
    non_image_files += [f"{name}/{f}" for f in listing.others]
    if len(listing.images) >= max(min_images_per_identity, 1):
      files_by_identity.append((name, list(listing.images)))
  if non_image_files:
    logging.info("Skipped %d files under %s that are not images, e.g. %s",
                 len(non_image_files), root, non_image_files[:5])
  what = ("images (image_files policy)" if extensions is None
          else f"images of {image_files.normalise_extensions(extensions)}")
  funnel.append(f"{len(files_by_identity)} with >= {max(min_images_per_identity, 1)} {what}")
  if max_identities is not None:
    files_by_identity = files_by_identity[:max_identities]
    funnel.append(f"{len(files_by_identity)} after max_identities={max_identities}")
  if not files_by_identity:
    raise errors.DataError("No identities survive the filters: " + " -> ".join(funnel))

  paths = tuple(f"{name}/{f}" for name, files in files_by_identity for f in files)
  labels = np.repeat(np.arange(len(files_by_identity), dtype=np.int32),
                     [len(files) for _, files in files_by_identity])
  return IdentityDataset(root=root, paths=paths, labels=labels,
                         class_names=tuple(name for name, _ in files_by_identity),
                         non_image_files=tuple(sorted(non_image_files,
                                                      key=lambda p: tuple(p.split("/")))))
