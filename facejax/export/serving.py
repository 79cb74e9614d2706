"""What an exported model computes, and the JSON that describes it.

The serving function takes what a deployment has in hand, aligned face crops as bytes:

  images: uint8 [B, H, W, 3], RGB, H x W = config.data.image_size, any B
  -> embeddings: float32 [B, D] with unit L2 rows (D doubled by flip="concat")

Inside: the config's standardisation ("fixed": (x - 127.5) / 128; "prewhiten": per
image (x - mean) / max(std, 1 / sqrt(H W 3))), the net in inference mode, the optional
flip fusion (`inference.embed_images`: what the evaluator computes), then L2
normalisation, which every facejax distance applies anyway. So an exported model's
embedding equals `Embedder.embed_arrays`' row divided by its norm.

What is not inside, and the JSON says so: finding and aligning the face, and the
evaluation crop and resize that bring a photo to H x W (`config.data`'s source_crop,
resize_size and image_size; `inference.preprocess_pil` does them in Pillow).
"""

from __future__ import annotations

import datetime
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import facejax
from facejax import inference
from facejax.data import datasets
from facejax.tools import common

STANDARDIZATION_FORMULAS = {
    "fixed": "(x - 127.5) / 128",
    "prewhiten": "per image: (x - mean(x)) / max(std(x), 1 / sqrt(H * W * 3))",
}


def serving_fn(model, variables: dict, *, flip: str,
               standardization: str) -> Callable[[jax.Array], jax.Array]:
  """uint8 [B, H, W, 3] -> float32 [B, D] unit rows (module doc), `variables` closed over.

  The variables are taken to the host first: an exported function holds them as
  constants, which must not carry an embedder's device placement."""
  variables = jax.tree.map(np.asarray, variables)

  def embed(images: jax.Array) -> jax.Array:
    e = inference.embed_images(model, variables, images, flip, standardization)
    return e / jnp.maximum(jnp.linalg.norm(e, axis=-1, keepdims=True), 1e-12)

  return embed


def lfw_calibration(config: ml_collections.ConfigDict, workdir: str, step: int) -> dict:
  """The LFW threshold of the workdir's evaluation JSON (`tools.common.calibration`'s choice),
  or {"missing": why} when the workdir holds none."""
  path = common.find_eval_json(workdir, step, config=config)
  if path is None:
    return {"missing": f"no LFW evaluation in {workdir}/eval: run `python -m "
                       f"facejax.evaluation --config=... --workdir={workdir}`, then export again"}
  cal = common.read_calibration(path)
  return {"threshold": cal.threshold, "distance": cal.distance, "flip": cal.flip,
          "protocol": cal.protocol, "step": cal.step, "accuracy": cal.accuracy,
          "same_identity": "distance < threshold", "source": cal.source,
          **({"note": cal.note} if cal.note else {})}


def sidecar(config: ml_collections.ConfigDict, *, export_format: str, workdir: str, step: int,
            flip: str, standardization: str, embedding_dim: int) -> dict:
  """The JSON written beside an exported model: what goes in, what comes out, the threshold."""
  prep = datasets.preprocessing(config.data, train=False)
  h, w = prep.image_size
  return {
      "format": export_format,
      "net": config.model.name,
      "step": int(step),
      "workdir": str(workdir),
      "input": {
          "shape": [None, h, w, 3], "dtype": "uint8", "layout": "NHWC", "color": "RGB",
          "before_the_model": {
              "alignment": "the training data's alignment (config.data)",
              "source_crop": prep.source_crop, "resize_size": list(prep.resize_size),
              "image_size": [h, w],
              "how": "centre crop of source_crop px (if set), bilinear resize to resize_size, "
                     "centre crop to image_size (facejax.inference.preprocess_pil)"},
      },
      "inside_the_model": {
          "standardization": standardization,
          "formula": STANDARDIZATION_FORMULAS[standardization],
          "flip": flip,
      },
      "output": {"shape": [None, embedding_dim], "dtype": "float32", "l2_normalized": True},
      "lfw_calibration": lfw_calibration(config, workdir, step),
      "facejax": facejax.__version__,
      "jax": jax.__version__,
      "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
