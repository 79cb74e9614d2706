"""Orbax checkpoints under `<workdir>/checkpoints`.

Each step directory holds three items:
  model: {"params", "batch_stats"}: all an evaluator or exporter needs;
  train: {"opt_state", "step", "rng"}: the rest of the train state;
  meta:  JSON {model config, embedding_dim, image_size, step}, checked on restore
         so an incompatible checkpoint is refused with both sides named.
The data position needs no item: batches are a pure function of (seed, step).
"""

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from facejax.data.datasets import hw


class IncompatibleCheckpointError(ValueError):
  """The checkpoint was written for a different net or embedding size."""


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, *, max_to_keep: int = 3, save_interval_steps: int = 1,
                 read_only: bool = False, async_save: bool = True) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
      enable_async_checkpointing=async_save, read_only=read_only, create=not read_only)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("model", "train", "meta"))


def checkpoint_meta(config: ml_collections.ConfigDict, step: int) -> dict[str, Any]:
  return {"model": config.model.to_dict(), "image_size": list(hw(config.data.image_size)),
          "step": int(step)}


def check_compatible(meta: dict[str, Any], config: ml_collections.ConfigDict, where: str):
  """Raises IncompatibleCheckpointError if `meta` disagrees with `config.model`."""
  saved = meta.get("model", {})
  # Compare in JSON form: the saved meta turned tuples into lists.
  want = json.loads(json.dumps(config.model.to_dict()))
  for key in ("name", "embedding_dim"):
    if saved.get(key) != want.get(key):
      raise IncompatibleCheckpointError(
          f"checkpoint {where} has model.{key}={saved.get(key)!r} but the config asks for "
          f"model.{key}={want.get(key)!r}")
  diffs = {k: (saved.get(k), want.get(k)) for k in set(saved) | set(want)
           if k != "dtype" and saved.get(k) != want.get(k)}
  if diffs:
    raise IncompatibleCheckpointError(
        f"checkpoint {where} was written for a different net: "
        + ", ".join(f"model.{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in sorted(diffs.items())))


def save(manager: ocp.CheckpointManager, step: int, model_vars: dict, train_vars: dict,
         meta: dict, force: bool = False) -> bool:
  return manager.save(step, args=ocp.args.Composite(
      model=ocp.args.StandardSave(model_vars),
      train=ocp.args.StandardSave(train_vars),
      meta=ocp.args.JsonSave(meta)), force=force)


def restore_meta(manager: ocp.CheckpointManager, step: int) -> dict:
  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def restore(manager: ocp.CheckpointManager, step: int, model_target: dict,
            train_target: dict | None = None):
  """Restores `model` (and `train` if a target is given) onto the targets' shardings."""
  abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
  items = {"model": ocp.args.StandardRestore(abstract(model_target))}
  if train_target is not None:
    items["train"] = ocp.args.StandardRestore(abstract(train_target))
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return restored["model"], (restored["train"] if train_target is not None else None)
