"""Helpers shared by the benchmark scripts (XLA flags, environment lines, timing)."""

import datetime
import os
import platform
import statistics
import time

from facejax import xla_flags

# The timings depend on facejax's default XLA:CPU flags, which the CLIs set in
# `facejax.cli.run`. The benchmarks are plain scripts, so set them here, before
# anything computes with JAX (XLA reads XLA_FLAGS once).
xla_flags.set_default_xla_cpu_flags()


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def loadavg() -> str:
  try:
    return "%.2f %.2f %.2f" % os.getloadavg()
  except OSError:
    return "n/a"


def environment_lines(extra: dict[str, str] | None = None) -> list[str]:
  lines = [
      f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
      f"cpu: {cpu_model()}, os.cpu_count()={os.cpu_count()}, "
      f"sched_getaffinity={len(os.sched_getaffinity(0))}",
      f"python: {platform.python_version()}",
      f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')!r}",
  ]
  for k, v in (extra or {}).items():
    lines.append(f"{k}: {v}")
  lines.append(f"load average (1/5/15 min): {loadavg()}")
  return lines


def print_table(headers: list[str], rows: list[list[str]]) -> None:
  widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
            for i, h in enumerate(headers)]
  fmt = " | ".join("{:>%d}" % w for w in widths)
  print(fmt.format(*headers))
  print("-+-".join("-" * w for w in widths))
  for r in rows:
    print(fmt.format(*[str(x) for x in r]))


def interleaved(runners: dict, warmup: int, steps: int) -> dict[str, float]:
  """Median wall seconds per runner, the runners taking turns so they share the same load."""
  for r in runners.values():
    for _ in range(warmup):
      r()
  out = {n: [] for n in runners}
  for _ in range(steps):
    for n, r in runners.items():
      t0 = time.perf_counter()
      r()
      out[n].append(time.perf_counter() - t0)
  return {n: statistics.median(v) for n, v in out.items()}
