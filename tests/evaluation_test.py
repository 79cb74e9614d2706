"""LFW evaluator: folds, distances, embedding, and a raw-pixel baseline on real LFW."""

import json
import os

import jax
import numpy as np
import pytest

from facejax import distances, errors
from facejax.data import lfw
from facejax.evaluation import lfw_eval
from facejax.evaluation import results as results_lib
from facejax.inference import Embedder
from facejax.models import NN1, create_model


def test_view2_folds_follow_the_file_and_view1_folds_are_balanced(lfw_root):
  pairs, folds, test_folds = lfw_eval.load_pairs(lfw_root, "view2")
  assert len(pairs) == 6000 and test_folds is None
  np.testing.assert_array_equal(folds, np.repeat(np.arange(10), 600))
  # View 1 by the protocol: DevTest scored (fold 0), its threshold chosen on DevTrain (fold 1).
  pairs, folds, test_folds = lfw_eval.load_pairs(lfw_root, "view1")
  assert test_folds == (0,) and len(pairs) == 3200
  assert pairs[:1000] == lfw.view1_pairs(lfw_root, "test")
  assert pairs[1000:] == lfw.view1_pairs(lfw_root, "train")
  np.testing.assert_array_equal(folds, [0] * 1000 + [1] * 2200)
  pairs, folds, _ = lfw_eval.load_pairs(lfw_root, "dev_test_10fold")
  issame = np.array([p.issame for p in pairs])
  for k in range(10):
    assert (issame[folds == k]).sum() == 50 and (~issame[folds == k]).sum() == 50
  with pytest.raises(ValueError, match="protocol"):
    lfw_eval.load_pairs(lfw_root, "view3")


def test_pair_distances_against_hand_computed_values():
  a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
  b = np.array([[0.0, 1.0], [0.0, 5.0], [-3.0, -4.0]])
  # Unit vectors: orthogonal -> |a-b|^2 = 2, cos 0; identical -> 0; opposite -> 4, cos -1.
  np.testing.assert_allclose(distances.pair_distances(a, b, "euclidean"), [2.0, 0.0, 4.0])
  np.testing.assert_allclose(distances.pair_distances(a, b, "cosine"), [1.0, 0.0, 2.0])


def test_mean_subtraction_uses_only_the_other_folds():
  rng = np.random.default_rng(0)
  a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
  folds = np.array([0, 0, 1, 1])
  got = distances.fold_distances(a, b, folds, "cosine", subtract_mean=True)
  mean_for_fold0 = np.concatenate([a[2:], b[2:]]).mean(0)
  x, y = a[0] - mean_for_fold0, b[0] - mean_for_fold0
  np.testing.assert_allclose(got[0], 1 - x @ y / np.linalg.norm(x) / np.linalg.norm(y))
  np.testing.assert_allclose(distances.fold_distances(a, b, folds, "cosine", False),
                             distances.pair_distances(a, b, "cosine"))


def test_flip_concat_keeps_the_unflipped_embedding(smoke_config, lfw_root):
  from facejax.data import input_pipeline
  model = NN1(embedding_dim=8, maxout_features=8, conv_width=0.125)
  x = np.zeros((1, 32, 32, 3), np.float32)
  variables = model.init(jax.random.key(0), x)
  paths = sorted(str(p) for p in (lfw_root / "lfw" / "Aaron_Peirsol").glob("*.jpg"))
  table = input_pipeline.ImageTable(paths)
  prep = input_pipeline.Preprocessing(image_size=(32, 32), resize_size=(36, 36), source_crop=140)
  embedder = Embedder.from_variables(smoke_config, variables, model=model, preprocessing=prep,
                                     batch_size=3, flip="none")
  plain = embedder.embed_table(table, progress=False)
  concat = embedder.replace(flip="concat").embed_table(table, progress=False)
  assert plain.shape == (len(paths), 8) and concat.shape == (len(paths), 16)
  np.testing.assert_allclose(concat[:, :8], plain, atol=1e-6)
  assert not np.allclose(concat[:, 8:], plain)


