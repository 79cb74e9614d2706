"""facejax's default XLA:CPU flags, set in `XLA_FLAGS` before the first JAX computation.

jaxlib 0.10 hands convolutions, dots, reductions and elementwise fusions on
CPU to YNNPACK by default. YNNPACK's convolutions were the main reason
facejax trained 0.44-0.86x as fast as PyTorch on this CPU. The 3x3 conv at
56x48x64 (SphereFace's first stage) ran about 1.8x slower than XLA's Eigen
convolution, forward, and 2.3x slower forward+backward (`benchmarks/ops_bench.py`).
YNNPACK's reductions, though, are what keep BatchNorm training fast: with
YNNPACK off entirely, the OpenFace NN4.small2 train step halved in speed.
The default here therefore keeps YNNPACK for reductions and for dots (the
1x1 convs of `layers.Conv`) and turns it off for convolutions and
elementwise fusions. Per-net figures, before and after, are in
`benchmarks/README.md`.

The flag is only known to jaxlib 0.10.x (XLA aborts on unknown flags), so it is
set only for those versions. It is not set when `XLA_FLAGS` already names it,
or when FACEJAX_KEEP_XLA_FLAGS=1. It has no effect on GPU or TPU computations.

Who sets it: importing `facejax` changes no environment variable for it. XLA
reads `XLA_FLAGS` once, when JAX creates its CPU client on the first
computation, so `set_default_xla_cpu_flags()` must run before that:
`facejax.cli.run` calls it first thing, for every command-line entry point;
`tests/conftest.py` and `benchmarks/_common.py` call it before importing JAX.
A program that uses facejax as a library and wants the same speed calls it
itself before its first JAX computation.
"""

import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
DEFAULT_CPU_FLAGS = (f"{YNN_FLAG}=LIBRARY_FUSION_TYPE_REDUCE,"
                     "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT")


def _jaxlib_version() -> tuple[int, ...] | None:
  try:
    from importlib import metadata
    return tuple(int(p) for p in metadata.version("jaxlib").split(".")[:2])
  except Exception:  # pylint: disable=broad-except
    return None


def set_default_xla_cpu_flags(environ=os.environ) -> bool:
  """Appends `DEFAULT_CPU_FLAGS` to environ["XLA_FLAGS"]; returns whether it did."""
  if environ.get("FACEJAX_KEEP_XLA_FLAGS") == "1":
    return False
  flags = environ.get("XLA_FLAGS", "")
  if YNN_FLAG in flags or _jaxlib_version() != (0, 10):
    return False
  environ["XLA_FLAGS"] = f"{flags} {DEFAULT_CPU_FLAGS}".strip()
  return True
