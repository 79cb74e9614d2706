"""Errors that are the user's to fix: a CLI prints them as one line, without a traceback.

Anything else (a bug in facejax, an XLA crash) keeps its traceback. Raise a
subclass of `UserError` when the message alone tells the user what to change:
the key, the file or the record, and what is wrong with it.
"""


class UserError(Exception):
  """A bad config value, missing data, an incompatible checkpoint, a bad file."""


class ConfigError(UserError, ValueError):
  """A config that cannot run. `problems`: one message per bad key, each naming it."""

  def __init__(self, problems):
    problems = (problems,) if isinstance(problems, str) else tuple(problems)
    self.problems = problems
    if len(problems) == 1:
      message = problems[0]
    else:
      message = f"{len(problems)} problems in the config:\n  " + "\n  ".join(problems)
    super().__init__(message)


class DataError(UserError, ValueError):
  """Missing or unreadable training/evaluation data; the message names the file or folder."""


class MissingDataError(DataError, FileNotFoundError):
  """A data file or folder that is not there."""


class CheckpointError(UserError, ValueError):
  """No checkpoint where one is needed, or one that does not fit the config."""


def did_you_mean(word, options) -> str:
  """"; did you mean 'x'?" for the option closest to `word`, or ""."""
  import difflib  # pylint: disable=import-outside-toplevel
  close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
  return f"; did you mean {close[0]!r}?" if close else ""


def unknown_keys(path: str, given, accepted, what: str, others: dict | None = None) -> list[str]:
  """One message per key of `given` that `accepted` lacks, e.g. for a constructor's keywords.

  path: the config section ("config.loss"); what: whose keys these are ("loss
  'semi_hard'"); others: name -> accepted keys of the section's other
  variants, so that a key of another loss or net says who takes it.
  """
  accepted = set(accepted)
  problems = []
  for key in given:
    if key in accepted:
      continue
    takers = sorted(n for n, keys in (others or {}).items() if key in keys)
    hint = did_you_mean(key, accepted) or (
        f" (used only by: {', '.join(takers)})" if takers
        else f" (it takes: {', '.join(sorted(accepted))})")
    problems.append(f"{path}.{key}: unknown key for {what}{hint}")
  return problems
