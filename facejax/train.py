"""Training: a jitted, mesh-sharded triplet step, Orbax checkpoints, periodic LFW eval.

`train_step(state, batch) -> (state, metrics)` is jitted over a 1-D device
mesh ("data"): the global batch is split across devices, params are
replicated, and because the loss is written on the global [B, D] embedding
matrix, XLA gathers embeddings so that mining sees every image of the batch.
The same code runs on one CPU and on a multi-host pod.
"""

import collections
import dataclasses
import functools
import json
import time
from typing import Any, Callable, Iterator

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from facejax import checkpointing
from facejax import config_checks
from facejax import optimizers
from facejax.data import datasets
from facejax.data import input_pipeline
from facejax.losses import Objective, make_objective
from facejax.models import create_model


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. `rng` is a raw uint32[2] key.

  `head` (a classifier or margin head, `{}` for triplet losses) is trained
  with `params` by the same optimizer, whose state covers
  `{"model": params, "head": head}`. `loss_state` (the center-loss centers,
  or `{}`) is moved by the loss's own update rule. Both are training-only:
  they are saved in the "train" checkpoint item, not in "model".
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  head: Any = flax.struct.field(default_factory=dict)
  loss_state: Any = flax.struct.field(default_factory=dict)

  def model_vars(self) -> dict:
    return {"params": self.params, "batch_stats": self.batch_stats}

  def train_vars(self) -> dict:
    return {"opt_state": self.opt_state, "step": self.step, "rng": self.rng,
            "head": self.head, "loss_state": self.loss_state}

  def trainable(self) -> dict:
    return {"model": self.params, "head": self.head}


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ("data",))


def create_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                       tx: optax.GradientTransformation, rng: jax.Array,
                       objective: Objective | None = None) -> TrainState:
  """Initialises params (float32), the loss head/state and the optimizer state from `rng`."""
  h, w = datasets.hw(config.data.image_size)
  init_rng, state_rng = jax.random.split(rng)
  head, loss_state = {}, {}
  if objective is not None:
    # A key of its own, so that adding a head leaves the net's init unchanged.
    head, loss_state = objective.init(jax.random.fold_in(init_rng, 1))
  # Jitted: an eager init compiles one RNG kernel per parameter shape (tens of
  # seconds for the Inception nets on CPU).
  init = jax.jit(functools.partial(model.init, train=False))
  variables = init(init_rng, jnp.zeros((1, h, w, 3), jnp.float32))
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init({"model": params, "head": head}),
                    rng=jax.random.key_data(state_rng), head=head, loss_state=loss_state)


def train_step(state: TrainState, batch: dict, *, model: nn.Module,
               tx: optax.GradientTransformation, objective: Objective) -> tuple[TrainState, dict]:
  """One optimizer step on the global batch.

  Args:
    state: replicated TrainState.
    batch: image [B, H, W, 3] float32, label [B] int32, mask [B] bool, sharded on "data".
  Returns:
    (new state, metrics dict of scalars).
  """
  step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  mutable = ["batch_stats"] if jax.tree.leaves(state.batch_stats) else []
  if objective.uses_features:
    mutable.append("intermediates")

  def compute_loss(trainable):
    variables = {"params": trainable["model"]}
    if "batch_stats" in mutable:
      variables["batch_stats"] = state.batch_stats
    if mutable:
      emb, updates = model.apply(variables, batch["image"], train=True,
                                 rngs={"dropout": step_rng}, mutable=mutable)
    else:
      emb, updates = model.apply(variables, batch["image"], train=True,
                                 rngs={"dropout": step_rng}), {}
    features = updates["intermediates"]["features"][0] if objective.uses_features else emb
    loss, metrics = objective.loss(emb, features, batch["label"], batch["mask"],
                                   trainable["head"], state.loss_state, state.step)
    new_stats = updates.get("batch_stats", state.batch_stats)
    return loss, (metrics, new_stats, emb, features)

  (loss, (metrics, new_stats, emb, features)), grads = jax.value_and_grad(
      compute_loss, has_aux=True)(state.trainable())
  updates, opt_state = tx.update(grads, state.opt_state, state.trainable())
  trainable = optax.apply_updates(state.trainable(), updates)
  # Centers move by their own rule, from this step's global batch: under jit
  # the update reduces over every shard, so all replicas stay identical.
  # `features` is the embedding unless the objective reads the raw features.
  loss_state = objective.update_state(state.loss_state, features, batch["label"], batch["mask"])
  mask = batch["mask"].astype(jnp.float32)
  # Collapse check (FaceNet §3.2): spread of the embeddings around their mean.
  mean_emb = jnp.sum(emb * mask[:, None], 0) / jnp.maximum(mask.sum(), 1.0)
  spread = jnp.sum(jnp.sum(jnp.square(emb - mean_emb), -1) * mask) / jnp.maximum(mask.sum(), 1.0)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree_utils.tree_norm(grads),
                 embedding_spread=spread, valid_images=mask.sum())
  new_state = state.replace(step=state.step + 1, params=trainable["model"],
                            head=trainable["head"], opt_state=opt_state, batch_stats=new_stats,
                            loss_state=loss_state)
  return new_state, metrics


