"""Training from an insightface .rec and from prepared ArrayRecord shards: the same batches
from both, host slices that split an epoch, bad records named by file and key, and
`facejax.main` end to end on each."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from facejax import errors
from facejax.data import datasets, input_pipeline, prepare, sampling, synthetic_rec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lfw_rec(lfw_root, folder, people=16, per_person=4):
  """An insightface folder of 112x112 crops of real LFW people (labels = people)."""
  names = sorted(p.name for p in (lfw_root / "lfw").iterdir()
                 if len(list(p.glob("*.jpg"))) >= per_person)[:people]
  crops = [synthetic_rec.crop_jpeg(f) for name in names
           for f in sorted((lfw_root / "lfw" / name).glob("*.jpg"))[:per_person]]
  labels = np.repeat(np.arange(people), per_person)
  synthetic_rec.write_insightface_folder(folder, crops, labels)
  return crops, labels


def _data(source, train_dir):
  import ml_collections  # pylint: disable=import-outside-toplevel
  return ml_collections.ConfigDict(dict(
      source=source, train_dir=str(train_dir), train_people=None, min_images_per_identity=2,
      source_crop=0, image_size=32, resize_size=36, standardization="fixed",
      random_flip=True, random_crop=True))


def _batches(source, data, sampler, steps, **kw):
  prep = datasets.preprocessing(data, train=True)
  return list(input_pipeline.train_batches(source.table, source.classes, prep, sampler,
                                           start_step=0, num_steps=steps, **kw))


def test_rec_and_array_record_give_the_same_batches(lfw_root, tmp_path):
  crops, labels = lfw_rec(lfw_root, tmp_path / "rec")
  prepare.prepare(prepare.parse_input(str(tmp_path / "rec")), str(tmp_path / "ar"),
                  records_per_shard=20, workers=1, progress=False)
  rec = datasets.build_train_source(_data("rec", tmp_path / "rec"))
  ar = datasets.build_train_source(_data("array_record", tmp_path / "ar"))
  assert rec.num_images == ar.num_images == 64 and rec.classes.num_classes == 16
  for row in (0, 17, 63):  # the bytes of the record, as written
    assert rec.table.read(tf.constant(row)).numpy() == crops[row]
    assert ar.table.read_bytes(row) == crops[row]
  sampler = sampling.Sampler(num_identities=4, images_per_identity=2, seed=1)
  a = _batches(rec, _data("rec", ""), sampler, 3)
  b = _batches(ar, _data("rec", ""), sampler, 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], labels[x["index"]])


def test_host_slices_of_a_shuffled_epoch_cover_the_records_once(lfw_root, tmp_path):
  lfw_rec(lfw_root, tmp_path / "rec", people=8, per_person=4)  # 32 records
  source = datasets.build_train_source(_data("rec", tmp_path / "rec"))
  sampler = sampling.Sampler(sampling="shuffle", batch_size=8, seed=3)
  seen = []
  for host in range(2):
    batches = _batches(source, _data("rec", ""), sampler, 4, process_index=host,
                       process_count=2)
    seen.append(np.concatenate([b["index"] for b in batches]))
  assert not set(seen[0]) & set(seen[1])
  assert sorted(np.concatenate(seen).tolist()) == list(range(32))


def test_a_corrupt_jpeg_record_is_named(lfw_root, tmp_path):
  crops, labels = lfw_rec(lfw_root, tmp_path / "good", people=4)
  crops[5] = crops[5][:200] + b"\0" * 50  # key 6
  synthetic_rec.write_insightface_folder(tmp_path / "rec", crops, labels)
  source = datasets.build_train_source(_data("rec", tmp_path / "rec"))
  sampler = sampling.Sampler(sampling="shuffle", batch_size=16, seed=0)
  with pytest.raises(input_pipeline.ImageDecodeError, match=r"train.rec record 6:"):
    _batches(source, _data("rec", ""), sampler, 1)


def test_an_idx_that_disagrees_with_its_rec_is_named(lfw_root, tmp_path):
  lfw_rec(lfw_root, tmp_path / "rec", people=4)
  idx = tmp_path / "rec" / "train.idx"
  lines = idx.read_text().splitlines()
  key, offset = lines[3].split("\t")
  lines[3] = f"{key}\t{int(offset) + 8}"  # record 3 now points inside record 3
  idx.write_text("\n".join(lines) + "\n")
  source = datasets.build_train_source(_data("rec", tmp_path / "rec"))
  sampler = sampling.Sampler(sampling="shuffle", batch_size=16, seed=0)
  with pytest.raises(errors.DataError, match=r"record 3: no record starts at byte \d+ .*"
                                             r"does not match"):
    _batches(source, _data("rec", ""), sampler, 1)


def test_config_rejects_identity_folder_keys(lfw_root, tmp_path):
  lfw_rec(lfw_root, tmp_path / "rec", people=4)
  data = _data("rec", tmp_path / "rec")
  data.train_people = "peopleDevTrain.txt"
  with pytest.raises(errors.ConfigError, match="config.data.train_people"):
    datasets.build_train_source(data)


@pytest.mark.parametrize("source", ["rec", "array_record"])
def test_main_trains_from_records(lfw_root, tmp_path, source):
  lfw_rec(lfw_root, tmp_path / "rec", people=16)
  train_dir = tmp_path / "rec"
  if source == "array_record":
    prepare.prepare(prepare.parse_input(str(train_dir)), str(tmp_path / "ar"), workers=1,
                    progress=False)
    train_dir = tmp_path / "ar"
  env = dict(os.environ, FACEJAX_DATA_DIR=str(lfw_root.parent), JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "facejax.main", "--config=configs/nn1.py:smoke",
       f"--workdir={tmp_path / 'w'}", f"--config.data.source={source}",
       f"--config.data.train_dir={train_dir}", "--config.data.train_people=",
       "--config.data.source_crop=0", "--config.num_train_steps=4",
       "--config.evals.lfw_view2.at_end=False"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.isdir(tmp_path / "w" / "checkpoints" / "4")
  assert "lfw_dev_test" in out.stderr  # the DevTest evaluation ran on the trained net
