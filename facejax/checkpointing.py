"""Orbax checkpoints under `<workdir>/checkpoints`.

Each step directory holds three items:
  model: {"params", "batch_stats"}: all an evaluator or exporter needs;
  train: {"opt_state", "step", "rng", "head", "loss_state"}: the rest of the train state
         (`head`: the loss head's params; `loss_state`: its other collections, e.g.
         {"centers": {"centers": [C, D]}} for center loss);
  meta:  JSON {model config, image_size, step, lr_scale, rollbacks, digest}. `lr_scale`
         (the divergence rollback's learning-rate scale, `TrainState.lr_scale`) is a
         float32 written as a JSON number, which reads back to the same float32.
The data position needs no item: batches are a pure function of (seed, step).

Safety: Orbax writes a step into a temporary directory and renames it when
complete, so a process killed mid-write leaves no step that looks finished
(the leftover temporary directory is removed by the next writable manager).
Old steps (beyond max_to_keep) are not deleted in place: Orbax removes a step
file by file, so a kill mid-deletion would leave a listed step with files
missing. They are renamed into `<checkpoints>/_deleted/` first (one atomic
rename) and removed from there before each save (`purge_deleted`).
A finished step can still be damaged later (a truncated copy, a bad disk),
so `meta.digest` holds a digest of every array (`tree_digest`); `restore_latest_good`
verifies it and falls back to the newest step that restores and verifies,
moving the damaged ones to `<workdir>/checkpoints_corrupt/` so that the
resumed run can write those steps again.
"""

import hashlib
import json
import logging as logging_std
import os
from typing import Any

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from facejax.data.datasets import hw
from facejax.errors import CheckpointError


class IncompatibleCheckpointError(CheckpointError):
  """The checkpoint was written for a different net or embedding size."""


class NoCheckpointError(CheckpointError, FileNotFoundError):
  """A workdir that should hold a checkpoint holds none; the message names it."""


class CorruptCheckpointError(CheckpointError, RuntimeError):
  """A checkpoint step cannot be restored or does not match its digest."""


def workdir_path(workdir: str) -> epath.Path:
  """The workdir as a path that may be local or a bucket (gs://...), absolute if local."""
  return epath.Path(workdir if "://" in str(workdir) else os.path.abspath(workdir))


def checkpoint_dir(workdir: str) -> str:
  return str(workdir_path(workdir) / "checkpoints")


# Orbax's `todelete_subdir`: not a step name, and not Orbax's "tmp" marker.
DELETED_SUBDIR = "_deleted"


def quarantine_dir(workdir: str) -> str:
  return str(workdir_path(workdir) / "checkpoints_corrupt")


def make_manager(workdir: str, *, max_to_keep: int = 3, save_interval_steps: int = 1,
                 read_only: bool = False, async_save: bool = True) -> ocp.CheckpointManager:
  """The manager of `<workdir>/checkpoints`; `read_only` for evaluators and tools."""
  if read_only:
    # Orbax logs a `read_only` warning for each save/delete option it has to
    # override; a read-only manager states none of them.
    options = ocp.CheckpointManagerOptions(
        read_only=True, max_to_keep=None, save_interval_steps=0, create=False,
        cleanup_tmp_directories=False, enable_async_checkpointing=False)
  else:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
        enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True,
        todelete_subdir=DELETED_SUBDIR)
  if not read_only:
    purge_deleted(checkpoint_dir(workdir))
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_names=("model", "train", "meta"))
  # Orbax warns "Given directory is read only" for every read-only manager:
  # expected for an evaluator, and noise in a command's output.
  quiet = _DropReadOnlyNotice()
  where = [logging_std.getLogger("absl"), logging.get_absl_handler(),
           *logging_std.getLogger().handlers]
  for w in where:
    w.addFilter(quiet)
  try:
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                                 item_names=("model", "train", "meta"))
  finally:
    for w in where:
      w.removeFilter(quiet)


def purge_deleted(directory: "str | epath.Path") -> None:
  """Removes the steps Orbax has renamed into `_deleted/` (process 0 only).

  Each entry arrived there whole by one rename, so removing entries (never the folder,
  which Orbax may be renaming into from its save thread) cannot race with a listed step;
  an entry cut short by a kill is removed by the next purge.
  """
  if jax.process_index() != 0:
    return
  deleted = epath.Path(directory) / DELETED_SUBDIR
  if not deleted.is_dir():
    return
  for entry in deleted.iterdir():
    try:
      if entry.is_dir():
        entry.rmtree()
      else:
        entry.unlink()
    except FileNotFoundError:
      pass


class _DropReadOnlyNotice(logging_std.Filter):

  def filter(self, record):
    return "Given directory is read only" not in record.getMessage()


