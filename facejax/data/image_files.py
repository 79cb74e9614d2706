"""The one image-file policy of facejax: which files are images, and how a folder is listed.

Every command that reads images (training's scan and screening, `facejax.data.align`,
`facejax.evaluation --identity_folder`, `facejax.tools`) decides with `is_image_file`:

* a file whose suffix is one of IMAGE_EXTENSIONS (any case) is an image;
* a file with no suffix or another one is identified by its first bytes (`sniff_format`),
  so the Yale faces (GIF files named `subject01.happy`) are read, while `notes.txt` or
  `Thumbs.db` are not;
* hidden files (".DS_Store", "._x.jpg") and folders are never images.

Whether an image actually decodes is a later question (`image_check.check_image` opens it
with Pillow); files that are not images are still listed, so callers can count and name
what they skipped.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from collections.abc import Iterable

# What Pillow decodes (and the suffixes those formats go by). TensorFlow's decoder reads
# only JPEG/PNG/GIF/BMP: image_check re-encodes the others for the training pipeline.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff",
                    ".webp", ".pgm", ".ppm", ".pbm", ".pnm")

# Leading bytes -> Pillow format name. PNM ("P1".."P6") is matched by `_PNM` instead: its
# two letters alone would match many text files, so the width and height must follow.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)
_PNM = re.compile(rb"P[1-6]\s+(?:#[^\n]*\n\s*)*\d+\s+\d+\s")
_HEADER_BYTES = 64


def sniff_format(path: str | os.PathLike) -> str | None:
  """The image format of a file from its first bytes ("JPEG", "PNG", "GIF", "TIFF", "BMP",
  "WEBP", "PPM"), or None for anything else (including an unreadable file)."""
  try:
    with open(path, "rb") as f:
      head = f.read(_HEADER_BYTES)
  except OSError:
    return None
  for magic, name in _SIGNATURES:
    if head.startswith(magic):
      # "BM" starts plenty of text; a BMP header also stores the file size at bytes 2-5.
      if name == "BMP" and (len(head) < 14 or int.from_bytes(head[2:6], "little")
                            != os.path.getsize(path)):
        continue
      return name
  if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
    return "WEBP"
  if _PNM.match(head):
    return "PPM"  # Pillow's name for the PNM family (PBM, PGM, PPM)
  return None


def has_image_extension(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_image_file(path: str | os.PathLike, extensions: Iterable[str] | None = None) -> bool:
  """Whether `path` is an image under the policy of the module docstring.

  `extensions`: accept exactly these suffixes instead (no content sniffing), for callers
  that ask for a subset such as ("jpg",).
  """
  name = os.path.basename(os.fspath(path))
  if name.startswith("."):
    return False
  if extensions is not None:
    exts = normalise_extensions(extensions)
    return os.path.splitext(name)[1].lower() in exts
  return has_image_extension(name) or sniff_format(path) is not None


def normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
  """("jpg", ".PNG") -> (".jpg", ".png")."""
  return tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)


@dataclasses.dataclass(frozen=True)
class FolderFiles:
  """The regular files of one folder (or tree), relative POSIX paths sorted part by part.

  images: files that are images (`is_image_file`).
  others: the other non-hidden regular files: what a reader skipped, to count and name.
  """
  images: tuple[str, ...]
  others: tuple[str, ...]


def _sort_key(rel: str) -> tuple[str, ...]:
  return tuple(rel.split("/"))


def list_folder(folder: str | os.PathLike, *, recursive: bool = False,
                extensions: Iterable[str] | None = None) -> FolderFiles:
  """Lists `folder`'s image files (and the files skipped), recursively on request.

  Hidden files and hidden folders are left out entirely; symlinks are followed.
  """
  root = pathlib.Path(folder)
  images, others = [], []
  stack = [""]
  while stack:
    rel_dir = stack.pop()
    with os.scandir(root / rel_dir if rel_dir else root) as it:
      entries = list(it)
    for e in entries:
      if e.name.startswith("."):
        continue
      rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
      if e.is_dir():
        if recursive:
          stack.append(rel)
      elif e.is_file():
        (images if is_image_file(e.path, extensions) else others).append(rel)
  return FolderFiles(tuple(sorted(images, key=_sort_key)), tuple(sorted(others, key=_sort_key)))


def identity_dirs(root: str | os.PathLike) -> list[str]:
  """The identity folders of `root/<identity>/<image>`: non-hidden sub-folders, sorted."""
  with os.scandir(root) as it:
    return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
