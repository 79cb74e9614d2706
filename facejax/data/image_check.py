"""Screening an identity-folder tree with Pillow before training, so that a bad file meets a
configured policy (skip it, or fail naming it) instead of crashing tf.data mid-run.

Which files are images at all is `image_files.is_image_file`'s call (the one policy of
every command). tf.io.decode_image(channels=3) converts the common non-RGB modes as PIL's
convert("RGB") does (JPEG L/CMYK, PNG L/LA/P/1/RGBA, GIF P), but not 16-bit gray PNG (PIL
clips, TF rescales), palette/1-bit/RLE BMP, and it cannot read PGM/PPM/PBM or TIFF at all:
the pipeline reads `rgb_png_bytes` of those instead (`DataReport.reencoded`,
`replacements`), so training accepts every format the other commands read.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import os
import struct
import threading
import warnings
from collections.abc import Sequence

import numpy as np
import tqdm
from absl import logging
from PIL import Image

from facejax import errors
from facejax.data import image_files
from facejax.data.identity_folder import IdentityDataset, NameFilter, scan_identity_folder

BAD_IMAGES = ("fail", "skip")
NON_RGB = ("convert", "skip", "fail")
SMALL_IDENTITIES = ("skip", "fail")
# Phone photos (12-24 MP) pass; a 40 MP image decodes to 480 MB as float32 RGB.
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
BAD_STATUSES = ("empty", "corrupt", "too_large", "not_image")
STATUSES = ("ok", "non_rgb") + BAD_STATUSES

# (PIL format, mode) pairs that tf.io.decode_image(channels=3) decodes to exactly PIL's
# convert("RGB") (JPEG: exactly with dct_method="INTEGER_ACCURATE", PIL's IDCT).
_TF_MATCHES_PIL = frozenset({
    ("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"), ("MPO", "RGB"),
    ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("PNG", "LA"), ("PNG", "P"), ("PNG", "1"),
    ("GIF", "P"), ("BMP", "RGB"), ("BMP", "L"), ("WEBP", "RGB")})
# Image.open warns past Image.MAX_IMAGE_PIXELS; the filter that silences it is process-wide,
# so threads take turns opening headers (decoding stays parallel).
_OPEN_LOCK = threading.Lock()


class BadImageError(errors.DataError):
  """A file failed screening under a "fail" policy; the message names it."""


class SmallIdentityError(errors.DataError):
  """An identity has too few usable images under small_identities="fail"."""


@dataclasses.dataclass(frozen=True)
class ImageStatus:
  """Screening result of one file.

  Attributes:
    path: the file checked.
    status: one of STATUSES.
    mode: PIL mode ("RGB", "L", "CMYK", "I;16", ...), "" when not opened.
    detail: short reason for a status other than "ok".
    reencode: TensorFlow would not decode this image as PIL does: use `rgb_png_bytes`.
  """
  path: str
  status: str
  mode: str = ""
  detail: str = ""
  reencode: bool = False


def _bmp_matches_pil(header: bytes, mode: str) -> bool:
  # TensorFlow's BMP decoder ignores palettes, bit fields and RLE: only plain 8-bit gray and
  # 24/32-bit RGB decode as in PIL.
  if len(header) < 34 or struct.unpack_from("<I", header, 14)[0] < 40:
    return False
  bits, compression = struct.unpack_from("<HI", header, 28)
  return compression == 0 and (mode, bits) in {("RGB", 24), ("RGB", 32), ("L", 8)}


def check_image(path: str | os.PathLike, *, max_pixels: int) -> ImageStatus:
  """Screens one file: image or not (suffix, else content), size, header, then a full
  decode with Pillow."""
  path = str(path)
  if not image_files.is_image_file(path):
    return ImageStatus(path, "not_image",
                       detail="neither an image suffix nor an image file's leading bytes")
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    return ImageStatus(path, "corrupt", detail=f"{type(e).__name__}: {e}")
  return check_encoded(path, data, max_pixels=max_pixels)


def check_encoded(name: str, data: bytes, *, max_pixels: int) -> ImageStatus:
  """Screens one encoded image (a file's or a record's bytes; `name` says which): size,
  header, then a full decode with Pillow."""
  if not data:
    return ImageStatus(name, "empty", detail="zero bytes")
  try:
    with _OPEN_LOCK, warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      image = Image.open(io.BytesIO(data))
    with image:
      width, height = image.size
      if width * height > max_pixels:
        return ImageStatus(name, "too_large", image.mode,
                           f"{width}x{height} = {width * height} pixels > {max_pixels}")
      image.load()  # Raises on truncated data: ImageFile.LOAD_TRUNCATED_IMAGES is False.
      fmt, mode = image.format, image.mode
  except Image.DecompressionBombError as e:
    return ImageStatus(name, "too_large", detail=str(e))
  except Image.UnidentifiedImageError:
    return ImageStatus(name, "corrupt", detail="not a recognised image format")
  except Exception as e:  # Pillow's decoders raise many types (OSError, SyntaxError, ...).
    return ImageStatus(name, "corrupt", detail=f"{type(e).__name__}: {e}")
  reencode = ((fmt, mode) not in _TF_MATCHES_PIL
              or (fmt == "BMP" and not _bmp_matches_pil(data[:34], mode)))
  if mode != "RGB":
    return ImageStatus(name, "non_rgb", mode, f"{fmt} image in mode {mode}", reencode)
  return ImageStatus(name, "ok", mode, f"{fmt} that TensorFlow cannot decode" if reencode else "",
                     reencode)


def check_images(paths: Sequence[str | os.PathLike], *, max_pixels: int,
                 num_workers: int | None = None) -> list[ImageStatus]:
  """`check_image` of each path (in order), on threads: Pillow's decoders release the GIL."""
  with concurrent.futures.ThreadPoolExecutor(num_workers) as pool:
    results = pool.map(lambda p: check_image(p, max_pixels=max_pixels), paths)
    return list(tqdm.tqdm(results, total=len(paths), desc="Checking images", unit="img",
                          disable=len(paths) < 2000))


