"""The writers: a serving function (uint8 [B, H, W, 3] -> float32 [B, D]) to a file format.

* SavedModel: `jax2tf.convert` with a symbolic batch (native serialization: the
  SavedModel holds the StableHLO of the function in one XlaCallModule op, the weights
  as its constants), signature "serving_default" with input "images".
* TFLite (float32): TensorFlow's `TFLiteConverter.from_saved_model` on that SavedModel,
  which lowers the StableHLO to TFLite builtins; the batch stays dynamic (-1).
* ONNX: jax2onnx, which converts the jaxpr itself. tf2onnx, the usual route from a
  SavedModel, cannot read XlaCallModule (onnx/tensorflow-onnx#1601). jax2onnx's package
  metadata asks for orbax-checkpoint < 0.11.37, older than facejax's, though it does not
  use it to convert: `pip install -e '.[export]'`, then `pip install --no-deps
  jax2onnx==0.17.1 onnx-ir==1.1.0` (.ci/run does).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Callable

import jax
import jax.numpy as jnp

from facejax import errors

FORMATS = ("saved_model", "tflite", "onnx")
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"


class ConverterMissingError(errors.MissingDataError):
  """The converter a format needs is not installed; the message says what to install."""


def _tf_function(fn: Callable, h: int, w: int):
  import tensorflow as tf  # noqa: PLC0415 -- TensorFlow only for the TF formats
  from jax.experimental import jax2tf  # noqa: PLC0415

  converted = jax2tf.convert(fn, polymorphic_shapes=[f"(b, {h}, {w}, 3)"], with_gradient=False)
  module = tf.Module()
  module.embed = tf.function(
      lambda images: {OUTPUT_NAME: converted(images)}, autograph=False,
      input_signature=[tf.TensorSpec([None, h, w, 3], tf.uint8, name=INPUT_NAME)])
  return module


def write_saved_model(fn: Callable, h: int, w: int, path: str) -> None:
  """A SavedModel directory at `path`: signature "serving_default", images -> embeddings."""
  import tensorflow as tf  # noqa: PLC0415

  module = _tf_function(fn, h, w)
  tf.saved_model.save(module, path, signatures={"serving_default": module.embed})


def write_tflite(fn: Callable, h: int, w: int, path: str) -> None:
  """A float32 .tflite flatbuffer at `path`, converted from a SavedModel of `fn`."""
  import tensorflow as tf  # noqa: PLC0415

  with tempfile.TemporaryDirectory() as tmp:
    write_saved_model(fn, h, w, tmp)
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(tmp).convert()
  with open(path, "wb") as f:
    f.write(flatbuffer)


def write_onnx(fn: Callable, h: int, w: int, path: str) -> None:
  """An .onnx model at `path` (jax2onnx), input "images" uint8 [B, h, w, 3]."""
  try:
    import jax2onnx  # noqa: PLC0415 -- optional
    import onnx  # noqa: PLC0415
  except ImportError as e:
    raise ConverterMissingError(
        f"--format=onnx needs jax2onnx, which is not installed ({e}): `pip install -e "
        "'.[export]' && pip install --no-deps jax2onnx==0.17.1 onnx-ir==1.1.0`") from e
  proto = jax2onnx.to_onnx(fn, [jax.ShapeDtypeStruct(("B", h, w, 3), jnp.uint8)],
                           input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                           return_mode="proto")
  onnx.save_model(proto, path)


WRITERS = {"saved_model": write_saved_model, "tflite": write_tflite, "onnx": write_onnx}


def replace_path(tmp: str, path: str) -> None:
  """Moves `tmp` to `path`, removing what was there (a file or a SavedModel folder)."""
  if os.path.isdir(path) and not os.path.islink(path):
    shutil.rmtree(path)
  os.replace(tmp, path)
