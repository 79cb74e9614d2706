"""Partial FC sharded over 8 simulated devices (tests/partial_fc_sharded_check.py).

Slow (about 3 minutes on 2 cores: five meshes compiled); .ci/run runs it."""

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run([sys.executable, os.path.join(HERE, "partial_fc_sharded_check.py")],
                        capture_output=True, text=True, env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_centers_and_their_momentum_are_split_by_rows(result):
  # 1,000 classes padded to 1,024 rows: 128 rows x 32-D per device.
  assert result["weight_shard_shapes"] == [[128, 32]]
  assert result["momentum_shard_shapes"] == [[128, 32]]
  assert result["r01_weight_shards_after"] == [[128, 32]]  # the step keeps them split


def test_full_rate_sharded_equals_the_unsharded_full_head(result):
  a, b = result["r1_losses"]
  assert abs(a - b) < 1e-5 * abs(b)
  assert result["r1_net_diff"] < 1e-4
  assert result["r1_head_diff"] < 1e-4
  assert result["r1_head_moved"] > 1e-3  # the comparison is of a step that did something


def test_sampled_sharded_equals_the_same_shards_on_one_device(result):
  l8, l1 = result["r01_losses"]
  assert all(abs(a - b) < 1e-5 * abs(b) for a, b in zip(l8, l1))
  assert result["r01_state_diff"] < 1e-4


def test_checkpoint_digest_of_the_sharded_state_equals_the_gathered_one(result):
  assert result["digest_sharded_equals_host"]


def test_accumulated_sampled_steps_sharded_equal_one_device_and_move_only_sampled_rows(result):
  l8, l1 = result["acc_losses"]
  assert all(abs(a - b) < 1e-5 * abs(b) for a, b in zip(l8, l1))
  assert result["acc_state_diff"] < 1e-4
  assert result["acc_grads_shard_shapes"] == [[128, 32]]  # the accumulator is split too
  # Two updates of two samples each reach at most 4 x 8 shards x k rows, far from all 1,024.
  assert 0 < result["acc_rows_moved"] < 1000
