"""`make_objective`: the loss head named by `config.loss`, or a ConfigError naming the key.

The head is a Flax module (`facejax.losses.heads`): the train step calls it
once per step on the net's (embedding, features), and it owns its weights
(trained with the net's) and any state it moves by its own rule (the
center-loss centers). The heads and the centers are training-only:
checkpoints keep them in the "train" item, and evaluation and export load
the net alone.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from facejax.errors import ConfigError, did_you_mean, unknown_keys
from facejax.losses.heads import HEADS, Head, HeadArgumentError, TripletHead

# Constructor fields that come from the data and the net, not from `config.loss` (and a
# triplet head's `mining`, which is `config.loss.name` itself).
_FROM_RUN = ("num_classes", "feature_dim", "num_shards")


def config_keys(cls: type[Head]) -> dict[str, bool]:
  """The `config.loss` keys head `cls` takes (less `name`): key -> whether it is required."""
  from_run = _FROM_RUN + (("mining",) if cls is TripletHead else ())
  return {f.name: f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
          for f in dataclasses.fields(cls)
          if f.init and f.name not in ("parent", "name") + from_run}


def make_objective(loss_config: ml_collections.ConfigDict, *, num_classes: int,
                   feature_dim: int, num_shards: int = 1) -> Head:
  """The head of `config.loss` for `num_classes` identities and `feature_dim`-wide rows.

  `num_shards` (the devices of the mesh) goes to heads whose weights are
  sharded by rows (Partial FC).

  Needs no data: the start-up config checks call it with a placeholder class
  count. Raises ConfigError with one message per bad key of `config.loss`,
  each naming it (`config.loss.<key>`), with a "did you mean" hint for a
  misspelt name or key.
  """
  kwargs = dict(loss_config.items()) if loss_config is not None else {}
  name = kwargs.pop("name", None)
  if name not in HEADS:
    raise ConfigError(f"config.loss.name={name!r} is not one of {tuple(HEADS)}"
                      + did_you_mean(name, HEADS))
  cls = HEADS[name]
  if cls is TripletHead:
    fixed = {"mining": name}
  elif not any(f.name == "num_classes" for f in dataclasses.fields(cls)):
    fixed = {}  # a head without a classifier (harmonic triplets) needs no class count
  else:
    if num_classes < 2:
      raise ConfigError(f"config.loss.name={name!r} needs at least 2 training identities, "
                        f"the data gave {num_classes}")
    fixed = {"num_classes": num_classes, "feature_dim": feature_dim}
    if any(f.name == "num_shards" for f in dataclasses.fields(cls)):
      fixed["num_shards"] = num_shards
  try:
    return cls(**fixed, **kwargs)
  except TypeError:
    # An unknown or missing keyword: name each from the constructor's fields.
    taken = config_keys(cls)
    problems = unknown_keys("config.loss", kwargs, taken, f"loss {name!r}",
                            {n: config_keys(c) for n, c in HEADS.items()})
    problems += [f"config.loss.{key}: missing (loss {name!r} needs it)"
                 for key, required in taken.items() if required and key not in kwargs]
    # The values of the keys it does take may be wrong too: report them together.
    known = {k: v for k, v in kwargs.items() if k in taken}
    if all(k in known for k, required in taken.items() if required):
      try:
        cls(**fixed, **known)
      except HeadArgumentError as e:
        problems += [f"config.loss.{p}" for p in e.problems]
    if not problems:
      raise
    raise ConfigError(problems) from None
  except HeadArgumentError as e:
    raise ConfigError([f"config.loss.{p}" for p in e.problems]) from None
