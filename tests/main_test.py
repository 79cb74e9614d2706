"""End to end: `python -m facejax.main --config=configs/nn1.py:smoke` twice, then the eval CLI."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, lfw_root, timeout=600, cwd=REPO):
  env = dict(os.environ, FACEJAX_DATA_DIR=str(lfw_root.parent), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _one_line_error(out, *fragments):
  """A user error: non-zero exit, no traceback, one `error:` line naming what is wrong."""
  assert out.returncode != 0
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  lines = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, out.stderr[-3000:]
  for fragment in fragments:
    assert fragment in lines[0], (fragment, lines[0])


def test_smoke_trains_checkpoints_resumes_and_evaluates(lfw_root, tmp_path):
  # The card's command as written, with no --workdir: the default is
  # workdirs/<config>_<variant> under the current directory.
  first = _run(["facejax.main", f"--config={REPO}/configs/nn1.py:smoke"], lfw_root, cwd=tmp_path)
  assert first.returncode == 0, first.stderr[-3000:]
  workdir = str(tmp_path / "workdirs" / "nn1_smoke")
  assert f"Workdir: {workdir} (default" in first.stderr
  cfg = "--config=configs/nn1.py:smoke"
  ckpts = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert ckpts[-1] == 12 and len(ckpts) == 3  # every 4 steps, keep 3
  with open(os.path.join(workdir, "eval", "lfw_12.json")) as f:
    view2 = json.load(f)
  assert view2["protocol"] == "view2" and view2["num_pairs"] == 6000
  for key in ("accuracy", "accuracy_std", "val", "far", "auc", "eer"):
    assert 0.0 <= view2[key] <= 1.0, key
  assert os.path.exists(os.path.join(workdir, "eval", "lfw_dev_test_10fold_8.json"))
  assert os.path.getsize(os.path.join(workdir, "eval", "lfw_12_roc.png")) > 1000
  assert any(f.startswith("events") for f in os.listdir(os.path.join(workdir, "tensorboard")))

  # Same command again: resumes at step 12 instead of starting over.
  second = _run(["facejax.main", cfg, f"--workdir={workdir}"], lfw_root)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "Resumed from" in second.stderr and "at step 12" in second.stderr

  # The evaluator is separate from the trainer and reproduces the trainer's figure.
  ev = _run(["facejax.evaluation", cfg, f"--workdir={workdir}", f"--out_dir={tmp_path / 'ev'}"],
            lfw_root)
  assert ev.returncode == 0, ev.stderr[-3000:]
  with open(tmp_path / "ev" / "lfw_12.json") as f:
    again = json.load(f)
  assert again["accuracy"] == view2["accuracy"] and again["auc"] == view2["auc"]

  # A checkpoint of another embedding size is a user error: one line naming both.
  other = _run(["facejax.evaluation", cfg, "--config.model.embedding_dim=16",
                f"--workdir={workdir}"], lfw_root)
  _one_line_error(other, "embedding_dim")


def test_unknown_config_key_is_named(lfw_root, tmp_path):
  out = _run(["facejax.main", "--config=configs/nn1.py:smoke", f"--workdir={tmp_path}",
              "--config.optimizer.learnig_rate=0.1"], lfw_root)
  _one_line_error(out, "--config.optimizer.learnig_rate: the config has no key 'learnig_rate'")
  assert out.returncode == 2


def test_missing_data_names_the_variable(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "FACEJAX_DATA_DIR"}
  out = subprocess.run([sys.executable, "-m", "facejax.main", "--config=configs/nn1.py:smoke",
                        f"--workdir={tmp_path}"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
  _one_line_error(out, "FACEJAX_DATA_DIR", "config.data.data_dir")


def test_bad_value_and_empty_workdir_are_one_line(lfw_root, tmp_path):
  out = _run(["facejax.main", "--config=configs/nn1.py:smoke", f"--workdir={tmp_path / 'w'}",
              "--config.optimizer.learning_rate=-1"], lfw_root)
  _one_line_error(out, "config.optimizer.learning_rate")
  assert not (tmp_path / "w").exists()  # refused before anything is written
  out = _run(["facejax.evaluation", "--config=configs/nn1.py:smoke",
              f"--workdir={tmp_path / 'empty'}"], lfw_root)
  _one_line_error(out, str(tmp_path / "empty"))
  assert "orbax" not in out.stderr.lower()
