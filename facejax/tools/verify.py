"""Are two face images the same person? Distance against the LFW-calibrated threshold.

The threshold is the best-accuracy one of the newest LFW evaluation of the
checkpoint (`<workdir>/eval/lfw_*.json`, View 2 preferred), applied with the
distance and flip it was computed with; `threshold=` overrides it. "Same"
means distance < threshold, the rule the LFW metrics use.
"""

from __future__ import annotations

import dataclasses
import os

from facejax import errors
from facejax.distances import pair_distances
from facejax.tools.common import Calibration, FaceModel, format_no_face


@dataclasses.dataclass
class VerifyResult:
  path_a: str
  path_b: str
  distance: float
  calibration: Calibration
  no_face: list[str] = dataclasses.field(default_factory=list)  # aligned: fallback crop used

  @property
  def same(self) -> bool:
    return self.distance < self.calibration.threshold

  def summary(self) -> str:
    verdict = "SAME person" if self.same else "DIFFERENT people"
    op = "<" if self.same else ">="
    return (f"{verdict}: {self.calibration.distance} distance {self.distance:.4f} {op} "
            f"threshold {self.calibration.threshold:.4f}\n"
            f"  a: {self.path_a}\n  b: {self.path_b}\n"
            f"  threshold source: {self.calibration.describe()}"
            + (f"\n{format_no_face(self.no_face)}" if self.no_face else ""))


def verify(model: FaceModel, path_a: str | os.PathLike, path_b: str | os.PathLike,
           calibration: Calibration) -> VerifyResult:
  """Embeds both images (with `calibration.flip`) and compares them.

  Raises errors.MissingDataError / errors.DataError naming an image that is missing or
  unreadable (or has no face when aligning with fallback "skip").
  """
  paths = [os.fspath(path_a), os.fspath(path_b)]
  for p in paths:
    if not os.path.isfile(p):
      raise errors.MissingDataError(f"no such image file: {p}")
  out = model.embed_paths(paths, flip=calibration.flip,
                          standardization=calibration.standardization, progress=False)
  if out.skipped:
    raise errors.DataError(
        "cannot verify: " + "; ".join(f"{p}: {r}" for p, r in out.skipped.items()))
  # Same path twice is embedded twice by embed_files, so rows 0 and 1 are a and b.
  d = pair_distances(out.embeddings[:1], out.embeddings[1:2], calibration.distance)
  return VerifyResult(paths[0], paths[1], float(d[0]), calibration, out.no_face)
