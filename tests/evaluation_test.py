"""LFW evaluator: folds, distances, embedding, and a raw-pixel baseline on real LFW."""

import json
import os

import jax
import numpy as np
import pytest

from facejax.evaluation import lfw_eval
from facejax.models import NN1


def test_view2_folds_follow_the_file_and_view1_folds_are_balanced(lfw_root):
  pairs, folds = lfw_eval.load_pairs(lfw_root, "view2")
  assert len(pairs) == 6000
  np.testing.assert_array_equal(folds, np.repeat(np.arange(10), 600))
  pairs, folds = lfw_eval.load_pairs(lfw_root, "dev_test")
  issame = np.array([p.issame for p in pairs])
  for k in range(10):
    assert (issame[folds == k]).sum() == 50 and (~issame[folds == k]).sum() == 50
  with pytest.raises(ValueError, match="protocol"):
    lfw_eval.load_pairs(lfw_root, "view3")


def test_pair_distances_against_hand_computed_values():
  a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
  b = np.array([[0.0, 1.0], [0.0, 5.0], [-3.0, -4.0]])
  # Unit vectors: orthogonal -> |a-b|^2 = 2, cos 0; identical -> 0; opposite -> 4, cos -1.
  np.testing.assert_allclose(lfw_eval.pair_distances(a, b, "euclidean"), [2.0, 0.0, 4.0])
  np.testing.assert_allclose(lfw_eval.pair_distances(a, b, "cosine"), [1.0, 0.0, 2.0])


def test_mean_subtraction_uses_only_the_other_folds():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  folds = np.array([0, 0, 1, 1])
  got = lfw_eval.fold_distances(a, b, folds, "cosine", subtract_mean=True)
  mean_for_fold0 = np.concatenate([a[2:], b[2:]]).mean(0)
  x, y = a[0] - mean_for_fold0, b[0] - mean_for_fold0
  np.testing.assert_allclose(got[0], 1 - x @ y / np.linalg.norm(x) / np.linalg.norm(y))
  np.testing.assert_allclose(lfw_eval.fold_distances(a, b, folds, "cosine", False),
                             lfw_eval.pair_distances(a, b, "cosine"))


def test_flip_concat_keeps_the_unflipped_embedding(lfw_root):
  from facejax.data import input_pipeline
  model = NN1(embedding_dim=8, maxout_features=8, conv_width=0.125)
  x = np.zeros((1, 32, 32, 3), np.float32)
  variables = model.init(jax.random.key(0), x)
  paths = sorted(str(p) for p in (lfw_root / "lfw" / "Aaron_Peirsol").glob("*.jpg"))
  table = input_pipeline.ImageTable(paths)
  prep = input_pipeline.Preprocessing(image_size=(32, 32), resize_size=(36, 36), source_crop=140)
  plain = lfw_eval.embed_table(model, variables, table, prep, batch_size=3)
  concat = lfw_eval.embed_table(model, variables, table, prep, batch_size=3, flip="concat")
  assert plain.shape == (len(paths), 8) and concat.shape == (len(paths), 16)
  np.testing.assert_allclose(concat[:, :8], plain, atol=1e-6)
  assert not np.allclose(concat[:, 8:], plain)


def test_raw_pixel_baseline_on_dev_test(smoke_config, tmp_path):
  c = smoke_config
  c.model = {"name": "raw_pixels"}
  result = lfw_eval.evaluate_lfw(c, variables={"params": {}}, protocol="dev_test",
                                 distance="cosine", out_dir=str(tmp_path), step=0)
  # The reference figure for raw pixels + cosine on DevTest is about 0.62.
  assert 0.57 < result.accuracy < 0.68, result.summary()
  assert result.num_pairs == 1000
  with open(result.json_path) as f:
    saved = json.load(f)
  for key in ("accuracy", "val", "far", "auc", "eer"):
    assert key in saved
  assert saved["accuracy"] == pytest.approx(result.accuracy)
  assert os.path.getsize(result.roc_path) > 1000


def test_empty_workdir_gives_a_clear_error(smoke_config, tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints"):
    lfw_eval.evaluate_lfw(smoke_config, workdir=str(tmp_path))
