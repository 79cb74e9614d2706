"""Evaluators: registered types, built from `config.evals` and run by the trainer or the CLI.

`config.evals` maps a name to a spec: the evaluator `type`, its schedule and its keyword
arguments, e.g.

  c.evals.lfw_view1 = dict(type="lfw", protocol="view1", every_steps=2000, at_end=True)
  c.evals.agedb = dict(type="verification_bin", path="/data/agedb_30.bin", every_steps=5000)

  every_steps  run every N training steps (0: never during training);
  at_end       run after the last step (default True).

An evaluator is built from an `Embedder` (or None: the trainer hands one in at each run)
plus its keyword arguments; an unknown keyword fails at construction, naming the key:

  evaluator = registry.build("agedb", spec, config, embedder, out_dir="W/eval")
  scalars = evaluator.run()              # {"accuracy": ..., "auc": ...}
  scalars = evaluator.run(other_embedder)  # the same data, other weights (the trainer)
  evaluator.last_result                  # the full result object of the last run

`run` writes a JSON and a ROC PNG under `out_dir` (None: nothing is written). Data are
read lazily, on the first `run`, so building every evaluator at the start of training
checks the specs without reading gigabytes.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

from facejax import errors

# Modules whose import registers evaluator types.
_MODULES = ("facejax.evaluation.lfw_eval", "facejax.evaluation.identity_pairs",
            "facejax.evaluation.bin_eval", "facejax.evaluation.ijb_eval",
            "facejax.evaluation.open_set", "facejax.evaluation.ablation")
TYPES: dict[str, type["Evaluator"]] = {}


def register(type_name: str):
  """Class decorator: makes an `Evaluator` subclass buildable as `type=type_name`."""
  def add(cls):
    cls.type_name = type_name
    TYPES[type_name] = cls
    return cls
  return add


class Evaluator:
  """The base of every evaluator type.

  Subclasses take `(config, embedder, *, name, out_dir, <their keyword arguments>)`, keep
  the keyword arguments (checking their values) and implement `_run(embedder) ->
  (scalars, result)`.
  """
  type_name = "?"

  def __init__(self, config: ml_collections.ConfigDict, embedder, *, name: str,
               out_dir: str | os.PathLike | None):
    self.config, self.embedder, self.name = config, embedder, name
    self.out_dir = None if out_dir is None else os.fspath(out_dir)
    self.last_result: Any = None

  def run(self, embedder=None) -> dict[str, float]:
    """Scores `embedder` (default: the one built with); returns scalars, writes JSON + ROC."""
    embedder = embedder or self.embedder
    if embedder is None:
      raise ValueError(f"evaluator {self.name!r} was built without an Embedder: pass one to run")
    scalars, self.last_result = self._run(embedder)
    return {k: float(v) for k, v in scalars.items()}

  def summary(self) -> str:
    """One line for the log and the CLI about the last run."""
    result = self.last_result
    if hasattr(result, "summary"):
      return f"{self.name}: {result.summary()}"
    return f"{self.name}: {result}"

  def _run(self, embedder) -> tuple[Mapping[str, float], Any]:
    raise NotImplementedError


def _load_types() -> None:
  for module in _MODULES:
    importlib.import_module(module)


def types() -> dict[str, type[Evaluator]]:
  """Every registered evaluator type, by name."""
  _load_types()
  return dict(TYPES)


def accepted_keys(cls: type[Evaluator]) -> list[str]:
  """The keyword arguments of evaluator type `cls` (what a spec may set besides the schedule)."""
  params = inspect.signature(cls.__init__).parameters
  return [p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY
          and p not in ("name", "out_dir")]


def split_spec(name: str, spec: Mapping[str, Any]) -> tuple[type[Evaluator], dict[str, Any]]:
  """(evaluator class, keyword arguments) of `config.evals.<name>`; ConfigError naming the
  key for an unknown type or keyword."""
  _load_types()
  spec = dict(spec.to_dict() if isinstance(spec, ml_collections.ConfigDict) else spec)
  type_name = spec.pop("type", None)
  every, at_end = spec.pop("every_steps", 0), spec.pop("at_end", True)
  problems = []
  if not (isinstance(every, int) and not isinstance(every, bool) and every >= 0):
    problems.append(f"config.evals.{name}.every_steps={every!r}: must be an int >= 0 "
                    "(0: never during training)")
  if not isinstance(at_end, bool):
    problems.append(f"config.evals.{name}.at_end={at_end!r}: must be True or False")
  if problems:
    raise errors.ConfigError(problems)
  if type_name not in TYPES:
    raise errors.ConfigError(f"config.evals.{name}.type={type_name!r}: choose one of "
                             f"{sorted(TYPES)}{errors.did_you_mean(type_name, TYPES)}")
  cls = TYPES[type_name]
  others = {t: accepted_keys(c) for t, c in TYPES.items() if t != type_name}
  problems = errors.unknown_keys(f"config.evals.{name}", spec, accepted_keys(cls),
                                 f"evaluator type {type_name!r}", others)
  if problems:
    raise errors.ConfigError(problems)
  return cls, spec


def build(name: str, spec: Mapping[str, Any], config: ml_collections.ConfigDict, embedder=None,
          *, out_dir: str | os.PathLike | None = None) -> Evaluator:
  """The evaluator of spec `config.evals.<name>` (module docstring)."""
  cls, kwargs = split_spec(name, spec)
  return cls(config, embedder, name=name, out_dir=out_dir, **kwargs)


def chosen_specs(config: ml_collections.ConfigDict,
                 names: Iterable[str] | None = None) -> dict[str, dict]:
  """The specs of `config.evals` (or of `names`, in that order); an unknown name fails."""
  specs = config.get("evals") or {}
  names = list(specs) if names is None else list(names)
  missing = [n for n in names if n not in specs]
  if missing:
    raise errors.ConfigError([f"--evals: no evaluator {n!r} in config.evals (it has: "
                              f"{', '.join(specs) or 'none'}){errors.did_you_mean(n, specs)}"
                              for n in missing])
  return {n: specs[n].to_dict() if isinstance(specs[n], ml_collections.ConfigDict)
          else dict(specs[n]) for n in names}


def build_specs(specs: Mapping[str, Mapping[str, Any]], config: ml_collections.ConfigDict,
                embedder=None, *, out_dir: str | os.PathLike | None = None
                ) -> dict[str, Evaluator]:
  """The evaluator of each spec; every problem of every spec in one ConfigError."""
  built, problems = {}, []
  for n, spec in specs.items():
    try:
      built[n] = build(n, spec, config, embedder, out_dir=out_dir)
    except errors.ConfigError as e:
      problems.extend(e.problems)
  if problems:
    raise errors.ConfigError(problems)
  return built


def build_all(config: ml_collections.ConfigDict, embedder=None, *,
              out_dir: str | os.PathLike | None = None,
              names: Iterable[str] | None = None) -> dict[str, Evaluator]:
  """The evaluators of `config.evals` (or of `names`, in that order), each checked."""
  return build_specs(chosen_specs(config, names), config, embedder, out_dir=out_dir)


def is_due(spec: Mapping[str, Any], step: int, *, last: bool) -> bool:
  """Whether `config.evals.<name>` runs after `step` steps (`last`: the run's final step,
  where it runs with `at_end` or when `every_steps` falls on it)."""
  every = int(spec.get("every_steps", 0) or 0)
  periodic = every > 0 and step % every == 0
  return periodic or (last and bool(spec.get("at_end", True)))
