"""Where evaluation results live: the one module that names and finds files in `<workdir>/eval/`.

A result is keyed by what it measured, and its file name says it:

  <base>[@<folder>][+<setting>...]_<step>.json   (and _roc.png, _pairs.txt beside it)

  base     "lfw" (View 2), "lfw_view1" (View 1 by the protocol), "lfw_dev_test_10fold",
           "lfw_dev_train", "identity" (an identity folder), "lfw_<protocol>_settings" (the
           ablation table), "bin-<name>" (an insightface .bin set), "ijb-<name>" (IJB 1:1);
  folder   "<name>-<hash8>" of the image folder's absolute path, for every folder but the
           default LFW image folder (`<lfw root>/lfw`); always present for "identity";
  setting  one tag per setting that is not the config's default: "euclidean"/"cosine",
           "flip-none"/"flip-concat"/"flip-average", "mean-sub"/"no-mean-sub",
           "fixed"/"prewhiten";
  step     the checkpoint step, "latest" when unknown.

So `lfw_<step>.json` and `lfw_view1_<step>.json` are exactly "the LFW pairs on the LFW
images with the config's settings", the calibration the tools read their threshold from
(`find_calibration`), and evaluating another folder or another setting writes a file of
its own instead of replacing it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re

import ml_collections
from etils import epath

from facejax import checkpointing
from facejax.data import datasets

EVAL_SUBDIR = "eval"
LFW_PROTOCOLS = ("view2", "view1", "dev_test_10fold", "dev_train")
# The calibration to prefer when several exist: more pairs first, and a threshold chosen
# on pairs other than those it is reported on.
_PROTOCOL_PREFERENCE = {"view2": 0, "view1": 1, "dev_test_10fold": 2, "dev_train": 3}
# Files written before View 1 followed its protocol ("lfw_dev_test_<step>.json") were
# DevTest scored in 10 folds of its own.
_LEGACY_BASES = {"lfw_dev_test": "dev_test_10fold"}
_NAME = re.compile(r"^(?P<base>(?:lfw_view1|lfw_view2|lfw_dev_test_10fold|lfw_dev_test"
                   r"|lfw_dev_train|lfw|identity|open_set|bin-[A-Za-z0-9._-]+"
                   r"|ijb-[A-Za-z0-9._-]+)(?:_settings)?)"
                   r"(?:@(?P<folder>[A-Za-z0-9._-]+))?(?P<tags>(?:\+[a-z0-9-]+)*)"
                   r"_(?P<step>\d+|latest)\.json$")


def eval_dir(workdir: str | os.PathLike) -> epath.Path:
  """`<workdir>/eval`: facejax's one place that builds it."""
  return checkpointing.workdir_path(os.fspath(workdir)) / EVAL_SUBDIR


def output_dir(workdir: str | os.PathLike | None, out_dir: str | os.PathLike | None
               ) -> str | None:
  """Where an evaluation writes: `out_dir`, else `<workdir>/eval`, else nowhere (None)."""
  if out_dir:
    return os.fspath(out_dir)
  return str(eval_dir(workdir)) if workdir else None


def folder_slug(folder: str | os.PathLike) -> str:
  """"<name>-<8 hex>" of a folder's absolute path: short, stable, one per folder."""
  path = os.path.abspath(os.fspath(folder)).rstrip(os.sep) or os.sep
  name = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(path) or "root")[:40]
  return f"{name}-{hashlib.sha1(path.encode('utf-8')).hexdigest()[:8]}"


def lfw_folder_slug(config: ml_collections.ConfigDict, image_root=None) -> str | None:
  """None for the default LFW image folder (`<lfw root>/lfw`), else `folder_slug` of
  `image_root` (default: `datasets.lfw_image_root(config.data)`, e.g. an aligned copy)."""
  image_root = image_root or datasets.lfw_image_root(config.data)
  default = datasets.lfw_root(config.data) / "lfw"
  if os.path.realpath(image_root) == os.path.realpath(default):
    return None
  return folder_slug(image_root)


def settings_tags(config: ml_collections.ConfigDict, *, distance: str, flip: str,
                  subtract_mean: bool, standardization: str) -> tuple[str, ...]:
  """The tags of the settings that differ from the config's defaults (module docstring)."""
  ev = config.eval
  tags = []
  if distance != ev.distance:
    tags.append(distance)
  if flip != ev.flip:
    tags.append(f"flip-{flip}")
  if bool(subtract_mean) != bool(ev.subtract_mean):
    tags.append("mean-sub" if subtract_mean else "no-mean-sub")
  if standardization != config.data.standardization:
    tags.append(standardization)
  return tuple(tags)