def rgb_png_bytes(source: str | os.PathLike | bytes) -> bytes:
  """The image (a file, or its bytes) as PIL's convert("RGB") makes it, as a lossless PNG."""
  with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
    rgb = image.convert("RGB")
  buffer = io.BytesIO()
  rgb.save(buffer, "PNG")
  return buffer.getvalue()


@dataclasses.dataclass
class DataReport:
  """What screening found and did; paths are relative to `root`.

  Attributes:
    counts: files per status (ok, non_rgb, empty, corrupt, too_large, not_image) among the
      files examined.
    files: relative paths per status other than "ok".
    skipped: relative paths of the files dropped (bad files, non-RGB under "skip").
    converted: non-RGB images kept, per PIL mode.
    reencoded: kept images the pipeline must read as `rgb_png_bytes` (see `replacements`).
    dropped_identities: identity -> usable images, for identities under the minimum.
  """
  root: str
  policies: dict[str, object]
  counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
  files: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  skipped: list[str] = dataclasses.field(default_factory=list)
  converted: dict[str, int] = dataclasses.field(default_factory=dict)
  reencoded: list[str] = dataclasses.field(default_factory=list)
  dropped_identities: dict[str, int] = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)  # Strings, ints, lists and dicts only: JSON-able.

  def summary(self) -> str:
    """One line for the log."""
    found = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n)
    parts = [f"screened {sum(self.counts.values())} files under {self.root} ({found or 'none'})"]
    if self.skipped:
      parts.append(f"skipped {len(self.skipped)} files, e.g. {self.skipped[:3]}")
    if self.converted:
      parts.append(f"converted {sum(self.converted.values())} non-RGB images {self.converted}")
    if self.reencoded:
      parts.append(f"{len(self.reencoded)} images re-encoded as RGB PNG for TensorFlow")
    if self.dropped_identities:
      names = list(self.dropped_identities)
      parts.append(f"dropped {len(names)} identities with fewer than "
                   f"{self.policies['min_images_per_identity']} usable images, e.g. {names[:3]}")
    return "Data screening: " + "; ".join(parts)


def _fail(problem: ImageStatus, statuses: list[ImageStatus], usable: set[str], remedy: str):
  others = collections.Counter(s.status for s in statuses
                               if s.status not in usable and s is not problem)
  raise BadImageError(f"{problem.status} file {problem.path} ({problem.detail}); "
                      f"{sum(others.values())} other files had problems {dict(others)}. "
                      f"Set {remedy}.")


def _take(pending: list, room: int | None, minimum: int):
  """The next `room` (identity, files) with >= `minimum` files, the smaller ones on the way
  (name -> count), and the rest of `pending`."""
  candidates, small = [], {}
  for i, (name, files) in enumerate(pending):
    if room is not None and len(candidates) == room:
      return candidates, small, pending[i:]
    if len(files) < minimum:
      small[name] = len(files)
    else:
      candidates.append((name, files))
  return candidates, small, []


