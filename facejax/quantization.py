"""Embeddings as int8 codes: FaceNet's 128-byte embedding (Schroff et al. 2015, §5.4: the
128-D float embedding can be quantized to 128 bytes without loss of accuracy; the paper
gives no scheme).

  codes, scale = quantize_int8(embeddings)   # int8 [N, D], float
  embeddings ~= codes / scale                # unit rows, to within 0.5 / scale a coordinate

One global scale, fixed by D alone: scale = 127 sqrt(D) / INT8_CLIP_SIGMAS. A unit vector's
coordinates have a root mean square of 1 / sqrt(D), so codes span +-INT8_CLIP_SIGMAS times
that, and a coordinate beyond it (rare: `clipped_fraction` counts them) is clipped.

Why global and not per dimension: facejax's embeddings are L2-normalised (every distance
renormalises), so no dimension needs a range of its own fitted on training data. The
scale then cancels out of every distance: cos(a, b) = <c_a, c_b> / (|c_a| |c_b|) on the
integer codes, so distances are computed from the codes themselves; and two files made
at different times, from different image sets, share the scale, so their codes compare.
"""

from __future__ import annotations

import numpy as np

from facejax import errors
from facejax.distances import l2_normalize

QUANTIZATIONS = ("none", "int8")
INT8_CLIP_SIGMAS = 8.0


def check_quantization(name: str) -> str:
  """`name` if it is one of QUANTIZATIONS, else a ConfigError naming it."""
  if name not in QUANTIZATIONS:
    raise errors.ConfigError(f"--quantize={name!r}: choose one of {QUANTIZATIONS}")
  return name


def int8_scale(dim: int) -> float:
  """codes = round(x * scale) for unit vectors x of `dim` coordinates."""
  return 127.0 * float(np.sqrt(dim)) / INT8_CLIP_SIGMAS


def quantize_int8(embeddings: np.ndarray) -> tuple[np.ndarray, float]:
  """[N, D] embeddings (any norm) -> (int8 [N, D] codes of the unit rows, scale)."""
  x = l2_normalize(embeddings)
  scale = int8_scale(x.shape[-1])
  return np.clip(np.rint(x * scale), -127, 127).astype(np.int8), scale


def dequantize(codes: np.ndarray, scale: float) -> np.ndarray:
  """int8 codes [N, D] -> float32 [N, D], rows of norm about 1."""
  return (codes.astype(np.float32) / np.float32(scale)).astype(np.float32)


def clipped_fraction(embeddings: np.ndarray) -> float:
  """The fraction of coordinates of the unit rows that `quantize_int8` clips."""
  x = l2_normalize(embeddings)
  return float(np.mean(np.abs(x) * int8_scale(x.shape[-1]) > 127.5))


def int8_roundtrip(embeddings: np.ndarray) -> np.ndarray:
  """What a consumer of the int8 codes sees: `dequantize(*quantize_int8(embeddings))`."""
  return dequantize(*quantize_int8(embeddings))
