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
import re
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


def _parse_flags(argv):
  """absl's flag parsing (its own errors keep absl's "FATAL Flags parsing error" line); a
  config override naming a key the config lacks (`--config.loss.nope=1`), which
  ml_collections reports as an AttributeError or KeyError, is a user error naming the flag."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    message = e  # ml_collections nests the KeyError, whose message may add a hint
    while isinstance(message, BaseException) and message.args:
      message = message.args[0]
    message = str(message)
    key = re.match(r"\W*([\w-]*)", message).group(1)
    hint = re.search(r'Did you mean "([\w-]+)"', message)
    flags_given = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--")]
    named = [f for f in flags_given if key and re.search(rf"\.{re.escape(key)}(\.|$)", f)]
    where = named[0] if named else "a --config override"
    print(user_error_line(f"{where}: the config has no key {key!r}"
                          + (f" (did you mean {hint.group(1)!r}?)" if hint else "")),
          file=sys.stderr)
    sys.exit(USER_ERROR_EXIT_CODE)


def run(main) -> None:
  """`absl.app.run(main)`, with user errors as one line and exit status 2.

  First sets facejax's default XLA:CPU flags (`xla_flags`): XLA reads
  `XLA_FLAGS` once, when JAX creates its CPU client on the first
  computation, and no entry point computes before calling `run`.
  """
  xla_flags.set_default_xla_cpu_flags()
  app.run(_main_with_user_errors(main), flags_parser=_parse_flags)
