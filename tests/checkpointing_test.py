"""Checkpoint safety: damaged newest steps are detected, named, and skipped on resume."""

import glob
import logging
import os
import shutil

import jax
import numpy as np
import pytest

import configs
from facejax import checkpointing, train
from facejax.evaluation import lfw_eval


def _config(smoke_config, steps):
  c = smoke_config.copy_and_resolve_references()
  c.num_train_steps = steps
  c.checkpoint.every_steps = 2
  c.checkpoint.max_to_keep = 5
  c.evals = {}
  return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lfw_root):
  """An uninterrupted 6-step run and a 4-step run (checkpoints at 2 and 4) to damage."""
  smoke = configs.get_config("nn1:smoke")
  smoke.data.data_dir = str(lfw_root.parent)
  base = tmp_path_factory.mktemp("ckpt")
  straight = train.train_and_evaluate(_config(smoke, 6), str(base / "straight"))
  train.train_and_evaluate(_config(smoke, 4), str(base / "four"))
  return smoke, base, jax.device_get(straight.params), jax.device_get(straight.opt_state)


def _largest_file(step_dir, item):
  files = glob.glob(os.path.join(step_dir, item, "**", "*"), recursive=True)
  return max((f for f in files if os.path.isfile(f)), key=os.path.getsize)


