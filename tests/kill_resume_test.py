"""SIGKILL a real training run at random moments, restart it each time, lose nothing.

Marked slow (about 3 minutes on 2 CPU cores per case: LFW's folder tree, an insightface
.rec of LFW people, and a Partial FC head sharded over 8 simulated devices); run it with
  python -m pytest -q -m slow tests/kill_resume_test.py -s
(`-s` prints the table of kills). The run is `facejax.main` on the nn1 smoke config (the
sharded case: configs/lfw_iresnet18_arcface.py:smoke with sample rate 0.1) with a checkpoint
every 2 steps, written asynchronously.
"""

import dataclasses
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from facejax import checkpointing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 80
# What each launch waits for before its SIGKILL: "write" = a checkpoint step
# being written (Orbax's temporary directory exists), "train" = a random
# moment after the launch's first new checkpoint, "startup" = a random moment
# in the first seconds (imports, screening, compilation, restore).
KILL_PLAN = ("write", "train", "write", "startup", "train", "write")


def _command(workdir, source=()):
  config = ("configs/lfw_iresnet18_arcface.py:smoke" if "--config.loss.sample_rate=0.1" in source
            else "configs/nn1.py:smoke")
  evals = ["--config.evals.lfw_dev_test.at_end=False"] + (
      ["--config.evals.lfw_view2.at_end=False"] if "nn1" in config else [])
  return [sys.executable, "-m", "facejax.main", f"--config={config}", *source,
          f"--workdir={workdir}", f"--config.num_train_steps={STEPS}",
          "--config.checkpoint.every_steps=2", "--config.checkpoint.max_to_keep=3",
          "--config.log_every_steps=10", *evals]


def _source_flags(source, lfw_root, tmp_path):
  """The training source: LFW's folder tree, or an insightface .rec of LFW people; or the
  folder tree with a Partial FC head sampling 10% of its centers, sharded over 8 devices."""
  if source == "folder":
    return ()
  if source == "sharded_pfc":
    return ("--config.loss.sample_rate=0.1",)
  from record_sources_test import lfw_rec  # pylint: disable=import-outside-toplevel
  lfw_rec(lfw_root, tmp_path / "rec", people=24)
  return ("--config.data.source=rec", f"--config.data.train_dir={tmp_path / 'rec'}",
          "--config.data.train_people=", "--config.data.source_crop=0")


def _env(lfw_root, source):
  env = dict(os.environ, FACEJAX_DATA_DIR=str(lfw_root.parent), JAX_PLATFORMS="cpu")
  if source == "sharded_pfc":
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
  return env


def _entries(workdir):
  ckpt = checkpointing.checkpoint_dir(workdir)
  if not os.path.isdir(ckpt):
    return set(), set()
  names = os.listdir(ckpt)
  return ({int(n) for n in names if n.isdigit()}, {n for n in names if "tmp" in n})


def _writes_since(workdir, t_ns):
  """Temporary step directories created after `t_ns` (a leftover one keeps its old time)."""
  ckpt = checkpointing.checkpoint_dir(workdir)
  found = []
  for n in _entries(workdir)[1]:
    try:
      if os.stat(os.path.join(ckpt, n)).st_mtime_ns >= t_ns:
        found.append(n)
    except FileNotFoundError:  # renamed to its final name meanwhile
      pass
  return found


@dataclasses.dataclass
class Kill:
  plan: str
  seconds_after_launch: float
  steps_on_disk: list
  writing: list


def _launch_and_kill(workdir, env, plan, rng, source=()):
  before, _ = _entries(workdir)
  launched_ns = time.time_ns()
  proc = subprocess.Popen(_command(workdir, source), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  t0 = time.monotonic()
  deadline = t0 + (rng.uniform(2.0, 8.0) if plan == "startup" else 300)
  first_new = None
  while proc.poll() is None:
    now = time.monotonic()
    steps, _ = _entries(workdir)
    if plan == "write" and _writes_since(workdir, launched_ns):
      break
    if plan == "train" and first_new is None and steps - before:
      first_new, deadline = now, now + rng.uniform(0.0, 1.0)
    if now >= deadline:
      break
    time.sleep(0.002)
  if proc.poll() is not None:  # finished (or failed) before the kill
    err = proc.stderr.read()
    assert proc.returncode == 0, err[-3000:]
    return None
  proc.send_signal(signal.SIGKILL)
  t_kill = time.monotonic() - t0
  proc.wait()
  steps, tmp = _entries(workdir)
  return Kill(plan, round(t_kill, 2), sorted(steps), sorted(tmp))


def _restore_all(manager, step):
  """Every item of `step` as saved (no target). Arrays saved sharded over 8 devices come
  back whole on this process's one device."""
  here = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return manager.restore(step, args=ocp.args.Composite(
      model=ocp.args.StandardRestore(fallback_sharding=here),
      train=ocp.args.StandardRestore(fallback_sharding=here), meta=ocp.args.JsonRestore()))


def _check_every_listed_step_is_whole(workdir):
  """Every step a fresh manager lists restores and matches its digest."""
  manager = checkpointing.make_manager(workdir, read_only=True)
  for step in manager.all_steps():
    restored = _restore_all(manager, step)
    for item in ("model", "train"):
      assert checkpointing.tree_digest(restored[item]) == restored["meta"]["digest"][item], (
          step, item)
  return manager.all_steps()


def _final_arrays(workdir):
  manager = checkpointing.make_manager(workdir, read_only=True)
  assert manager.latest_step() == STEPS
  restored = _restore_all(manager, STEPS)
  return restored["model"], restored["train"]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["folder", "rec", "sharded_pfc"])
def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(lfw_root, tmp_path,
                                                                            source):
  env = _env(lfw_root, source)
  flags = _source_flags(source, lfw_root, tmp_path)
  straight = str(tmp_path / "straight")
  out = subprocess.run(_command(straight, flags), cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]

  killed = str(tmp_path / "killed")
  rng = random.Random(20261122)
  kills = []
  for plan in KILL_PLAN:
    kill = _launch_and_kill(killed, env, plan, rng, flags)
    if kill is None:
      break
    listed = _check_every_listed_step_is_whole(killed)
    # A step whose write was cut short is never listed as a checkpoint.
    assert not {int(n.split(".")[0]) for n in kill.writing} & set(listed)
    kills.append(kill)
  out = subprocess.run(_command(killed, flags), cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  _check_every_listed_step_is_whole(killed)
  assert not _entries(killed)[1], "a temporary checkpoint directory was left behind"

  print(f"\n{len(kills)} kills, {len(kills) + 2} runs (the uninterrupted one included):")
  print(f"{'#':>2} {'wait for':<8} {'t(s)':>6}  {'steps on disk':<16} being written")
  for i, k in enumerate(kills, 1):
    print(f"{i:>2} {k.plan:<8} {k.seconds_after_launch:>6}  {str(k.steps_on_disk):<16} "
          f"{k.writing}")
  assert len(kills) >= 5
  assert sum(bool(k.writing) for k in kills) >= 2, "no kill landed inside a checkpoint write"

  a_model, a_train = _final_arrays(straight)
  b_model, b_train = _final_arrays(killed)
  leaves = 0
  for a, b in zip(jax.tree.leaves((a_model, a_train)), jax.tree.leaves((b_model, b_train))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    leaves += 1
  assert leaves == len(jax.tree.leaves((a_model, a_train))) > 0
  print(f"final step {STEPS}: all {leaves} arrays (params, BN stats, optimizer state, rng) "
        f"bit-identical to the uninterrupted run")
