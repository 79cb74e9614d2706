r"""Take a model out of facejax: SavedModel, TFLite (float32) and ONNX.

  python -m facejax.export --config=configs/nn4_small2.py --workdir=W --format=tflite \
      --output=nn4_small2.tflite [--step=N] [--flip=none|concat|average] [--overwrite]

  from facejax import export
  info = export.export_model(config, workdir, "saved_model", "exported/nn4_small2")
  embeddings = export.load_exported("saved_model", "exported/nn4_small2")(uint8_crops)

The model takes uint8 [B, H, W, 3] aligned RGB crops at config.data.image_size, any
batch B, and returns float32 [B, D] unit-L2 embeddings: standardisation, flip fusion
(default: config.eval.flip, what the evaluator uses) and normalisation are inside
(`serving`). A JSON beside the model (`<output>.json`) gives the net, the step, the
input size and what to do to a photo before the model, and the LFW threshold
calibrated in the workdir. The model is written to a temporary name and moved into
place at the end, so a failed export leaves an older one whole.
"""

from __future__ import annotations

import json
import os
import shutil

import ml_collections

from facejax import errors, inference
from facejax.export import formats, serving
from facejax.export.runtimes import load_exported
from facejax.export.formats import FORMATS
from facejax.tools.common import OutputExistsError

__all__ = ["FORMATS", "export_model", "load_exported", "sidecar_path"]


def sidecar_path(output: str) -> str:
  return os.fspath(output).rstrip("/") + ".json"


def export_model(config: ml_collections.ConfigDict, workdir: str, export_format: str,
                 output: str, *, step: int | None = None, flip: str | None = None,
                 overwrite: bool = False) -> dict:
  """Writes the checkpoint of `workdir` (newest good step, or `step`) as `export_format` at
  `output`, and its JSON at `sidecar_path(output)`; returns that JSON's dict.

  Raises (all `errors.UserError`): ConfigError for an unknown format or flip,
  OutputExistsError when `output` or its JSON exists and not `overwrite`,
  `checkpointing.NoCheckpointError` / IncompatibleCheckpointError for the workdir,
  `formats.ConverterMissingError` when ONNX's converter is not installed.
  """
  if export_format not in FORMATS:
    raise errors.ConfigError(f"--format={export_format!r}: choose one of {FORMATS}")
  flip = flip or config.eval.flip
  if flip not in inference.FLIPS:
    raise errors.ConfigError(f"--flip={flip!r}: choose one of {inference.FLIPS}")
  output = os.fspath(output).rstrip("/")
  meta_path = sidecar_path(output)
  if not overwrite:
    for path in (output, meta_path):
      if os.path.lexists(path):
        raise OutputExistsError(f"{path} exists: pass --overwrite to replace it, or another "
                                "--output")
  embedder = inference.Embedder.from_workdir(config, workdir, step, flip=flip)
  h, w = embedder.preprocessing.image_size
  standardization = embedder.standardization
  fn = serving.serving_fn(embedder.model, embedder.variables, flip=flip,
                          standardization=standardization)
  info = serving.sidecar(config, export_format=export_format, workdir=workdir,
                         step=embedder.step, flip=flip, standardization=standardization,
                         embedding_dim=embedder.embedding_dim)
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(output)}.partial")
  if os.path.isdir(tmp):
    shutil.rmtree(tmp)
  formats.WRITERS[export_format](fn, h, w, tmp)
  formats.replace_path(tmp, output)
  with open(meta_path + ".partial", "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")
  os.replace(meta_path + ".partial", meta_path)
  return info