@dataclasses.dataclass(frozen=True)
class ResultKey:
  """What a result measured; `stem` is its file name without the suffix."""
  base: str
  step: int | None
  folder: str | None = None
  tags: tuple[str, ...] = ()

  @property
  def stem(self) -> str:
    folder = f"@{self.folder}" if self.folder else ""
    tags = "".join(f"+{t}" for t in self.tags)
    return f"{self.base}{folder}{tags}_{'latest' if self.step is None else self.step}"

  @property
  def protocol(self) -> str | None:
    """The LFW protocol of an LFW result, None for the others."""
    if self.base == "lfw":
      return "view2"
    if self.base in _LEGACY_BASES:
      return _LEGACY_BASES[self.base]
    if self.base.startswith("lfw_") and self.base[4:] in LFW_PROTOCOLS:
      return self.base[4:]
    return None

  @property
  def is_calibration(self) -> bool:
    """LFW pairs on the LFW images with the config's settings (what the tools read)."""
    return self.protocol is not None and self.folder is None and not self.tags

  @classmethod
  def parse(cls, name: str) -> "ResultKey | None":
    """The key of a result file name ("lfw_view1_3.json"), None for other files."""
    m = _NAME.match(os.path.basename(name))
    if not m:
      return None
    step = None if m.group("step") == "latest" else int(m.group("step"))
    tags = tuple(t for t in m.group("tags").split("+") if t)
    return cls(m.group("base"), step, m.group("folder"), tags)

  def paths(self, out_dir: str | os.PathLike) -> "ResultPaths":
    stem = os.path.join(os.fspath(out_dir), self.stem)
    return ResultPaths(stem + ".json", stem + "_roc.png", stem + "_pairs.txt")


@dataclasses.dataclass(frozen=True)
class ResultPaths:
  json: str
  roc: str
  pairs: str


def lfw_key(config: ml_collections.ConfigDict, protocol: str, step: int | None, *,
            image_root=None, **settings) -> ResultKey:
  """The key of LFW pairs of `protocol` evaluated on `image_root` with `settings`
  (distance, flip, subtract_mean, standardization)."""
  base = "lfw" if protocol == "view2" else f"lfw_{protocol}"
  return ResultKey(base, step, lfw_folder_slug(config, image_root),
                   settings_tags(config, **settings))


def identity_key(config: ml_collections.ConfigDict, folder: str | os.PathLike,
                 step: int | None, **settings) -> ResultKey:
  """The key of balanced pairs drawn from identity folder `folder`."""
  return ResultKey("identity", step, folder_slug(folder), settings_tags(config, **settings))


def ablation_key(config: ml_collections.ConfigDict, protocol: str, step: int | None, *,
                 image_root=None) -> ResultKey:
  """The key of the ablation table (every setting) of LFW `protocol`."""
  return ResultKey(f"lfw_{protocol}_settings", step, lfw_folder_slug(config, image_root))


def list_results(workdir: str | os.PathLike) -> list[tuple[str, ResultKey]]:
  """(path, key) of every result JSON in `<workdir>/eval`, sorted by name."""
  where = eval_dir(workdir)
  if not where.is_dir():
    return []
  found = [(str(p), ResultKey.parse(p.name)) for p in where.iterdir()]
  return sorted((p, k) for p, k in found if k is not None)


def find_calibration(workdir: str | os.PathLike, step: int | None = None, *,
                     folder: str | None = None) -> str | None:
  """The LFW evaluation JSON to take a threshold from, or None.

  Only results of the config's settings on the LFW folder `folder` (a `lfw_folder_slug`;
  None: the default LFW image folder) are candidates. Order: one written for `step` (the
  checkpoint in use) before any other, then View 2 before View 1 (more pairs), then the
  newest step.
  """
  found = [(p, k) for p, k in list_results(workdir)
           if k.protocol is not None and k.folder == folder and not k.tags]
  if not found:
    return None
  key = lambda f: (f[1].step != step or step is None, _PROTOCOL_PREFERENCE[f[1].protocol],
                   -(f[1].step if f[1].step is not None else -1))
  return min(found, key=key)[0]


def calibration_folder(config: ml_collections.ConfigDict | None) -> str | None:
  """The LFW folder slug whose calibration a tool run with `config` uses (None: default)."""
  if config is None:
    return None
  try:
    return lfw_folder_slug(config)
  except FileNotFoundError:  # no LFW here: only results of the default folder can apply
    return None


def describe_results(workdir: str | os.PathLike) -> str:
  """"a.json, b.json" of the results in `<workdir>/eval`, for error messages."""
  names = [pathlib.Path(p).name for p, _ in list_results(workdir)]
  return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "none"
