"""facejax's default XLA:CPU flags: when they are set, and that XLA applies them."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import facejax  # noqa: F401  (sets the flags on import)
from facejax import xla_flags


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
  # assertion above does test the flag.
  code = ("import jax, jax.numpy as jnp\n"
          "x = jnp.zeros((2, 16, 16, 32)); k = jnp.zeros((3, 3, 32, 32))\n"
          "f = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), 'SAME', "
          "dimension_numbers=('NHWC', 'HWIO', 'NHWC')))\n"
          "print('YNN' if '__ynn_fusion' in f.lower(x, k).compile().as_text() else 'NO')\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=True).stdout
  assert out.strip().splitlines()[-1] == "YNN"
