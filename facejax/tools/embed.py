"""Embeds a folder, identity folder or list of images into an `.npz` (no pickles).

The file holds `names` [N] (paths) and `labels` [N] (identity, "" when
unknown) as unicode arrays, `embeddings` [N, D] float32, `checkpoint` (the
workdir) and `step` (int, -1 when unknown), the `flip` and `standardization`
the images were embedded with, and `skipped_names` /
`skipped_reasons` for the files that could not be used, so that
`np.load(path, allow_pickle=False)` reads all of it.

With `quantization="int8"` (`--quantize=int8`) `embeddings` holds the int8 codes of the
unit rows (D bytes an image: FaceNet's 128-byte embedding for a 128-D net) and `scale`
their global scale (`facejax.quantization`); `load_npz` returns codes / scale as float32,
which every distance renormalises: the distances of the codes themselves.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from facejax import errors, quantization
from facejax.tools.common import FaceModel, ImageList, format_no_face, format_skipped


@dataclasses.dataclass
class EmbedResult:
  """names [N] str, labels [N] str ("" unknown), embeddings [N, D] float32."""
  names: list[str]
  labels: list[str]
  embeddings: np.ndarray
  checkpoint: str
  step: int | None
  flip: str = "none"
  standardization: str = "fixed"
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)
  path: str | None = None  # where it was saved
  no_face: list[str] = dataclasses.field(default_factory=list)  # aligned: fallback crop used
  quantization: str = "none"  # "int8": saved as int8 codes (`embeddings` is their float value)

  def summary(self) -> str:
    n_ids = len({label for label in self.labels if label})
    lines = [f"embedded {len(self.names)} image(s) -> [{len(self.names)}, "
             f"{self.embeddings.shape[1]}] float32 ({n_ids} labelled identities) with "
             f"{self.checkpoint} step {self.step}"
             + (f", saved to {self.path}" if self.path else "")]
    if self.no_face:
      lines.append(format_no_face(self.no_face))
    if self.skipped:
      lines.append(format_skipped(self.skipped))
    return "\n".join(lines)


def embed_images(model: FaceModel, images: ImageList, *, flip: str | None = None,
                 standardization: str | None = None, batch_size: int | None = None,
                 progress: bool | None = None) -> EmbedResult:
  """Embeds `images` (labels kept for the files that worked); `flip` and
  `standardization` default to the config's (`config.eval.flip`, `config.data.standardization`).
  `skipped` names the unreadable files and those of the folder that are not images."""
  flip = flip or model.config.eval.flip
  standardization = standardization or model.config.data.standardization
  out = model.embed_paths(images.paths, flip=flip, standardization=standardization,
                          batch_size=batch_size, progress=progress)
  label_of = dict(zip(images.paths, images.labels))
  return EmbedResult(names=out.paths, labels=[label_of[p] for p in out.paths],
                     embeddings=out.embeddings, checkpoint=model.workdir, step=model.step,
                     flip=flip, standardization=standardization,
                     skipped={**images.left_out, **out.skipped}, no_face=out.no_face)


def save_npz(result: EmbedResult, path: str | os.PathLike, *, quantize: str = "none") -> str:
  """Writes `result` (see the module docstring), its embeddings as int8 codes when
  `quantize` is "int8"; returns the path."""
  quantization.check_quantization(quantize)
  stored = {"embeddings": np.asarray(result.embeddings, np.float32)}
  if quantize == "int8":
    codes, scale = quantization.quantize_int8(result.embeddings)
    stored = {"embeddings": codes, "scale": np.array(scale, np.float64),
              "quantization": np.array("int8", dtype=str)}
  path = os.fspath(path)
  if os.path.dirname(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
  # np.str_ arrays, never dtype=object: those would need pickle to load.
  np.savez(path, names=np.array(result.names, dtype=str),
           labels=np.array(result.labels, dtype=str), **stored,
           checkpoint=np.array(result.checkpoint, dtype=str),
           step=np.array(-1 if result.step is None else result.step, np.int64),
           flip=np.array(result.flip, dtype=str),
           standardization=np.array(result.standardization, dtype=str),
           skipped_names=np.array(list(result.skipped), dtype=str),
           skipped_reasons=np.array(list(result.skipped.values()), dtype=str))
  result.path = path if path.endswith(".npz") else path + ".npz"
  return result.path


def load_npz(path: str | os.PathLike) -> EmbedResult:
  """Reads a file written by `save_npz` with allow_pickle=False."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise errors.MissingDataError(f"no such embeddings file: {path}")
  with np.load(path, allow_pickle=False) as f:
    missing = [k for k in ("names", "labels", "embeddings") if k not in f.files]
    if missing:
      raise errors.DataError(f"{path} is not a facejax embeddings file (no {missing})")
    step = int(f["step"]) if "step" in f.files else -1
    skipped = (dict(zip(f["skipped_names"].tolist(), f["skipped_reasons"].tolist()))
               if "skipped_names" in f.files else {})
    quantized = str(f["quantization"]) if "quantization" in f.files else "none"
    if quantized == "int8":
      if "scale" not in f.files or f["embeddings"].dtype != np.int8:
        raise errors.DataError(f"{path}: int8 embeddings need int8 codes and a 'scale'")
      embeddings = quantization.dequantize(f["embeddings"], float(f["scale"]))
    elif quantized == "none":
      embeddings = f["embeddings"].astype(np.float32)
    else:
      raise errors.DataError(f"{path}: unknown quantization {quantized!r}")
    return EmbedResult(names=f["names"].tolist(), labels=f["labels"].tolist(),
                       embeddings=embeddings, quantization=quantized,
                       checkpoint=str(f["checkpoint"]) if "checkpoint" in f.files else "",
                       step=None if step < 0 else step,
                       flip=str(f["flip"]) if "flip" in f.files else "none",
                       standardization=(str(f["standardization"]) if "standardization" in f.files
                                        else "fixed"),
                       skipped=skipped, path=path)