def checkpoint_meta(config: ml_collections.ConfigDict, step: int, *, lr_scale: float = 1.0,
                    rollbacks: int = 0) -> dict[str, Any]:
  return {"model": config.model.to_dict(), "image_size": list(hw(config.data.image_size)),
          "step": int(step), "lr_scale": float(lr_scale), "rollbacks": int(rollbacks),
          "ema": bool(config.get("ema_decay", 0.0))}


# Model keys that change how the arrays are used, not what they are: a
# fine-tune may raise the dropout of imported weights or compute in bf16.
_RUNTIME_MODEL_KEYS = frozenset({"dtype", "dropout_rate", "bn_momentum"})


def check_compatible(meta: dict[str, Any], config: ml_collections.ConfigDict, where: str,
                     resuming: bool = False):
  """Raises IncompatibleCheckpointError if `meta` disagrees with `config.model`, or, when
  `resuming` a run, with whether it keeps an EMA (which changes the items' layout)."""
  if resuming and bool(meta.get("ema", False)) != bool(config.get("ema_decay", 0.0)):
    raise IncompatibleCheckpointError(
        f"checkpoint {where} was written {'with' if meta.get('ema') else 'without'} an EMA of "
        f"the weights but the config has ema_decay={config.get('ema_decay', 0.0)!r}: resume "
        f"with the setting it was written with, or start a new workdir")
  saved = meta.get("model", {})
  # Compare in JSON form: the saved meta turned tuples into lists.
  want = json.loads(json.dumps(config.model.to_dict()))
  for key in ("name", "embedding_dim"):
    if saved.get(key) != want.get(key):
      raise IncompatibleCheckpointError(
          f"checkpoint {where} has model.{key}={saved.get(key)!r} but the config asks for "
          f"model.{key}={want.get(key)!r}")
  diffs = {k: (saved.get(k), want.get(k)) for k in set(saved) | set(want)
           if k not in _RUNTIME_MODEL_KEYS and saved.get(k) != want.get(k)}
  if diffs:
    raise IncompatibleCheckpointError(
        f"checkpoint {where} was written for a different net: "
        + ", ".join(f"model.{k}: checkpoint {a!r} vs config {b!r}" for k, (a, b) in sorted(diffs.items())))


def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def _byte_digest(tree) -> str:
  """Version 1 (checkpoints written before 2026-12-02): SHA-256 of each leaf's first shard.

  Right for replicated arrays only; kept to verify the checkpoints it wrote.
  """
  leaves = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if isinstance(leaf, jax.Array):
      if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
      leaf = leaf.addressable_data(0)
    leaves.append(("/".join(_key_name(k) for k in path), np.ascontiguousarray(np.asarray(leaf))))
  h = hashlib.sha256()
  for name, a in sorted(leaves, key=lambda item: item[0]):
    h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


# Odd 32-bit constants; each gives one lane of the fingerprint.
_LANES = np.array([0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F], np.uint32)


def _words(x: jax.Array) -> jax.Array:
  """The array's bits as uint32 words, [rows, words per row] (rows: the leading axis)."""
  x = jnp.asarray(x)
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  x = x.reshape((x.shape[0], -1)) if x.ndim else x.reshape((1, 1))
  size = x.dtype.itemsize
  if size == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape((x.shape[0], -1))
  unsigned = {4: jnp.uint32, 2: jnp.uint16, 1: jnp.uint8}[size]
  return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def _fingerprints(leaves: list) -> list:
  """Per leaf, 4 uint32 position-weighted sums of its words (wrapping arithmetic).

  Sums are reductions, so on a sharded array XLA adds each device's part and
  every host receives the same numbers, whatever the mesh: nothing is
  gathered. Each word's weight is odd, so any change of a single word changes
  every lane; that is what a checksum against a truncated or altered file
  needs (it is not a defence against deliberate tampering).
  """
  out = []
  for leaf in leaves:
    w = _words(leaf)
    rows = jax.lax.broadcasted_iota(jnp.uint32, w.shape, 0)
    cols = jax.lax.broadcasted_iota(jnp.uint32, w.shape, 1)
    lanes = [jnp.sum(w * ((rows * m + cols * (m ^ np.uint32(0x5BD1E995)) + m) | np.uint32(1)),
                     dtype=jnp.uint32) for m in _LANES]
    out.append(jnp.stack(lanes))
  return out


