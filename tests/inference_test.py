"""facejax.inference, facejax.distances and facejax.evaluation.results."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import pairwise_distances

from facejax import distances, errors
from facejax.data import input_pipeline
from facejax.evaluation import lfw_eval
from facejax.evaluation import results as results_lib
from facejax.inference import Embedder, preprocess_pil
from facejax.models import create_model


# --- distances ----------------------------------------------------------------------------------

def test_distances_match_brute_force_and_sklearn():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(13, 7)), rng.normal(size=(9, 7)) * 3.0
  ua = a / np.linalg.norm(a, axis=1, keepdims=True)
  ub = b / np.linalg.norm(b, axis=1, keepdims=True)
  brute = np.array([[np.sum((x - y) ** 2) for y in ub] for x in ua])
  np.testing.assert_allclose(distances.distance_matrix(a, b, "euclidean"), brute, atol=1e-12)
  np.testing.assert_allclose(distances.distance_matrix(a, b, "euclidean"),
                             pairwise_distances(ua, ub, metric="sqeuclidean"), atol=1e-12)
  # sklearn's cosine distance does its own normalisation: no renormalising needed.
  np.testing.assert_allclose(distances.distance_matrix(a, b, "cosine"),
                             pairwise_distances(a, b, metric="cosine"), atol=1e-12)
  np.testing.assert_allclose(distances.pair_distances(a[:9], b, "cosine"),
                             np.diag(pairwise_distances(a[:9], b, metric="cosine")), atol=1e-12)
  np.testing.assert_allclose(distances.pair_distances(a[:9], b, "euclidean"),
                             np.diag(brute[:9]), atol=1e-12)
  # The same operating point in both distances: same decisions.
  t = 0.8
  np.testing.assert_array_equal(
      distances.distance_matrix(a, b, "euclidean") < t,
      distances.distance_matrix(a, b, "cosine") < distances.convert_threshold(t, "euclidean",
                                                                              "cosine"))
  assert distances.convert_threshold(0.3, "cosine", "euclidean") == pytest.approx(0.6)
  with pytest.raises(ValueError, match="manhattan"):
    distances.pair_distances(a, a, "manhattan")


# --- the embedder -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_embedder(lfw_root):
  from configs import nn1
  c = nn1.get_config("smoke")
  c.data.data_dir = str(lfw_root.parent)
  model = create_model(c.model)
  h, w = c.data.image_size, c.data.image_size
  v = model.init(jax.random.key(0), jnp.zeros((1, h, w, 3)), train=False)
  return Embedder.from_variables(c, v, batch_size=8)


@pytest.fixture(scope="module")
def lfw_files(lfw_root):
  return [str(p) for name in ("Aaron_Peirsol", "Abdullah_Gul", "Adam_Sandler")
          for p in sorted((lfw_root / "lfw" / name).glob("*.jpg"))[:4]]


def test_file_path_equals_array_path_and_is_near_the_tf_path(smoke_embedder, lfw_files, tmp_path):
  e = smoke_embedder
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"not a jpeg")
  paths = lfw_files[:5] + [str(bad)] + lfw_files[5:]
  out = e.embed_files(paths, progress=False, num_workers=2)
  assert out.paths == lfw_files and list(out.skipped) == [str(bad)]
  assert "unreadable" in out.skipped[str(bad)]
  assert out.embeddings.shape == (len(lfw_files), 32) and out.embeddings.dtype == np.float32
  arrays = np.stack([preprocess_pil(Image.open(p).convert("RGB"), e.preprocessing)
                     for p in lfw_files])
  assert arrays.dtype == np.uint8 and arrays.shape[1:] == (32, 32, 3)
  np.testing.assert_allclose(out.embeddings, e.embed_arrays(arrays), atol=1e-6)
  # One batch or many: the same numbers (padding never leaks into real rows).
  np.testing.assert_allclose(e.replace(batch_size=3).embed_arrays(arrays),
                             e.embed_arrays(arrays), atol=1e-6)
  # The tf.data path (training's decoder) differs by JPEG IDCT and uint8 rounding only.
  tf_path = e.embed_table(input_pipeline.ImageTable(lfw_files), progress=False)
  cos = np.sum(tf_path * out.embeddings, axis=1)
  assert cos.min() > 0.999, cos
  concat = e.replace(flip="concat").embed_files(lfw_files, progress=False)
  assert concat.embeddings.shape == (len(lfw_files), 64)
  np.testing.assert_allclose(concat.embeddings[:, :32], out.embeddings, atol=1e-6)


def test_preprocess_pil_matches_tensorflow_on_exactly_decoded_pixels(lfw_files):
  import tensorflow as tf
  prep = input_pipeline.Preprocessing((32, 32), (36, 36), 140, random_crop=False,
                                      random_flip=False)
  for p in lfw_files[:3]:
    rgb = np.asarray(Image.open(p).convert("RGB"))
    ours = preprocess_pil(Image.fromarray(rgb), prep).astype(np.float64)
    png = tf.io.encode_png(rgb)  # lossless: both sides start from the same pixels
    theirs = input_pipeline.decode_and_preprocess(png, tf.zeros([2], tf.int64), prep,
                                                  train=False).numpy() * 128.0 + 127.5
    # Pillow resizes uint8 with fixed-point weights: within one 8-bit level, 0.3 on average
    # (in float, mode "F", it gives TensorFlow's numbers exactly).
    assert np.abs(ours - theirs).max() <= 1.0 and np.abs(ours - theirs).mean() < 0.35


def test_empty_workdir_and_missing_step_are_one_line_checkpoint_errors(smoke_config, tmp_path):
  with pytest.raises(errors.CheckpointError, match=f"no checkpoint in {tmp_path}") as e:
    Embedder.from_workdir(smoke_config, str(tmp_path))
  assert "\n" not in str(e.value)
  from evaluation_test import fresh_checkpoint
  fresh_checkpoint(smoke_config, tmp_path / "w", step=2)
  with pytest.raises(errors.CheckpointError, match=r"step 5 not in .*w/checkpoints.*\[2\]"):
    Embedder.from_workdir(smoke_config, str(tmp_path / "w"), step=5)
  assert Embedder.from_workdir(smoke_config, str(tmp_path / "w")).step == 2


# --- results naming -----------------------------------------------------------------------------

def test_results_are_keyed_by_folder_and_settings(smoke_config, lfw_root, tmp_path):
  c = smoke_config
  c.model = {"name": "raw_pixels"}
  workdir = str(tmp_path / "w")
  run = lambda **kw: lfw_eval.evaluate_lfw(c, workdir=workdir, variables={"params": {}}, step=7,
                                           protocol="dev_test_10fold", **kw)
  calibration = run()
  assert calibration.json_path == str(results_lib.eval_dir(workdir) / "lfw_dev_test_10fold_7.json")
  before = open(calibration.json_path).read()
  # Another LFW image folder (a copy of the people DevTest needs) and another setting each get
  # a file of their own; the calibration the tools read stays as it was.
  copy = tmp_path / "lfw_copy"
  copy.mkdir()
  for person in (lfw_root / "lfw").iterdir():
    (copy / person.name).symlink_to(person, target_is_directory=True)
  other = c.copy_and_resolve_references()
  other.data.lfw_image_dir = str(copy)
  elsewhere = lfw_eval.evaluate_lfw(other, workdir=workdir, variables={"params": {}}, step=7,
                                    protocol="dev_test_10fold")
  cosine = run(distance="cosine")
  names = sorted(os.path.basename(p) for p, _ in results_lib.list_results(workdir))
  assert names == sorted(["lfw_dev_test_10fold_7.json", "lfw_dev_test_10fold+cosine_7.json",
                          f"lfw_dev_test_10fold@{results_lib.folder_slug(copy)}_7.json"])
  assert elsewhere.json_path != calibration.json_path != cosine.json_path
  assert open(calibration.json_path).read() == before
  assert results_lib.find_calibration(workdir, 7) == calibration.json_path
  assert results_lib.find_calibration(workdir, 7, folder=results_lib.lfw_folder_slug(other)) \
      == elsewhere.json_path
  # Two identity folders: two files, neither a calibration.
  a, b = tmp_path / "a" / "faces", tmp_path / "b" / "faces"
  ka = results_lib.identity_key(c, a, 7, distance="euclidean", flip="none", subtract_mean=False,
                                standardization="fixed")
  kb = results_lib.identity_key(c, b, 7, distance="euclidean", flip="none", subtract_mean=False,
                                standardization="fixed")
  assert ka.stem != kb.stem and ka.stem.startswith("identity@faces-")
  assert not ka.is_calibration and results_lib.ResultKey.parse(ka.stem + ".json") == ka
  with open(elsewhere.json_path) as f:
    assert json.load(f)["image_root"] == str(copy)
