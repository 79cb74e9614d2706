"""facejax's default XLA:CPU flags: who sets them, when, and that XLA applies them."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from facejax import xla_flags

# tests/conftest.py sets the flags for this process, as `cli.run` does for the
# commands; the subprocesses below start from an environment without them.
_CLEAN_ENV = {k: v for k, v in os.environ.items()
              if k not in ("XLA_FLAGS", "FACEJAX_KEEP_XLA_FLAGS")}
_CONV_CODE = (
    "import jax, jax.numpy as jnp\n"
    "def conv_in_ynnpack():\n"
    "  x = jnp.zeros((2, 16, 16, 32)); k = jnp.zeros((3, 3, 32, 32))\n"
    "  f = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME', "
    "dimension_numbers=('NHWC', 'HWIO', 'NHWC')))\n"
    "  return '__ynn_fusion' in f.lower(x, k).compile().as_text()\n")


def _python(code):
  """Runs `code` in a fresh interpreter without XLA_FLAGS; its last stdout line."""
  out = subprocess.run([sys.executable, "-c", code], env=_CLEAN_ENV, capture_output=True,
                       text=True, check=True).stdout
  return out.strip().splitlines()[-1]


def test_importing_facejax_leaves_the_environment_alone():
  # A library import must not change the environment: the CLI module itself
  # and the trainer it pulls in (models, data, TensorFlow) included.
  code = ("import os\n"
          "import facejax, facejax.cli, facejax.main\n"
          "print(repr(os.environ.get('XLA_FLAGS')))\n")
  assert _python(code) == "None"


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU flags")
def test_cli_run_sets_the_flags_before_the_first_computation():
  if xla_flags._jaxlib_version() != (0, 10):
    pytest.skip("the flag is only set for jaxlib 0.10.x")
  # Every command's `run()` is `cli.run(main)`: by the time `main` computes,
  # the flag is in XLA_FLAGS and XLA has applied it.
  code = (_CONV_CODE + "import os\n"
          "from facejax import cli\n"
          "def main(argv):\n"
          "  print(os.environ.get('XLA_FLAGS'), 'YNN' if conv_in_ynnpack() else 'NO')\n"
          "cli.run(main)\n")
  assert _python(code) == f"{xla_flags.DEFAULT_CPU_FLAGS} NO"


def test_appends_to_user_flags_and_respects_overrides():
  if xla_flags._jaxlib_version() != (0, 10):
    pytest.skip("the flag is only set for jaxlib 0.10.x")
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  assert xla_flags.set_default_xla_cpu_flags(env)
  assert env["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=4 "
                              + xla_flags.DEFAULT_CPU_FLAGS)
  assert not xla_flags.set_default_xla_cpu_flags(env)  # already there: not doubled
  mine = {"XLA_FLAGS": xla_flags.YNN_FLAG + "="}
  assert not xla_flags.set_default_xla_cpu_flags(mine)
  assert mine["XLA_FLAGS"] == xla_flags.YNN_FLAG + "="
  kept = {"FACEJAX_KEEP_XLA_FLAGS": "1"}
  assert not xla_flags.set_default_xla_cpu_flags(kept)
  assert "XLA_FLAGS" not in kept


def _conv_hlo():
  # Big enough for XLA to hand it to a library (an 8x8x4 conv stays in XLA).
  x = jnp.zeros((2, 16, 16, 32))
  k = jnp.zeros((3, 3, 32, 32))
  conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
  return conv.lower(x, k).compile().as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU flags")
def test_convolutions_leave_ynnpack_under_the_default_flags():
  if xla_flags._jaxlib_version() != (0, 10):
    pytest.skip("the flag is only set for jaxlib 0.10.x")
  assert xla_flags.DEFAULT_CPU_FLAGS in os.environ["XLA_FLAGS"]
  assert "__ynn_fusion" not in _conv_hlo()
  # Without facejax's flag, jaxlib 0.10 sends the same conv to YNNPACK, so the
  # assertion above (and the one of the CLI test) does test the flag.
  assert _python(_CONV_CODE + "print('YNN' if conv_in_ynnpack() else 'NO')\n") == "YNN"