def test_raw_pixel_baseline_on_dev_test(smoke_config, tmp_path):
  c = smoke_config
  c.model = {"name": "raw_pixels"}
  result = lfw_eval.evaluate_lfw(c, variables={"params": {}}, protocol="dev_test_10fold",
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


# ~25 s (three DevTest embedding passes of a conv net): .ci/run's slow line.
@pytest.mark.slow
def test_ablation_settings_match_evaluate_lfw_one_by_one(smoke_config):
  """One embedding pass scored eight ways equals eight separate `evaluate_lfw` runs."""
  import jax.numpy as jnp
  from facejax.data import datasets
  from facejax.evaluation import ablation
  c = smoke_config
  # A conv net (random init), not raw pixels: mirroring both images of a pair
  # leaves raw-pixel distances unchanged, so only a net tells flip settings apart.
  h, w = datasets.hw(c.data.image_size)
  v = create_model(c.model).init(jax.random.key(0), jnp.zeros((1, h, w, 3)), train=False)
  variables = {"params": v["params"], "batch_stats": v.get("batch_stats", {})}
  settings = (("cosine", "concat", True), ("euclidean", "none", False))
  rows, info = ablation.evaluate_settings(c, variables=variables, protocol="view1",
                                          settings=settings)
  assert info["protocol"] == "view1" and info["num_pairs"] == 1000
  for (distance, flip, subtract_mean), row in zip(settings, rows):
    ref = lfw_eval.evaluate_lfw(c, variables=variables, protocol="dev_test",
                                distance=distance, flip=flip, subtract_mean=subtract_mean,
                                write=False)
    for key, value in ref.scalars().items():
      assert row[key] == pytest.approx(value), key


def test_empty_workdir_gives_a_clear_error(smoke_config, tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints") as e:
    lfw_eval.evaluate_lfw(smoke_config, workdir=str(tmp_path))
  # A user error: the CLIs print it as one line, naming the folder.
  assert isinstance(e.value, errors.CheckpointError) and "\n" not in str(e.value)
  assert str(tmp_path) in str(e.value)


# --- per-fold table, View 1 alias, ablation options ------------------------------------------

def test_dev_test_is_view1_and_passes_the_config_checks(lfw_root, smoke_config):
  from facejax import config_checks
  view1 = lfw_eval.load_pairs(lfw_root, "view1")
  dev_test = lfw_eval.load_pairs(lfw_root, "dev_test")
  assert view1[0] == dev_test[0] and view1[2] == dev_test[2]
  np.testing.assert_array_equal(view1[1], dev_test[1])
  smoke_config.evals.lfw_dev_test.protocol = "view1"
  config_checks.validate_config(smoke_config, num_devices=1)


def test_view1_protocol_threshold_comes_from_dev_train(smoke_config, tmp_path):
  """Raw pixels + cosine by the protocol, against a brute-force reference: the threshold with
  the best DevTrain accuracy (first of ties, grid 0..4 step 0.01), applied once to DevTest."""
  c = smoke_config
  c.model = {"name": "raw_pixels"}
  result = lfw_eval.evaluate_lfw(c, variables={"params": {}}, protocol="view1",
                                 distance="cosine", out_dir=str(tmp_path), step=0)
  train = lfw_eval.evaluate_lfw(c, variables={"params": {}}, protocol="dev_train",
                                distance="cosine", write=False)
  grid = np.linspace(0, 4, 401)
  d_train, s_train = train.distances, train.pair_issame
  train_acc = [((d_train < t) == s_train).mean() for t in grid]
  threshold = grid[int(np.argmax(train_acc))]
  expected = ((result.distances < threshold) == result.pair_issame).mean()
  assert result.num_pairs == 1000 and len(result.distances) == 1000
  assert result.verification.fold_thresholds.tolist() == [threshold]
  assert result.accuracy == pytest.approx(expected, abs=1e-12)
  assert result.verification.accuracy_std == 0.0
  assert os.path.basename(result.json_path) == "lfw_view1+cosine_0.json"
  # The reference figure for raw pixels + cosine on DevTest is about 0.62.
  assert 0.57 < result.accuracy < 0.68, result.summary()


def test_fold_table_and_json_folds_on_view1(smoke_config, tmp_path):
  c = smoke_config
  c.model = {"name": "raw_pixels"}
  result = lfw_eval.evaluate_lfw(c, variables={"params": {}}, protocol="dev_test_10fold",
                                 distance="cosine", out_dir=str(tmp_path), step=3)
  # Cosine is not the config's distance (euclidean): the name says so.
  assert result.protocol == "dev_test_10fold"
  assert result.json_path.endswith("lfw_dev_test_10fold+cosine_3.json")
  v = result.verification
  lines = result.fold_table().splitlines()
  assert lines[0].split() == ["fold", "pairs", "same", "diff", "threshold", "accuracy", "VAL",
                              "FAR"]
  body = [line.split() for line in lines[2:12]]
  for k, row in enumerate(body):
    assert row[:4] == [str(k), "100", "50", "50"]
    assert float(row[4]) == pytest.approx(v.fold_thresholds[k], abs=5e-4)
    assert float(row[5]) == pytest.approx(v.fold_accuracies[k], abs=5e-5)
  last = lines[-1]
  assert last.startswith("mean ± std") and "1000" in last
  assert f"{v.accuracy_mean:.4f} ± {v.accuracy_std:.4f}" in last
  assert f"{v.val_mean:.4f} ± {v.val_std:.4f}" in last
  with open(result.json_path) as f:
    saved = json.load(f)
  # Keys another tool reads stay where they were.
  for key in ("threshold", "distance", "flip", "subtract_mean"):
    assert key in saved
  assert len(saved["verification"]["roc_fpr"]) == len(saved["verification"]["roc_tpr"]) > 100
  assert saved["standardization"] == "fixed" and len(saved["folds"]) == 10
  assert saved["folds"][4] == {"fold": 4, "pairs": 100, "same": 50, "diff": 50,
                               "threshold": v.fold_thresholds[4], "accuracy": v.fold_accuracies[4],
                               "val": v.fold_vals[4], "far": v.fold_fars[4]}


def _pipeline_pixels(paths, prep):
  """[I, H, W, 3] float64 pixels in [0, 255] after crop/resize (the pipeline's "fixed"
  output undone), for numpy references."""
  import dataclasses
  import tensorflow as tf
  from facejax.data import input_pipeline
  fixed = dataclasses.replace(prep, standardization="fixed")
  return np.stack([input_pipeline.decode_and_preprocess(
      tf.io.read_file(str(p)), tf.zeros([2], tf.int64), fixed, train=False).numpy()
      for p in paths]).astype(np.float64) * 128.0 + 127.5


def _unit(x):
  x = x.reshape(len(x), -1)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_prewhiten_option_reaches_the_embedding(smoke_config, lfw_root):
  from facejax.data import input_pipeline
  c = smoke_config
  c.model = {"name": "raw_pixels"}
  paths = sorted((lfw_root / "lfw" / "Aaron_Peirsol").glob("*.jpg"))[:3]
  table = input_pipeline.ImageTable([str(p) for p in paths])
  x = _pipeline_pixels(paths, lfw_eval.EvalOptions.resolve(c).preprocessing(c))
  # davidsandberg's prewhiten: (x - mean) / max(std, 1/sqrt(size)) per image.
  n = x[0].size
  white = (x - x.mean((1, 2, 3), keepdims=True)) / np.maximum(
      x.std((1, 2, 3), keepdims=True), 1 / np.sqrt(n))
  got = {}
  for mode in ("fixed", "prewhiten"):
    options = lfw_eval.EvalOptions.resolve(c, standardization=mode)
    assert options.preprocessing(c).standardization == mode
    embedder = Embedder.from_variables(c, {"params": {}}, standardization=mode, batch_size=4)
    assert embedder.preprocessing == options.preprocessing(c)
    got[mode] = embedder.embed_table(table, progress=False)
  np.testing.assert_allclose(got["prewhiten"], _unit(white), atol=2e-6)
  np.testing.assert_allclose(got["fixed"], _unit((x - 127.5) / 128), atol=2e-6)
  assert not np.allclose(got["fixed"], got["prewhiten"], atol=1e-3)
  with pytest.raises(ValueError, match="standardization='whiten'"):
    lfw_eval.EvalOptions.resolve(c, standardization="whiten")


# --- identity folders ---------------------------------------------------------------------------

from facejax.data import identity_folder as identity_folder_lib  # noqa: E402
from facejax.data import lfw  # noqa: E402
from facejax.evaluation import identity_pairs  # noqa: E402
from facejax.evaluation.identity_pairs import IdentityFolderOptions  # noqa: E402

# 10 LFW identities, 3 to 6 images each: enough for 10 folds x (4 + 4) pairs.
SUBSET = ("Aaron_Peirsol", "Abdullah_Gul", "Adam_Sandler", "Al_Gore", "Alvaro_Uribe",
          "Amelie_Mauresmo", "Andre_Agassi", "Colin_Powell", "George_W_Bush", "Tony_Blair")


@pytest.fixture
def small_folder(lfw_root, tmp_path):
  """tmp_path/faces/<identity>/ with symlinks to a few LFW images, plus one broken file."""
  root = tmp_path / "faces"
  for k, name in enumerate(SUBSET):
    (root / name).mkdir(parents=True)
    for src in sorted((lfw_root / "lfw" / name).glob("*.jpg"))[:3 + k % 4]:
      (root / name / src.name).symlink_to(src)
  (root / "Al_Gore" / "Al_Gore_0099.jpg").write_bytes(b"not a jpeg")
  return root


def _labels(seed=0, num_identities=300):
  """Heavy-tailed identity sizes like LFW's: most identities 1 image, a few hundreds."""
  sizes = np.minimum(np.random.default_rng(seed).zipf(1.8, num_identities), 300)
  return np.repeat(np.arange(num_identities), sizes)


def test_sampled_pairs_are_balanced_distinct_correct_and_seeded():
  labels = _labels()
  s = identity_pairs.sample_pairs(labels, 2000, seed=7)
  assert len(s.issame) == 2000
  for k in range(10):
    fold = s.folds == k
    assert fold.sum() == 200 and s.issame[fold].sum() == 100
    # pairs.txt layout: each fold's genuine block, then its impostor block.
    np.testing.assert_array_equal(s.issame[k * 200:(k + 1) * 200], np.repeat([True, False], 100))
  np.testing.assert_array_equal(labels[s.index_a] == labels[s.index_b], s.issame)
  assert (s.index_a < s.index_b).all()
  assert len(set(zip(s.index_a.tolist(), s.index_b.tolist()))) == 2000
  # Genuine pairs spread over identities instead of piling on the largest ones.
  per_identity = np.bincount(labels[s.index_a[s.issame]])
  assert per_identity.max() <= 2 * np.ceil(1000 / (np.bincount(labels) >= 2).sum()) + 1
  again = identity_pairs.sample_pairs(labels, 2000, seed=7)
  other = identity_pairs.sample_pairs(labels, 2000, seed=8)
  for field in ("index_a", "index_b", "issame", "folds"):
    np.testing.assert_array_equal(getattr(s, field), getattr(again, field))
  assert not np.array_equal(s.index_a, other.index_a)


def test_small_label_sets_shrink_to_what_they_can_give_or_fail_clearly():
  # 5 genuine pairs possible in all: sizes 3, 2, 2, 1 -> 3 + 1 + 1 = 5 < 10 folds.
  with pytest.raises(ValueError, match="too few for 10 folds"):
    identity_pairs.sample_pairs(np.repeat(np.arange(4), [3, 2, 2, 1]), 100)
  labels = np.repeat(np.arange(6), [6, 5, 4, 1, 1, 1])  # 15 + 10 + 6 = 31 genuine pairs
  s = identity_pairs.sample_pairs(labels, 1000, seed=0)
  assert len(s.issame) == 60 and s.issame.sum() == 30  # 10 folds x (3 + 3)
  assert len(set(zip(s.index_a.tolist(), s.index_b.tolist()))) == 60
  with pytest.raises(ValueError, match="at least 2 identities"):
    identity_pairs.sample_pairs(np.zeros(5, int))
  with pytest.raises(ValueError, match="at least 2 images"):
    identity_pairs.sample_pairs(np.arange(50))
  with pytest.raises(ValueError, match="num_pairs=10: need at least 20"):
    identity_pairs.sample_pairs(labels, 10)


def test_pairs_file_round_trip_through_the_lfw_reader(lfw_root, tmp_path):
  listing = identity_folder_lib.scan_identity_folder(lfw_root / "lfw")
  sampled = identity_pairs.sample_pairs(listing.labels, 600, seed=1)
  pairs = identity_pairs.to_lfw_pairs(sampled, listing.paths, listing)
  path = identity_pairs.write_pairs(tmp_path / "pairs.txt", pairs)
  assert open(path).readline() == "10\t30\n"
  parsed = lfw.read_pairs(path)
  key = lambda p: (p.name_a, p.index_a, p.name_b, p.index_b, p.issame, p.fold)
  assert [key(p) for p in parsed] == [key(p) for p in pairs]
  # LFW files are <Name>_<NNNN>.jpg, so a listing index is LFW's own image number.
  for p, q in zip(parsed, pairs):
    assert lfw.image_path(lfw_root / "lfw", p.path_a) == lfw_root / "lfw" / q.path_a
  back, folds = identity_pairs.read_pairs(path, listing)
  assert [(p.path_a, p.path_b) for p in back] == [(p.path_a, p.path_b) for p in pairs]
  np.testing.assert_array_equal(folds, sampled.folds)
  # A View 1 style file (one block) is dealt into balanced folds; a missing image is named.
  view1 = tmp_path / "view1.txt"
  view1.write_text("2\nAaron_Peirsol\t1\t2\nAl_Gore\t1\t3\nAbba_Eban\t1\tAl_Gore\t1\n"
                   "Abdullah_Gul\t2\tAdam_Sandler\t1\n")
  assert identity_pairs.read_pairs(view1, listing)[1].tolist() == [0, 5, 0, 5]
  view1.write_text("1\nAaron_Peirsol\t1\t9\nAbba_Eban\t1\tAl_Gore\t1\n")
  with pytest.raises(ValueError, match=r"view1.txt:2: image 9 of 'Aaron_Peirsol'.* holds 4"):
    identity_pairs.read_pairs(view1, listing)


def test_bad_identity_folders_are_named(smoke_config, tmp_path):
  c = smoke_config
  kw = dict(options=IdentityFolderOptions(write=False), variables={"params": {}})
  c.model = {"name": "raw_pixels"}
  with pytest.raises(FileNotFoundError, match="nowhere") as e:
    identity_pairs.evaluate_identity_folder(c, tmp_path / "nowhere", **kw)
  assert isinstance(e.value, errors.UserError)
  empty = tmp_path / "empty"
  (empty / "Nobody").mkdir(parents=True)
  with pytest.raises(ValueError, match=f"{empty} holds no identity folder with images") as e:
    identity_pairs.evaluate_identity_folder(c, empty, **kw)
  assert isinstance(e.value, errors.UserError)
  one = tmp_path / "one"
  (one / "Solo").mkdir(parents=True)
  for k in range(3):
    _jpeg(one / "Solo" / f"{k}.jpg", k)
  with pytest.raises(ValueError, match=f"{one}: impostor pairs need 2 identities"):
    identity_pairs.evaluate_identity_folder(c, one, **kw)
  singles = tmp_path / "singles"
  for k in range(4):
    (singles / f"P{k}").mkdir(parents=True)
    _jpeg(singles / f"P{k}" / "a.jpg", k)
  (singles / "P0" / "b.jpg").write_bytes(b"")  # P0's second image is unreadable
  with pytest.raises(ValueError, match=f"{singles}: genuine pairs need an identity with 2 .*"
                                       r"\(1 unreadable files skipped\)"):
    identity_pairs.evaluate_identity_folder(c, singles, **kw)


def _jpeg(path, value):
  from PIL import Image
  Image.fromarray(np.full((40, 40, 3), 40 * value, np.uint8)).save(path)


def test_identity_folder_options_change_the_distances(smoke_config, small_folder, tmp_path):
  c = smoke_config
  c.model = {"name": "raw_pixels"}
  run = lambda **kw: identity_pairs.evaluate_identity_folder(
      c, small_folder, IdentityFolderOptions(out_dir=str(tmp_path / "out"), **kw),
      variables={"params": {}}, step=0)
  base = run(num_pairs=80, seed=3, distance="cosine")
  assert base.num_pairs == 80 and base.skipped == {"Al_Gore/Al_Gore_0099.jpg": "corrupt"}
  # The written pairs are reused as they are; readable images only.
  listing = identity_pairs.folder_listing(small_folder)
  pairs, folds = identity_pairs.read_pairs(base.pairs_file, listing)
  assert "Al_Gore/Al_Gore_0099.jpg" not in lfw.unique_images(pairs)
  x = _pipeline_pixels([small_folder / p for p in lfw.unique_images(pairs)],
                       lfw_eval.EvalOptions.resolve(c).preprocessing(c))
  row = {p: i for i, p in enumerate(lfw.unique_images(pairs))}
  a = np.array([row[p.path_a] for p in pairs])
  b = np.array([row[p.path_b] for p in pairs])
  cosine = lambda e: 1 - np.sum(_unit(e[a]) * _unit(e[b]), 1)
  np.testing.assert_allclose(base.distances, cosine(x - 127.5), atol=1e-5)
  same_pairs = dict(pairs_file=base.pairs_file)
  eu = run(distance="euclidean", **same_pairs)
  np.testing.assert_allclose(eu.distances, 2 * base.distances, atol=1e-5)
  white = run(distance="cosine", standardization="prewhiten", **same_pairs)
  centred = x - x.mean((1, 2, 3), keepdims=True)
  np.testing.assert_allclose(white.distances, cosine(centred), atol=1e-5)
  flipped = run(distance="cosine", flip="concat", **same_pairs)
  ea, ef = _unit(x - 127.5), _unit(x[:, :, ::-1] - 127.5)
  np.testing.assert_allclose(flipped.distances,
                             1 - (np.sum(ea[a] * ea[b], 1) + np.sum(ef[a] * ef[b], 1)) / 2,
                             atol=1e-5)
  mean = run(distance="cosine", subtract_mean=True, **same_pairs)
  e = _unit(x - 127.5)
  for k in range(10):
    rest = np.concatenate([e[a][folds != k], e[b][folds != k]]).mean(0)
    fold = folds == k
    np.testing.assert_allclose(mean.distances[fold],
                               1 - np.sum(_unit(e[a][fold] - rest) * _unit(e[b][fold] - rest), 1),
                               atol=1e-5)
  # A fixed pairs file cannot drop a pair: an unreadable image it names is an error.
  pairs_text = open(base.pairs_file).read()
  broken = tmp_path / "broken_pairs.txt"
  bad_index = identity_pairs._files_by_identity(listing)["Al_Gore"].index(
      "Al_Gore/Al_Gore_0099.jpg") + 1
  broken.write_text(pairs_text.replace(pairs_text.splitlines()[1], f"Al_Gore\t1\t{bad_index}", 1))
  with pytest.raises(ValueError, match="Al_Gore_0099.jpg \\(corrupt"):
    run(pairs_file=broken)


def fresh_checkpoint(config, workdir, step=1):
  """A freshly initialised `config.model` saved as checkpoint `step` of `workdir`."""
  import jax.numpy as jnp
  from facejax import checkpointing
  from facejax.data import datasets
  model = create_model(config.model)
  h, w = datasets.hw(config.data.image_size)
  v = model.init(jax.random.key(0), jnp.zeros((1, h, w, 3)), train=False)
  manager = checkpointing.make_manager(str(workdir), async_save=False)
  model_vars = {"params": v["params"], "batch_stats": v.get("batch_stats", {})}
  checkpointing.save(manager, step, model_vars, {"step": np.int64(step)},
                     checkpointing.checkpoint_meta(config, step))
  manager.wait_until_finished()
  manager.close()


def test_identity_folder_cli_with_a_fresh_smoke_model(smoke_config, small_folder, lfw_root,
                                                      tmp_path):
  import subprocess
  import sys
  fresh_checkpoint(smoke_config, tmp_path / "w")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, FACEJAX_DATA_DIR=str(lfw_root.parent), JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "facejax.evaluation", "--config=configs/nn1.py:smoke",
       f"--workdir={tmp_path / 'w'}", f"--identity_folder={small_folder}", "--num_pairs=80",
       "--pairs_seed=1", "--flip=concat", "--standardization=prewhiten"],
      cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "mean ± std" in out.stdout and "skipped 1 unreadable files" in out.stdout
  assert "Al_Gore/Al_Gore_0099.jpg (corrupt)" in out.stdout
  eval_dir = tmp_path / "w" / "eval"
  # Keyed by what was measured: the folder and the two settings that are not the config's.
  key = results_lib.identity_key(smoke_config, small_folder, 1, distance="euclidean",
                                 flip="concat", subtract_mean=False, standardization="prewhiten")
  assert key.stem == f"identity@{results_lib.folder_slug(small_folder)}+flip-concat+prewhiten_1"
  assert key.stem.startswith("identity@faces-")
  paths = key.paths(eval_dir)
  with open(paths.json) as f:
    saved = json.load(f)
  assert 0 <= saved["accuracy"] <= 1 and saved["num_pairs"] == 80
  assert saved["flip"] == "concat" and saved["standardization"] == "prewhiten"
  assert [f["pairs"] for f in saved["folds"]] == [8] * 10
  assert saved["pairs_file"] == paths.pairs
  assert lfw.read_pairs(saved["pairs_file"])[0].fold == 0
  assert os.path.getsize(paths.roc) > 1000
