"""Every config's `smoke` variant trains, checkpoints and evaluates on the real LFW copy."""

import importlib.util
import json
import pathlib

import pytest

from facejax import checkpointing, train

CONFIG_DIR = pathlib.Path(__file__).resolve().parents[1] / "configs"

# One config name per line (configs/<name>.py), so concurrent additions merge.
CONFIGS = [
    "nn2",
    "nn3",
    "nn4",
    "nns1",
    "nns2",
    "nn4_small2",
    "nn4_small2_center",
    "sphereface20",
    "inception_resnet_v1",
    "inception_resnet_v1:center_smoke",
]


def _load(name):
  spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIG_DIR / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name", CONFIGS)
def test_smoke_config_trains_and_evaluates(name, lfw_root, tmp_path):
  name, _, variant = name.partition(":")
  c = _load(name).get_config(variant or "smoke")
  c.data.data_dir = str(lfw_root.parent)
  steps = c.num_train_steps
  train.train_and_evaluate(c, str(tmp_path))
  manager = checkpointing.make_manager(str(tmp_path), read_only=True)
  assert manager.latest_step() == steps
  with open(tmp_path / "eval" / f"lfw_dev_test_{steps}.json") as f:
    result = json.load(f)
  assert 0.0 <= result["accuracy"] <= 1.0
