"""What every facejax command-line entry point shares: quiet libraries, one-line user errors.

  def run():
    cli.run(main)

`run` sets facejax's default XLA:CPU flags (`facejax.xla_flags`), then wraps
`absl.app.run`: a `facejax.errors.UserError` (or a flag/config
parsing error) prints `error: <message>` on stderr and exits with status 2;
any other exception keeps its traceback, because it is a bug to report.
Orbax and TensorStore INFO chatter is dropped from the logs.
"""

import logging as logging_std
import sys
import warnings

from absl import app, logging

from facejax import errors, xla_flags

USER_ERROR_EXIT_CODE = 2


class _QuietLibraries(logging_std.Filter):
  """Drops INFO chatter of Orbax/TensorStore internals; keeps their warnings."""

  def filter(self, record):
    return record.levelno >= logging_std.WARNING or "/orbax/" not in record.pathname


def quiet_libraries() -> None:
  """Silences Orbax's INFO records and its read-only-manager warnings, wherever they log."""
  quiet = _QuietLibraries()
  logging.get_absl_handler().addFilter(quiet)
  for name in ("orbax", "orbax.checkpoint", "absl"):
    logging_std.getLogger(name).addFilter(quiet)
  logging_std.getLogger().addFilter(quiet)
  # A read-only CheckpointManager warns once per call that it will not save: expected here.
  warnings.filterwarnings("ignore", message=".*read.only.*", module="orbax")


def user_error_line(e: BaseException) -> str:
  return f"error: {e}"


def _main_with_user_errors(main):
  def wrapped(argv):
    quiet_libraries()
    try:
      return main(argv)
    except errors.UserError as e:
      print(user_error_line(e), file=sys.stderr)
      sys.exit(USER_ERROR_EXIT_CODE)
  return wrapped


def run(main) -> None:
  """`absl.app.run(main)`, with user errors as one line and exit status 2.

  First sets facejax's default XLA:CPU flags (`xla_flags`): XLA reads
  `XLA_FLAGS` once, when JAX creates its CPU client on the first
  computation, and no entry point computes before calling `run`.
  """
  xla_flags.set_default_xla_cpu_flags()
  app.run(_main_with_user_errors(main))