def screen_identity_folder(
    root: str | os.PathLike, *, min_images_per_identity: int = 1, include: NameFilter = None,
    exclude: NameFilter = None, max_identities: int | None = None, bad_images: str = "skip",
    non_rgb: str = "convert", small_identities: str = "skip",
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, num_workers: int | None = None,
) -> tuple[IdentityDataset, DataReport]:
  """`scan_identity_folder`, then screening of each image and the policies on what fails.

  Identities are examined in name order, and only until `max_identities` of them survive:
  the images of the rest are never opened. Identities with fewer files than the minimum
  are dropped without being checked. Labels are 0..C-1 over the surviving identities.

  Raises:
    BadImageError: a bad file under bad_images="fail", or a non-RGB one under non_rgb="fail".
    SmallIdentityError: an identity below the minimum under small_identities="fail".
    ValueError: an unknown policy, or no identity survives.
  """
  for key, value, allowed in (("bad_images", bad_images, BAD_IMAGES), ("non_rgb", non_rgb, NON_RGB),
                              ("small_identities", small_identities, SMALL_IDENTITIES)):
    if value not in allowed:
      raise ValueError(f"config.data.{key}={value!r}: use one of {allowed}")
  scanned = scan_identity_folder(root, include=include, exclude=exclude)
  root, minimum = scanned.root, max(min_images_per_identity, 1)
  report = DataReport(root=str(root), policies=dict(
      bad_images=bad_images, non_rgb=non_rgb, small_identities=small_identities,
      max_image_pixels=max_image_pixels, min_images_per_identity=minimum))
  usable = {"ok", "non_rgb"} if non_rgb == "convert" else {"ok"}
  pending = [(name, [scanned.paths[i] for i in idx])
             for name, idx in zip(scanned.class_names, scanned.indices_by_class())]
  non_images = list(scanned.non_image_files)
  kept: list[tuple[str, list[str]]] = []
  # Usually one round; another only when identities were lost to bad files under max_identities.
  while pending and (max_identities is None or len(kept) < max_identities):
    room = None if max_identities is None else max_identities - len(kept)
    candidates, small, pending = _take(pending, room, minimum)
    # Non-image files go with the identities examined so far (name order).
    in_round = [not pending or p.split("/")[0] < pending[0][0] for p in non_images]
    rels = [f for _, files in candidates for f in files]
    rels += [p for p, now in zip(non_images, in_round) if now]
    non_images = [p for p, now in zip(non_images, in_round) if not now]
    statuses = dict(zip(rels, check_images([root / f for f in rels], max_pixels=max_image_pixels,
                                           num_workers=num_workers)))
    for rel, s in statuses.items():
      report.counts[s.status] += 1
      if s.status != "ok":
        report.files.setdefault(s.status, []).append(rel)
    bad = [s for s in statuses.values() if s.status in BAD_STATUSES]
    if bad and bad_images == "fail":
      _fail(bad[0], list(statuses.values()), usable,
            "config.data.bad_images='skip' to skip such files")
    odd = [s for s in statuses.values() if s.status == "non_rgb"]
    if odd and non_rgb == "fail":
      _fail(odd[0], list(statuses.values()), usable,
            "config.data.non_rgb='convert' to keep them as RGB, or 'skip' to skip them")
    report.skipped += [rel for rel, s in statuses.items() if s.status not in usable]
    for name, files in candidates:
      survivors = [f for f in files if statuses[f].status in usable]
      if len(survivors) < minimum:
        small[name] = len(survivors)
        continue
      kept.append((name, survivors))
      for f in survivors:
        if statuses[f].status == "non_rgb":
          report.converted[statuses[f].mode] = report.converted.get(statuses[f].mode, 0) + 1
        if statuses[f].reencode:
          report.reencoded.append(f)
    if small and small_identities == "fail":
      name = min(small)
      raise SmallIdentityError(
          f"identity folder {root / name} has {small[name]} usable images, fewer than "
          f"min_images_per_identity={minimum} ({len(small) - 1} other identities too). Set "
          f"config.data.small_identities='skip' to drop such identities.")
    report.dropped_identities.update(sorted(small.items()))
  if not kept:
    raise errors.DataError(f"No identities survive screening: {report.summary()}")

  paths = tuple(f for _, files in kept for f in files)
  labels = np.repeat(np.arange(len(kept), dtype=np.int32), [len(files) for _, files in kept])
  dataset = IdentityDataset(root=root, paths=paths, labels=labels,
                            class_names=tuple(name for name, _ in kept),
                            non_image_files=tuple(report.files.get("not_image", ())))
  log = logging.warning if report.skipped or report.converted or report.reencoded else logging.info
  log("%s", report.summary())
  return dataset, report


def replacements(dataset: IdentityDataset, report: DataReport) -> dict[int, bytes]:
  """Index -> `rgb_png_bytes` for the images of `dataset` listed in `report.reencoded`."""
  reencoded = set(report.reencoded)
  return {i: rgb_png_bytes(dataset.abspath(i))
          for i, p in enumerate(dataset.paths) if p in reencoded}
