"""Running an exported model by its own runtime: what a deployment does, in Python.

  run = load_exported("tflite", "exported/irv1.tflite")
  embeddings = run(images)   # uint8 [B, H, W, 3] -> float32 [B, D], unit rows

SavedModel: TensorFlow (signature "serving_default"). TFLite: TensorFlow's TFLite
interpreter (resized when the batch changes). ONNX: onnxruntime's CPU provider.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from facejax.export.formats import INPUT_NAME, OUTPUT_NAME


def load_exported(export_format: str, path: str,
                  num_threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
  """A function running the model exported as `export_format` at `path` on uint8 images."""
  num_threads = num_threads or os.cpu_count()
  if export_format == "saved_model":
    import tensorflow as tf  # noqa: PLC0415
    serve = tf.saved_model.load(path).signatures["serving_default"]
    return lambda images: serve(**{INPUT_NAME: tf.constant(images)})[OUTPUT_NAME].numpy()
  if export_format == "tflite":
    import tensorflow as tf  # noqa: PLC0415
    interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
    index = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    allocated = [None]

    def run(images):
      if allocated[0] != images.shape:  # reallocating costs: only when the batch changes
        interpreter.resize_tensor_input(index, images.shape)
        interpreter.allocate_tensors()
        allocated[0] = images.shape
      interpreter.set_tensor(index, images)
      interpreter.invoke()
      return interpreter.get_tensor(out)
    return run
  if export_format == "onnx":
    import onnxruntime as ort  # noqa: PLC0415
    options = ort.SessionOptions()
    options.log_severity_level = 3  # jax2onnx's NHWC shape hints make it warn per layer
    options.intra_op_num_threads = num_threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
  raise ValueError(f"unknown export format {export_format!r}")
