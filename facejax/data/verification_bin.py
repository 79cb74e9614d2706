"""insightface `.bin` verification sets (lfw, cfp_fp, cfp_ff, agedb_30, calfw, cplfw, vgg2_fp).

A `.bin` is a pickle of `(bins, issame_list)`: 2P encoded images (JPEG, 112x112 in the
published sets) and P booleans; pair i is `(bins[2i], bins[2i + 1])`. The images come
in three packings, all read here:

* Python 2 `str` (insightface's `lfw2pack`: raw JPEG file bytes; opcodes BINSTRING /
  SHORT_BINSTRING, no global);
* Python 3 `bytes` (BINBYTES / SHORT_BINBYTES, no global; what `write_bin` writes);
* uint8 ndarrays of encoded bytes (the CFP / AgeDB packing scripts keep `cv2.imencode`'s
  output), which need numpy's array reconstruction.

A pickle can run any callable it names, so it is read with `SafeUnpickler`: the only
globals it resolves are the three names numpy's array reconstruction needs
(`numpy.core.multiarray._reconstruct` under NumPy 1, `numpy._core.multiarray._reconstruct`
under NumPy 2, `numpy.ndarray`, `numpy.dtype`). Any other global (`os.system`, ...) stops
the load at that opcode with one line naming the file and the global: nothing the file
names is called.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
from collections.abc import Sequence

import numpy as np

from facejax import errors

# (module, name) -> how to find it in the installed numpy.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
}


def _multiarray():
  core = getattr(np, "_core", None)  # NumPy 2; NumPy 1 has np.core only
  return core.multiarray if core is not None else np.core.multiarray  # pragma: no cover


class BinFormatError(errors.DataError):
  """A `.bin` that is not a verification set, or that names a forbidden global."""


class SafeUnpickler(pickle.Unpickler):
  """An unpickler that resolves only numpy's array-reconstruction globals (module doc)."""

  def __init__(self, file, *, source: str):
    # latin1 maps every byte of a Python 2 str to one code point, so `_as_bytes` recovers
    # the JPEG bytes exactly, and it is what numpy needs for Python 2 array pickles.
    super().__init__(file, encoding="latin1")
    self.source = source

  def find_class(self, module, name):
    where = _ALLOWED_GLOBALS.get((module, name))
    if where is None:
      raise BinFormatError(f"{self.source}: refused to load: its pickle names the global "
                           f"{module}.{name}; a .bin may name only numpy's array "
                           "reconstruction (numpy.core.multiarray._reconstruct, numpy.ndarray, "
                           "numpy.dtype)")
    owner = _multiarray() if where[0] == "multiarray" else np
    return getattr(owner, where[1])


@dataclasses.dataclass(frozen=True, eq=False)
class VerificationBin:
  """A loaded `.bin`: `images` [2P] encoded bytes, `issame` [P] bool, `path` its file."""
  path: str
  images: list[bytes]
  issame: np.ndarray

  @property
  def num_pairs(self) -> int:
    return len(self.issame)


def _as_bytes(item, path: str, index: int) -> bytes:
  if isinstance(item, (bytes, bytearray)):
    return bytes(item)
  if isinstance(item, str):  # a Python 2 str, decoded as latin1
    return item.encode("latin1")
  if isinstance(item, np.ndarray) and item.dtype == np.uint8:
    return item.tobytes()
  raise BinFormatError(f"{path}: image {index} is a {type(item).__name__}"
                       f"{' of ' + str(item.dtype) if isinstance(item, np.ndarray) else ''}, "
                       "not encoded image bytes (bytes, Python 2 str or a uint8 ndarray)")


def read_bin(path: str | os.PathLike) -> VerificationBin:
  """Loads a `.bin` safely (module docstring). Raises BinFormatError naming the file for a
  truncated or foreign pickle, a forbidden global, or an issame list of the wrong length."""
  path = os.fspath(path)
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise errors.MissingDataError(f"{path}: no such .bin file") from None
  try:
    loaded = SafeUnpickler(io.BytesIO(data), source=path).load()
  except BinFormatError:
    raise
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError,
          AttributeError, KeyError) as e:
    raise BinFormatError(f"{path}: not a readable .bin verification set (truncated or "
                         f"corrupt pickle: {type(e).__name__}: {e})") from None
  if not (isinstance(loaded, (tuple, list)) and len(loaded) == 2):
    raise BinFormatError(f"{path}: a .bin holds a pickled (bins, issame_list) pair; found "
                         f"{type(loaded).__name__}")
  bins, issame = loaded
  bins, issame = list(bins), np.asarray(list(issame))
  if len(bins) != 2 * len(issame):
    raise BinFormatError(f"{path}: {len(bins)} images for an issame list of {len(issame)} "
                         f"pairs; a .bin holds 2 images per pair ({2 * len(issame)})")
  if issame.size and issame.dtype != bool and not np.isin(issame, (0, 1)).all():
    raise BinFormatError(f"{path}: issame_list holds values other than True/False")
  images = [_as_bytes(item, path, i) for i, item in enumerate(bins)]
  return VerificationBin(path=path, images=images, issame=issame.astype(bool))


def write_bin(path: str | os.PathLike, images: Sequence[bytes], issame: Sequence[bool]) -> str:
  """Writes `(images, issame)` as a `.bin` that insightface's loader and `read_bin` read:
  Python 3 bytes (pickle protocol 4, no global). `images` [2P] encoded, `issame` [P]."""
  images, issame = [bytes(b) for b in images], [bool(s) for s in issame]
  if len(images) != 2 * len(issame):
    raise ValueError(f"{len(images)} images for {len(issame)} pairs: need 2 per pair")
  path = os.fspath(path)
  tmp = f"{path}.tmp"
  with open(tmp, "wb") as f:
    pickle.dump((images, issame), f, protocol=4)
  os.replace(tmp, path)
  return path
