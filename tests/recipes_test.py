"""The RecordIO recipes (configs/ms1mv3_r50_arcface.py, glint360k_r100_pfc.py,
casia_irv1_softmax.py): their numbers are arcface_torch's and davidsandberg's, and their
`smoke` variants train from a .rec, checkpoint and evaluate."""

import json

import pytest

import configs
from configs import insightface
from facejax import checkpointing, train
from record_sources_test import lfw_rec


def test_recipes_state_the_published_settings():
  ms1m = configs.get_config("ms1mv3_r50_arcface")
  assert (ms1m.model.name, ms1m.batch_size, ms1m.num_train_steps) == ("iresnet50", 1024, 101_160)
  assert (ms1m.loss.m1, ms1m.loss.m2, ms1m.loss.m3, ms1m.loss.scale) == (1.0, 0.5, 0.0, 64.0)
  assert ms1m.loss.sample_rate == 1.0
  assert (ms1m.optimizer.name, ms1m.optimizer.learning_rate, ms1m.optimizer.weight_decay,
          ms1m.optimizer.kwargs.momentum) == ("sgd", 0.1, 5e-4, 0.9)
  assert ms1m.optimizer.schedule.to_dict() == dict(name="polynomial", warmup_steps=0, power=1.0)
  glint = configs.get_config("glint360k_r100_pfc")
  assert (glint.model.name, glint.loss.sample_rate, glint.loss.m3) == ("iresnet100", 0.1, 0.4)
  assert glint.num_train_steps == 17_091_657 // 1024 * 20 == 333_820
  casia = configs.get_config("casia_irv1_softmax")
  assert (casia.model.name, casia.batch_size, casia.ema_decay) == ("inception_resnet_v1", 90,
                                                                  0.9999)
  assert casia.optimizer.schedule.boundaries == (65_000, 80_000)
  assert insightface.steps_for_epochs(5_179_510, 1024, 1) == 5_058  # SCALE.md §6


@pytest.fixture(scope="module")
def rec_folder(lfw_root, tmp_path_factory):
  folder = tmp_path_factory.mktemp("rec")
  lfw_rec(lfw_root, folder, people=16, per_person=4)
  return folder


# Slow (1-2 minutes each on 2 cores; casia's is the full-depth Inception-ResNet-v1 with
# the EMA): .ci/run runs them.
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ms1mv3_r50_arcface", "glint360k_r100_pfc",
                                  "casia_irv1_softmax"])
def test_recipe_smoke_trains_from_a_rec_and_evaluates(name, rec_folder, lfw_root, tmp_path):
  c = configs.get_config(f"{name}:smoke")
  c.data.data_dir = str(lfw_root.parent)
  c.data.train_dir = str(rec_folder)
  train.train_and_evaluate(c, str(tmp_path))
  manager = checkpointing.make_manager(str(tmp_path), read_only=True)
  assert manager.latest_step() == c.num_train_steps
  with open(tmp_path / "eval" / f"lfw_dev_test_10fold_{c.num_train_steps}.json") as f:
    assert 0.0 <= json.load(f)["accuracy"] <= 1.0
