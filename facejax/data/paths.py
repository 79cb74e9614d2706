"""Locating on-disk datasets.

Datasets live under a *data dir* that holds one sub-folder per dataset. For LFW:

    <data_dir>/lfw/                       <- the LFW root returned by `resolve_data_dir`
    <data_dir>/lfw/pairs.txt              (View 2 protocol; plus pairsDevTrain.txt, ...)
    <data_dir>/lfw/lfw/<Name>/<Name>_0001.jpg

The data dir comes from the config (`config.data.data_dir`) or, failing that, from the
`FACEJAX_DATA_DIR` environment variable. Nothing is downloaded here: when a dataset is
absent we fail with a message that says how to provide it.
"""

from __future__ import annotations

import os
import pathlib

from facejax import errors

ENV_VAR = "FACEJAX_DATA_DIR"
CONFIG_KEY = "config.data.data_dir"

# Files whose absence makes a dataset root unusable. The View 1 files are not required:
# evaluation on View 2 only needs pairs.txt, and readers of the others name the missing
# file themselves when asked for it.
_REQUIRED = {
    "lfw": ("pairs.txt", "lfw/"),
}

# What the dataset folder holds, said in one line with the error (a user error is one line).
_LAYOUT_HINT = {
    "lfw": ("<dir>/lfw/ holds lfw/<Name>/<Name>_0001.jpg (the extracted lfw.tgz), pairs.txt "
            "and the View 1 files, all downloaded from the official LFW site "
            "http://vis-www.cs.umass.edu/lfw/"),
}


class DataNotFoundError(errors.MissingDataError):
  """A dataset is not where the configuration says, or no location was configured.

  A `facejax.errors.MissingDataError` (so a FileNotFoundError): the CLIs print its message,
  which names the path, `config.data.data_dir` and FACEJAX_DATA_DIR, as one error."""


def _how_to_fix(dataset: str) -> str:
  hint = _LAYOUT_HINT.get(dataset, f"<dir>/{dataset}/ holds <identity>/<image> folders")
  return (f"set `{CONFIG_KEY}` (--config.data.data_dir=/path/to/data) or the environment "
          f"variable `{ENV_VAR}` to the folder <dir> that holds `{dataset}/` ({hint})")


def _missing(root: pathlib.Path, dataset: str) -> list[str]:
  missing = []
  for name in _REQUIRED.get(dataset, ()):
    p = root / name.rstrip("/")
    ok = p.is_dir() if name.endswith("/") else p.is_file()
    if not ok:
      missing.append(str(p) + ("/" if name.endswith("/") else ""))
  return missing


def resolve_data_dir(configured: str | os.PathLike | None, dataset: str = "lfw") -> pathlib.Path:
  """Returns the root folder of `dataset` (for LFW: the folder holding pairs.txt and lfw/).

  Args:
    configured: `config.data.data_dir`, or None/"" when unset. Either the data dir that
      holds `<dataset>/`, or (accepted for convenience) the dataset root itself.
    dataset: sub-folder name, e.g. "lfw".

  Raises:
    DataNotFoundError: no location configured, the location does not exist, or it lacks
      a required file (the message names the missing file and how to fix it).
  """
  if configured:
    source, base = f"`{CONFIG_KEY}`", pathlib.Path(configured).expanduser()
  elif os.environ.get(ENV_VAR):
    source, base = f"environment variable `{ENV_VAR}`", pathlib.Path(os.environ[ENV_VAR]).expanduser()
  else:
    raise DataNotFoundError(
        f"No data directory configured for dataset {dataset!r}: {_how_to_fix(dataset)}"
    )
  if not base.is_dir():
    raise DataNotFoundError(
        f"Data directory {base} (from {source}) does not exist: {_how_to_fix(dataset)}"
    )
  candidate = base / dataset
  missing = _missing(candidate, dataset) if candidate.is_dir() else [str(candidate) + "/"]
  if not missing:
    return candidate
  if _REQUIRED.get(dataset) and not _missing(base, dataset):
    # `base` already is the dataset root (e.g. FACEJAX_DATA_DIR=/data/lfw).
    return base
  raise DataNotFoundError(
      f"Data directory {base} (from {source}) is missing {', '.join(missing)}: "
      f"{_how_to_fix(dataset)}"
  )