def tree_digest(tree) -> str:
  """SHA-256 over every leaf's key path, dtype, shape and fingerprint (`_fingerprints`).

  Paths are spelt as plain names ("opt_state/0/mu/conv1/kernel") and sorted,
  so the digest is the same for the trainer's tree (optax named tuples) and
  for the plain dicts Orbax restores without a target. The fingerprints are
  computed where the arrays live: a Partial FC head sharded over the mesh is
  never gathered, every host of a multi-host run gets the same digest, and a
  checkpoint written on 8 devices verifies when restored on 1.
  """
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  names = ["/".join(_key_name(k) for k in path) for path, _ in flat]
  leaves = [leaf for _, leaf in flat]
  prints = jax.device_get(_fingerprints(leaves)) if leaves else []
  h = hashlib.sha256()
  for name, leaf, fp in sorted(zip(names, leaves, prints), key=lambda item: item[0]):
    dtype = np.dtype(jax.random.key_data(leaf).dtype if jax.dtypes.issubdtype(
        leaf.dtype, jax.dtypes.prng_key) else leaf.dtype)
    h.update(f"{name}|{dtype.str}|{tuple(np.shape(leaf))}|".encode())
    h.update(np.asarray(fp, np.uint32).tobytes())
  return h.hexdigest()


DIGEST_VERSION = 2


def save(manager: ocp.CheckpointManager, step: int, model_vars: dict, train_vars: dict,
         meta: dict, force: bool = False) -> bool:
  meta = dict(meta, digest={"model": tree_digest(model_vars), "train": tree_digest(train_vars)},
              digest_version=DIGEST_VERSION)
  purge_deleted(manager.directory)
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


def restore_verified(manager: ocp.CheckpointManager, step: int, config: ml_collections.ConfigDict,
                     model_target: dict, train_target: dict | None, where: str):
  """Restores one step and checks it against its digest.

  Returns (meta, model_vars, train_vars). Raises IncompatibleCheckpointError
  for a checkpoint of another net (a config mistake, never a reason to fall
  back) and CorruptCheckpointError for anything unreadable or altered.
  """
  try:
    meta = restore_meta(manager, step)
  except Exception as e:  # noqa: BLE001 -- any read failure means a damaged step
    raise CorruptCheckpointError(f"{where}: meta item unreadable: {_short(e)}") from e
  check_compatible(meta, config, where, resuming=train_target is not None)
  try:
    model_vars, train_vars = restore(manager, step, model_target, train_target)
  except Exception as e:  # noqa: BLE001
    raise CorruptCheckpointError(f"{where}: arrays unreadable: {_short(e)}") from e
  digest = meta.get("digest")
  if digest:  # checkpoints written before digests existed restore unverified
    items = {"model": model_vars}
    if train_vars is not None:
      items["train"] = train_vars
    digest_of = tree_digest if meta.get("digest_version") == DIGEST_VERSION else _byte_digest
    for name, tree in items.items():
      if digest_of(tree) != digest.get(name):
        raise CorruptCheckpointError(f"{where}: the {name} item does not match its digest")
  return meta, model_vars, train_vars


def restore_latest_good(manager: ocp.CheckpointManager, workdir: str,
                        config: ml_collections.ConfigDict, model_target: dict,
                        train_target: dict | None = None, *, quarantine: bool = True):
  """The newest step that restores and verifies, as (step, meta, model_vars, train_vars).

  Damaged steps are skipped with a warning that names them; with
  `quarantine` (the trainer) they are moved to `<workdir>/checkpoints_corrupt/`
  (by process 0) so the resumed run can save those steps again. Returns None
  when the workdir has no checkpoint; raises CorruptCheckpointError when
  every step is damaged.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  damaged = []
  for step in steps:
    where = f"{checkpoint_dir(workdir)}/{step}"
    try:
      meta, model_vars, train_vars = restore_verified(manager, step, config, model_target,
                                                      train_target, where)
    except CorruptCheckpointError as e:
      damaged.append(step)
      logging.warning("Checkpoint step %d is damaged (%s); falling back to an earlier step.",
                      step, e)
      continue
    if damaged:
      logging.warning("Resuming from checkpoint step %d; damaged steps skipped: %s", step, damaged)
    _quarantine(manager, workdir, damaged, quarantine)
    return step, meta, model_vars, train_vars
  _quarantine(manager, workdir, damaged, quarantine)
  if damaged:
    raise CorruptCheckpointError(
        f"every checkpoint in {checkpoint_dir(workdir)} is damaged (steps {damaged}); "
        f"move them away to start from scratch")
  return None


def _quarantine(manager, workdir, steps, enabled):
  if not (enabled and steps):
    return
  if jax.process_index() == 0:
    quarantine = epath.Path(quarantine_dir(workdir))
    quarantine.mkdir(parents=True, exist_ok=True)
    for step in steps:
      dest = quarantine / str(step)
      if dest.exists():
        dest.rmtree()
      (epath.Path(checkpoint_dir(workdir)) / str(step)).rename(dest)
      logging.warning("Moved damaged checkpoint step %d to %s", step, dest)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("facejax_checkpoint_quarantine")
  manager.reload()


def _short(e: Exception) -> str:
  text = f"{type(e).__name__}: {e}"
  return text.splitlines()[0][:300]
