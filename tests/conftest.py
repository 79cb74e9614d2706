"""Shared fixtures: the real LFW copy and the smoke config."""

import os
import pathlib

from facejax import xla_flags

# The CLIs set facejax's default XLA:CPU flags in `cli.run`; most tests call
# library functions instead, so set them here, before any test module imports
# JAX and computes (XLA reads XLA_FLAGS once): tests then run what the
# commands run.
xla_flags.set_default_xla_cpu_flags()

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"


def data_dir() -> pathlib.Path:
  return pathlib.Path(os.environ.get("FACEJAX_DATA_DIR", DEFAULT_DATA_DIR))


@pytest.fixture(scope="session")
def lfw_root() -> pathlib.Path:
  root = data_dir() / "lfw"
  if not (root / "pairs.txt").is_file():
    pytest.skip(f"real LFW not found at {root}: set FACEJAX_DATA_DIR to the folder holding lfw/")
  return root


@pytest.fixture
def smoke_config(lfw_root):
  from configs import nn1  # here, so a broken config fails only the tests that use it
  c = nn1.get_config("smoke")
  c.data.data_dir = str(lfw_root.parent)
  return c