def _truncate(step_dir):
  path = _largest_file(step_dir, "model")
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def _flip_bytes(step_dir):
  path = _largest_file(step_dir, "train")
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    chunk = bytearray(f.read(16))
    f.seek(os.path.getsize(path) // 2)
    f.write(bytes(b ^ 0xFF for b in chunk))


def _break_meta(step_dir):
  with open(os.path.join(step_dir, "meta", "metadata"), "w") as f:
    f.write('{"model": {"name": "nn1", "emb')


def _lose_manifest(step_dir):
  os.remove(os.path.join(step_dir, "model", "manifest.ocdbt"))


@pytest.mark.parametrize("damage", [_truncate, _flip_bytes, _break_meta, _lose_manifest],
                         ids=["truncated_array_file", "flipped_bytes", "truncated_meta",
                              "missing_manifest"])
def test_damaged_latest_step_falls_back_and_resumes_bit_exact(runs, damage, tmp_path, caplog):
  smoke, base, straight_params, straight_opt = runs
  workdir = tmp_path / "w"
  shutil.copytree(base / "four", workdir)
  damage(os.path.join(checkpointing.checkpoint_dir(str(workdir)), "4"))

  with caplog.at_level(logging.WARNING):
    resumed = train.train_and_evaluate(_config(smoke, 6), str(workdir))
  warnings = "\n".join(r.getMessage() for r in caplog.records)
  assert "Checkpoint step 4 is damaged" in warnings
  assert "Resuming from checkpoint step 2" in warnings
  # The damaged step is kept for inspection, out of the manager's way, and
  # the resumed run wrote a fresh step 4.
  assert os.path.isdir(os.path.join(checkpointing.quarantine_dir(str(workdir)), "4"))
  assert checkpointing.make_manager(str(workdir), read_only=True).all_steps() == [2, 4, 6]
  # Steps 3..6 were replayed from step 2 with the same batches and RNG.
  for a, b in zip(jax.tree.leaves(straight_params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(a, np.asarray(b))
  for a, b in zip(jax.tree.leaves(straight_opt), jax.tree.leaves(resumed.opt_state)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_every_step_damaged_is_an_error_naming_them(runs, tmp_path):
  smoke, base, _, _ = runs
  workdir = tmp_path / "w"
  shutil.copytree(base / "four", workdir)
  for step in ("2", "4"):
    _break_meta(os.path.join(checkpointing.checkpoint_dir(str(workdir)), step))
  with pytest.raises(checkpointing.CorruptCheckpointError, match=r"steps \[4, 2\]"):
    train.train_and_evaluate(_config(smoke, 6), str(workdir))


def test_evaluator_skips_a_damaged_latest_step_but_not_an_asked_for_one(runs, tmp_path):
  smoke, base, _, _ = runs
  workdir = tmp_path / "w"
  shutil.copytree(base / "four", workdir)
  step4 = os.path.join(checkpointing.checkpoint_dir(str(workdir)), "4")
  # The evaluator reads the model item only: damage to the train item does
  # not stop it from using the newest step.
  _flip_bytes(step4)
  assert lfw_eval.restore_model_vars(smoke, str(workdir), None)[1] == 4
  _truncate(step4)
  assert lfw_eval.restore_model_vars(smoke, str(workdir), None)[1] == 2
  # Read-only: the evaluator leaves the damaged step where it is.
  assert os.path.isdir(step4)
  with pytest.raises(checkpointing.CorruptCheckpointError, match="checkpoints/4: arrays"):
    lfw_eval.restore_model_vars(smoke, str(workdir), 4)


@pytest.mark.parametrize("key,value", [("embedding_dim", 16), ("name", "nn4_small2")])
def test_evaluator_refuses_a_checkpoint_of_another_net(runs, key, value):
  smoke, base, _, _ = runs
  c = smoke.copy_and_resolve_references()
  saved = c.model[key]
  c.model[key] = value
  if key == "name":  # a config for the other net, as a user would pass it
    c.model = {"name": value, "embedding_dim": c.model.embedding_dim, "dtype": "float32"}
    c.data.image_size = c.data.resize_size = 96
  with pytest.raises(checkpointing.IncompatibleCheckpointError,
                     match=f"model.{key}={saved!r} but the config asks for model.{key}={value!r}"):
    lfw_eval.evaluate_lfw(c, workdir=str(base / "four"), protocol="dev_test")


def test_bucket_workdirs_are_not_made_local():
  # A gs:// workdir must reach Orbax/etils as a bucket path, not "./gs:/...".
  assert checkpointing.checkpoint_dir("gs://bucket/run") == "gs://bucket/run/checkpoints"
  assert checkpointing.quarantine_dir("gs://bucket/run") == "gs://bucket/run/checkpoints_corrupt"
  assert checkpointing.checkpoint_dir("rel/run") == os.path.abspath("rel/run/checkpoints")


def test_digest_is_the_same_however_the_array_is_placed_and_sees_one_changed_word():
  # The 8-device case runs in partial_fc_sharded_check.py's process; here the placements one
  # device allows (a committed jax.Array, a numpy array, a prng key) and the checksum's reach.
  rng = np.random.default_rng(0)
  tree = {"w": rng.normal(size=(64, 7)).astype(np.float32),
          "b": rng.integers(0, 9, size=(5,)).astype(np.int64) if jax.config.jax_enable_x64
          else rng.integers(0, 9, size=(5,)).astype(np.int32),
          "h": rng.normal(size=(3, 2)).astype(np.float16), "flag": np.array(True),
          "key": jax.random.key(3)}
  on_device = jax.tree.map(jax.device_put, tree)
  d = checkpointing.tree_digest(tree)
  assert d == checkpointing.tree_digest(on_device)
  for name in ("w", "h", "b"):
    changed = dict(tree)
    a = np.array(tree[name])
    a.reshape(-1).view(np.uint8)[a.nbytes // 2] ^= 1  # one bit of one word
    changed[name] = a
    assert checkpointing.tree_digest(changed) != d, name
  swapped = dict(tree, w=tree["w"][::-1].copy())  # same words, other places
  assert checkpointing.tree_digest(swapped) != d
  assert checkpointing.tree_digest({"w": tree["w"].reshape(7, 64)}) != checkpointing.tree_digest(
      {"w": tree["w"]})


def test_old_steps_leave_by_one_rename_and_a_half_deleted_one_is_never_listed(tmp_path):
  """Orbax deletes a step file by file; a kill in the middle would leave a listed step with
  files missing. Old steps go to `_deleted/` by one rename instead, and are purged there."""
  workdir = str(tmp_path)
  tree = {"w": np.arange(6, dtype=np.float32)}
  manager = checkpointing.make_manager(workdir, max_to_keep=2, async_save=False)
  for step in (1, 2, 3):
    checkpointing.save(manager, step, tree, tree, {"step": step})
  manager.wait_until_finished()
  ckpt = checkpointing.checkpoint_dir(workdir)
  deleted = os.path.join(ckpt, checkpointing.DELETED_SUBDIR)
  assert sorted(manager.all_steps()) == [2, 3]
  assert os.listdir(deleted) == ["1"]  # renamed whole; purged before the next save
  checkpointing.save(manager, 4, tree, tree, {"step": 4})
  manager.wait_until_finished()
  assert os.listdir(deleted) == ["2"]
  manager.close()

  # What a kill during the purge leaves: a step folder with files missing, in `_deleted/`.
  for path in glob.glob(os.path.join(deleted, "2", "model", "*")):
    if os.path.isfile(path):
      os.remove(path)
  reader = checkpointing.make_manager(workdir, read_only=True)
  assert sorted(reader.all_steps()) == [3, 4]
  assert checkpointing.restore_meta(reader, 3)["step"] == 3
  checkpointing.make_manager(workdir).close()  # a writable manager purges at start
  assert os.listdir(deleted) == []