def make_jitted_step(config, model, tx, mesh: Mesh, objective: Objective | None = None):
  """train_step jitted with replicated state and batch sharded over "data".

  `objective` defaults to `config.loss` for a triplet loss (which needs no
  class count); classification losses must pass theirs.
  """
  if objective is None:
    objective = make_objective(config.loss, num_classes=0, feature_dim=0)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("data"))
  step = functools.partial(train_step, model=model, tx=tx, objective=objective)
  return jax.jit(step, in_shardings=(replicated, batch_sharding),
                 out_shardings=(replicated, replicated), donate_argnums=(0,))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global jax arrays sharded over the mesh."""
  sharding = NamedSharding(mesh, P("data"))
  return {k: jax.make_array_from_process_local_data(sharding, batch[k])
          for k in ("image", "label", "mask")}


def prefetch_to_mesh(batches: Iterator[dict], mesh: Mesh, size: int = 2) -> Iterator[tuple[int, dict]]:
  """Yields (step, sharded batch), keeping `size` batches already on device.

  The host-to-device copies are dispatched asynchronously, so the transfer of
  the next batches overlaps with the current step.
  """
  queue = collections.deque()
  for batch in batches:
    queue.append((int(batch["step"]), shard_batch(batch, mesh)))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def _evaluate(config, workdir, state, protocols, step, writer):
  """Runs the separate LFW evaluator on the in-memory params; logs its scalars."""
  from facejax.evaluation import evaluate_lfw  # the evaluator does not import the trainer
  for protocol in protocols:
    result = evaluate_lfw(config, workdir=workdir, variables=state.model_vars(), step=step,
                          protocol=protocol)
    if jax.process_index() == 0:
      logging.info("step %d: %s", step, result.summary())
    if writer:
      writer.scalars(step, {f"eval/{protocol}/{k}": v for k, v in result.scalars().items()})


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Fails at start-up, naming the key: see `facejax.config_checks`."""
  config_checks.validate_config(config, num_devices)


@dataclasses.dataclass(frozen=True)
class DivergenceGuard:
  """`config.divergence`: what counts as divergence and what to do about it.

  Checked at every logging step and before every checkpoint save, so a saved
  step is never a diverged one. `action` "stop" raises DivergenceError;
  "rollback" restores the newest good checkpoint (or the initial state),
  multiplies the learning rate by `rollback_lr_factor` and goes on, at most
  `max_rollbacks` times over the whole run (the count and the lowered scale
  are kept in the checkpoint meta, so a restart keeps them).
  """
  action: str = "stop"
  min_embedding_spread: float = 1e-4
  rollback_lr_factor: float = 0.5
  max_rollbacks: int = 3

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "DivergenceGuard":
    return cls(**config.get("divergence", ml_collections.ConfigDict()).to_dict())

  def reason(self, metrics: dict) -> str | None:
    """Why `metrics` (host scalars of one step) show divergence, or None."""
    loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
    if not (np.isfinite(loss) and np.isfinite(grad_norm)):
      return f"non-finite loss {loss} (gradient norm {grad_norm})"
    # FaceNet §3.2: hardest-negative mining can collapse f(x) to a constant.
    # For unit vectors the spread is 1 - |mean|^2: ~1 when spread out, 0 when collapsed.
    spread = float(metrics["embedding_spread"])
    if spread < self.min_embedding_spread:
      return (f"embedding collapse: spread {spread:.3g} < "
              f"config.divergence.min_embedding_spread={self.min_embedding_spread:g}")
    return None


