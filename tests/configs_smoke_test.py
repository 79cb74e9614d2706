"""Every config's `smoke` variant trains, checkpoints and evaluates on the real LFW copy.

SphereFace-20's (about 1 minute) runs in the default suite; the others (1-4 minutes each on
2 cores, 20 minutes together) are marked slow and run in `.ci/run`'s slow line, two at a
time."""

import json

import pytest

import configs
from facejax import checkpointing, train

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


DEFAULT_SUITE = {"sphereface20"}


@pytest.mark.parametrize("name", [n if n in DEFAULT_SUITE else pytest.param(n, marks=pytest.mark.slow)
                                  for n in CONFIGS])
def test_smoke_config_trains_and_evaluates(name, lfw_root, tmp_path):
  name, _, variant = name.partition(":")
  c = configs.get_config(f"{name}:{variant or 'smoke'}")
  c.data.data_dir = str(lfw_root.parent)
  steps = c.num_train_steps
  train.train_and_evaluate(c, str(tmp_path))
  manager = checkpointing.make_manager(str(tmp_path), read_only=True)
  assert manager.latest_step() == steps
  with open(tmp_path / "eval" / f"lfw_dev_test_10fold_{steps}.json") as f:
    result = json.load(f)
  assert 0.0 <= result["accuracy"] <= 1.0
