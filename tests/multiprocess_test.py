"""Real multi-process training on this machine: 2 JAX processes on CPU, gloo collectives.

Each process reads its own half of every global batch; the jitted step runs
over the mesh of all processes' devices; Orbax writes one checkpoint from
both; process 0 alone logs and evaluates. Both processes must end with
identical params, equal to a single process over the same global batch.
"""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = 4


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run(nproc, local_devices, workdir, tmp_path, lfw_root, extra=()):
  env = dict(os.environ, JAX_PLATFORMS="cpu", FACEJAX_DATA_DIR=str(lfw_root.parent),
             XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}")
  port = _free_port() if nproc > 1 else 0
  outs = [tmp_path / f"{workdir.name}_{i}.npz" for i in range(nproc)]
  procs = [subprocess.Popen([sys.executable, os.path.join(HERE, "multiprocess_check.py"), str(i),
                             str(nproc), str(port), str(workdir), str(outs[i]), str(STEPS),
                             *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(nproc)]
  logs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, logs):
    assert p.returncode == 0, err[-4000:]
  return [dict(np.load(o)) for o in outs], [err for _, err in logs]


def _arrays(result):
  names = [k for k in result if k.startswith("array_")]
  assert names
  return [result[k] for k in sorted(names, key=lambda k: int(k.split("_")[1]))]


@pytest.mark.slow  # ~2-3 min; .ci/run runs it after the default suite
@pytest.mark.parametrize("local_devices", [1, 2], ids=["2procs_x_1dev", "2procs_x_2dev"])
def test_two_processes_match_each_other_and_one_process(local_devices, tmp_path, lfw_root):
  multi, logs = _run(2, local_devices, tmp_path / "multi", tmp_path, lfw_root)
  single, _ = _run(1, 2 * local_devices, tmp_path / "single", tmp_path, lfw_root)
  a, b, ref = multi[0], multi[1], single[0]
  assert int(a["process_count"]) == int(b["process_count"]) == 2
  assert int(a["device_count"]) == int(ref["device_count"]) == 2 * local_devices
  assert int(a["step"]) == int(b["step"]) == int(ref["step"]) == STEPS
  # The two processes hold the same replica, bit for bit.
  for x, y in zip(_arrays(a), _arrays(b)):
    np.testing.assert_array_equal(x, y)
  # ... equal to one process over the same global batch and device count, up
  # to the order of the cross-process sums.
  for x, y in zip(_arrays(a), _arrays(ref)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
  # One checkpoint written by both; logging and evaluation by process 0 only.
  steps = sorted(int(n) for n in os.listdir(tmp_path / "multi" / "checkpoints") if n.isdigit())
  assert steps == [2, 4]
  assert (tmp_path / "multi" / "eval" / f"lfw_dev_test_10fold_{STEPS}.json").is_file()
  # Process 0 alone writes TensorBoard events (one file, not one per process).
  assert len(os.listdir(tmp_path / "multi" / "tensorboard")) == 1


def _rows(result, i):
  return int(result[f"rows_{i}_start"]), result[f"rows_{i}"]


@pytest.mark.slow  # ~2-3 min; .ci/run runs it after the default suite
def test_two_processes_share_a_sharded_partial_fc_head(tmp_path, lfw_root):
  multi, _ = _run(2, 2, tmp_path / "multi", tmp_path, lfw_root, ("pfc",))
  single, _ = _run(1, 4, tmp_path / "single", tmp_path, lfw_root, ("pfc",))
  a, b, ref = multi[0], multi[1], single[0]
  # The net and its optimizer state are replicated. Margin logits at s = 64 give momenta up
  # to ~10, so the order of the cross-process sums shows at 1e-6 of each array's scale.
  close = lambda x, z: np.testing.assert_allclose(x, z, rtol=1e-5,  # noqa: E731
                                                  atol=1e-5 * max(np.abs(z).max(), 1e-3))
  for x, y, z in zip(_arrays(a), _arrays(b), _arrays(ref)):
    np.testing.assert_array_equal(x, y)
    close(x, z)
  sharded = sorted(int(k.split("_")[1]) for k in a if k.startswith("rows_") and
                   not k.endswith("_start"))
  assert len(sharded) == 2  # the centers and their momentum
  for i in sharded:
    (sa, ra), (sb, rb), (s0, whole) = _rows(a, i), _rows(b, i), _rows(ref, i)
    # Each process holds its own half of the rows (1,024 padded rows, 512 per process) ...
    assert s0 == 0 and sorted([sa, sb]) == [0, whole.shape[0] // 2]
    assert ra.shape[0] == rb.shape[0] == whole.shape[0] // 2
    # ... and together they are the one-process head, to the order of the sums.
    both = np.concatenate([ra, rb] if sa == 0 else [rb, ra])
    close(both, whole)