class DivergenceError(FloatingPointError):
  """Training diverged; the message names the step and the last good checkpoint."""

  def __init__(self, step: int, reason: str, last_good: int | None):
    super().__init__(f"training diverged at step {step}: {reason}; last good checkpoint: "
                     f"{'none' if last_good is None else f'step {last_good}'}")
    self.step, self.reason, self.last_good = step, reason, last_good


def init_model_vars_from(config, source_workdir: str, target: dict) -> dict:
  """{"params", "batch_stats"} of the newest good checkpoint of `source_workdir`.

  Only the net travels: the optimizer state and step start afresh. A source
  of another net or embedding size is refused, naming both.
  """
  manager = checkpointing.make_manager(source_workdir, read_only=True)
  found = checkpointing.restore_latest_good(manager, source_workdir, config, target, None,
                                            quarantine=False) if manager.all_steps() else None
  manager.close()
  if found is None:
    raise FileNotFoundError(
        f"config.init_from={source_workdir!r} holds no checkpoint: point it at a training "
        f"workdir or at the output of `python -m facejax.convert --workdir=...`")
  step, _, model_vars, _ = found
  logging.info("Initialised the net from %s step %d", checkpointing.checkpoint_dir(source_workdir),
               step)
  return model_vars


def restore_or_init(config, workdir, manager, model, tx, objective) -> tuple[TrainState, dict]:
  """The newest good checkpoint of `workdir` (or a fresh state), replicated; and its meta."""
  state = create_train_state(config, model, tx, jax.random.key(config.seed), objective)
  state = jax.device_put(state, NamedSharding(make_mesh(), P()))
  found = checkpointing.restore_latest_good(manager, workdir, config, state.model_vars(),
                                            state.train_vars())
  if found is None:
    if config.get("init_from"):
      model_vars = init_model_vars_from(config, config.init_from, state.model_vars())
      state = state.replace(params=model_vars["params"], batch_stats=model_vars["batch_stats"])
    return state, {}
  step, meta, model_vars, train_vars = found
  state = state.replace(params=model_vars["params"], batch_stats=model_vars["batch_stats"],
                        **train_vars)
  logging.info("Resumed from %s at step %d", checkpointing.checkpoint_dir(workdir), step)
  return state, meta


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains `config` in `workdir`, resuming from its newest good checkpoint if any."""
  validate_config(config, jax.device_count())
  checkpointing.workdir_path(workdir).mkdir(parents=True, exist_ok=True)
  is_chief = jax.process_index() == 0
  mesh = make_mesh()
  model = create_model(config.model)
  source = datasets.build_train_source(config.data)
  objective = make_objective(config.loss, num_classes=len(source.class_names),
                             feature_dim=model.embedding_dim)
  if is_chief and source.report is not None:
    (checkpointing.workdir_path(workdir) / "data_report.json").write_text(
        json.dumps(source.report.to_dict(), indent=1))
  guard = DivergenceGuard.from_config(config)
  manager = checkpointing.make_manager(workdir, max_to_keep=config.checkpoint.max_to_keep,
                                       async_save=config.checkpoint.get("async_save", True))
  tx = optimizers.create_optimizer(config.optimizer, config.num_train_steps)
  state, meta = restore_or_init(config, workdir, manager, model, tx, objective)
  lr_scale, rollbacks = meta.get("lr_scale", 1.0), meta.get("rollbacks", 0)
  prep = datasets.preprocessing(config.data, train=True)
  writer = _SummaryWriter(workdir) if is_chief else None
  progress = _progress(int(state.step), config.num_train_steps, is_chief)

  try:
    while True:
      start_step = int(state.step)
      tx = optimizers.create_optimizer(config.optimizer, config.num_train_steps, lr_scale)
      batches = input_pipeline.train_batches(
          source.table, source.indices_by_class, prep,
          num_identities=config.num_identities, images_per_identity=config.images_per_identity,
          seed=config.seed, start_step=start_step, num_steps=config.num_train_steps,
          process_index=jax.process_index(), process_count=jax.process_count(),
          sampling=config.data.get("sampling", "pk"), batch_size=config.batch_size)
      step_fn = make_jitted_step(config, model, tx, mesh, objective)
      save_meta = functools.partial(checkpointing.checkpoint_meta, config, lr_scale=lr_scale,
                                    rollbacks=rollbacks)
      try:
        state = _train_loop(config, workdir, state, batches, step_fn, mesh, manager, writer,
                            progress, guard, save_meta)
        break
      except DivergenceError as e:
        logging.error("%s", e)
        if guard.action != "rollback" or rollbacks >= guard.max_rollbacks:
          raise
        manager.wait_until_finished()
        rollbacks += 1
        lr_scale *= guard.rollback_lr_factor
        state, _ = restore_or_init(config, workdir, manager, model, tx, objective)
        logging.warning("Rollback %d/%d: back to step %d with the learning rate x%g",
                        rollbacks, guard.max_rollbacks, int(state.step), lr_scale)
        if writer:
          writer.scalars(e.step, {"divergence/rollback_to_step": int(state.step),
                                  "divergence/lr_scale": lr_scale})
        progress.reset(config.num_train_steps)
        progress.update(int(state.step))
  finally:
    # A Python-level failure (bad image, NaN, Ctrl-C) must not lose the
    # checkpoint that is still being written in the background.
    manager.wait_until_finished()
    progress.close()

  _evaluate(config, workdir, state, config.eval.at_end, int(state.step), writer)
  if writer:
    writer.close()
  manager.close()
  return state


def _train_loop(config, workdir, state, batches, step_fn, mesh, manager, writer, progress,
                guard, save_meta):
  images_per_step = config.batch_size
  t_last, n_last = time.perf_counter(), 0
  for data_step, batch in prefetch_to_mesh(batches, mesh, config.device_prefetch):
    step = data_step + 1  # step count after this update
    state, metrics = step_fn(state, batch)
    n_last += 1
    log_now = step % config.log_every_steps == 0 or step == config.num_train_steps
    save_now = step % config.checkpoint.every_steps == 0 or step == config.num_train_steps
    if log_now or save_now:
      metrics = jax.device_get(metrics)
      reason = guard.reason(metrics)
      if reason:
        raise DivergenceError(step, reason, manager.latest_step())
    if log_now:
      now = time.perf_counter()
      metrics["images_per_sec"] = n_last * images_per_step / (now - t_last)
      t_last, n_last = now, 0
      if writer:
        writer.scalars(step, metrics)
      # Triplet losses report the active fraction, classifiers their accuracy.
      shown = "fraction_active" if "fraction_active" in metrics else "accuracy"
      progress.set_postfix(loss=f"{metrics['loss']:.4f}", **{shown: f"{metrics[shown]:.2f}"},
                           img_s=f"{metrics['images_per_sec']:.1f}")
    progress.update(1)
    if save_now:
      checkpointing.save(manager, step, state.model_vars(), state.train_vars(), save_meta(step))
    if config.eval.every_steps and step % config.eval.every_steps == 0 and step != config.num_train_steps:
      _evaluate(config, workdir, state, config.eval.during_training, step, writer)
  return state


def _progress(start, total, enabled):
  from tqdm import tqdm
  return tqdm(total=total, initial=start, disable=not enabled, desc="train", unit="step",
              dynamic_ncols=True)


class _SummaryWriter:
  """TensorBoard scalars under <workdir>/tensorboard.

  tensorboardX writes the event files without the (multi-hundred-MB)
  tensorboard package, which tensorflow-cpu no longer pulls in.
  """

  def __init__(self, workdir):
    from tensorboardX import SummaryWriter
    # tensorboardX writes gs:// paths itself (with google-cloud-storage installed).
    self._writer = SummaryWriter(str(checkpointing.workdir_path(workdir) / "tensorboard"))

  def scalars(self, step, values):
    for k, v in values.items():
      self._writer.add_scalar(k, float(v), step)
    self._writer.flush()

  def close(self):
    self._writer.close()
