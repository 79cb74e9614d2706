"""Training: a jitted, mesh-sharded step, Orbax checkpoints, periodic LFW eval.

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
from facejax import sharding
from facejax.data import datasets
from facejax.data import input_pipeline, sampling
from facejax.evaluation import registry
from facejax.evaluation import results
from facejax.inference import Embedder
from facejax.losses import Head, harmonic, init_head, make_objective, partial_fc
from facejax.models import create_model


@flax.struct.dataclass
class TrainState:
  """Everything a step reads and writes. `rng` is a raw uint32[2] key.

  `head` (the loss head's params: a classifier's kernel and bias, `{}` for
  triplet losses) is trained with `params` by the same optimizer, whose
  state covers `{"model": params, "head": head}`. `loss_state` holds the
  head's other variable collections (the center-loss centers, or `{}`),
  which the head moves by its own rule. Both are training-only: they are
  saved in the "train" checkpoint item, not in "model". `lr_scale` (float32)
  multiplies every update: the divergence guard lowers it on a rollback.
  `ema_params` (`{}` unless `config.ema_decay` > 0) is the exponential moving
  average of `params`, which evaluation uses (`eval_vars`).
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array
  head: Any = flax.struct.field(default_factory=dict)
  loss_state: Any = flax.struct.field(default_factory=dict)
  lr_scale: jax.Array = flax.struct.field(default_factory=lambda: jnp.ones((), jnp.float32))
  ema_params: Any = flax.struct.field(default_factory=dict)

  def model_vars(self) -> dict:
    """The trained weights: {"params", "batch_stats"}."""
    return {"params": self.params, "batch_stats": self.batch_stats}

  def eval_vars(self) -> dict:
    """What evaluation and export use: the EMA of the params when there is one (with the
    live BatchNorm statistics, themselves moving averages), else `model_vars()`.
    This is the checkpoint's "model" item."""
    return {"params": self.ema_params or self.params, "batch_stats": self.batch_stats}

  def train_vars(self) -> dict:
    """The "train" checkpoint item. `lr_scale` is kept in the meta item (a JSON number), so
    the item's layout, and checkpoints written before the scale joined the state, stay valid.
    With an EMA the "model" item holds the averaged params, and the live ones are here."""
    extra = {"params": self.params} if self.ema_params else {}
    return {"opt_state": self.opt_state, "step": self.step, "rng": self.rng,
            "head": self.head, "loss_state": self.loss_state, **extra}

  def with_checkpoint(self, model_vars: dict, train_vars: dict) -> "TrainState":
    """This state with a checkpoint's items (`eval_vars()`, `train_vars()` layout) put back."""
    train_vars = dict(train_vars)
    if self.ema_params:
      return self.replace(params=train_vars.pop("params"), ema_params=model_vars["params"],
                          batch_stats=model_vars["batch_stats"], **train_vars)
    return self.replace(params=model_vars["params"], batch_stats=model_vars["batch_stats"],
                        **train_vars)

  def trainable(self) -> dict:
    return {"model": self.params, "head": self.head}


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (sharding.MESH_AXIS,))


def _default_objective(config: ml_collections.ConfigDict) -> Head:
  """The head of a triplet `config.loss`, which needs no class count."""
  return make_objective(config.loss, num_classes=0, feature_dim=0)


def create_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                       tx: optax.GradientTransformation, rng: jax.Array,
                       objective: Head | None = None) -> TrainState:
  """Initialises params (float32), the loss head and the optimizer state from `rng`.

  `objective` defaults to `config.loss` for a triplet loss; a classification
  loss must pass its head (`make_objective` with the class count).
  """
  objective = _default_objective(config) if objective is None else objective
  h, w = datasets.hw(config.data.image_size)
  init_rng, state_rng = jax.random.split(rng)
  # A key of its own, so that adding a head leaves the net's init unchanged.
  head_vars = init_head(objective, jax.random.fold_in(init_rng, 1))
  head = head_vars.pop("params", {})
  # Jitted: an eager init compiles one RNG kernel per parameter shape (tens of
  # seconds for the Inception nets on CPU).
  init = jax.jit(functools.partial(model.init, train=False))
  variables = init(init_rng, jnp.zeros((1, h, w, 3), jnp.float32))
  params = variables["params"]
  ema = ema_start(params) if config.get("ema_decay", 0.0) else {}
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init({"model": params, "head": head}),
                    rng=jax.random.key_data(state_rng), head=head, loss_state=head_vars,
                    ema_params=ema)


def ema_start(params: dict) -> dict:
  """The EMA's first value: a copy of the params (a buffer of its own, as the step donates)."""
  return jax.tree.map(jnp.copy, params)


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """TF's `ExponentialMovingAverage(decay, num_updates)`: min(decay, (1 + t) / (10 + t)),
  davidsandberg's `moving_average_decay` (0.9999): early averages follow the weights."""
  t = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def train_step(state: TrainState, batch: dict, *, model: nn.Module,
               tx: optax.GradientTransformation, objective: Head,
               ema_decay: float = 0.0) -> tuple[TrainState, dict]:
  """One optimizer step on the global batch.

  Args:
    state: replicated TrainState.
    batch: image [B, H, W, 3] float32, label [B] int32, mask [B] bool, sharded on "data";
      with the harmonic loss also reference [B, D] float32 (`harmonic.reference_embedder`).
    ema_decay: > 0 moves `state.ema_params` towards the new params (`ema_decay_at`).
  Returns:
    (new state, metrics dict of scalars).
  """
  step_rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  # Partial FC draws its centers from a stream of its own: a function of (seed, step).
  sample_rng = jax.random.fold_in(step_rng, 1)

  # A sampling head (Partial FC, r < 1) trains only the rows it draws: the step works on
  # their slice of the centers and of the optimizer state, and writes it back at the end.
  index = objective.apply({}, batch["label"], batch["mask"], rngs={"sample": sample_rng},
                          method="sample")
  # The harmonic loss compares with a fixed v1 net's embeddings of the batch.
  reference = {"reference": batch["reference"]} if "reference" in batch else {}

  def compute_loss(trainable, head_kwargs):
    (emb, features), net_updates = model.apply(
        {"params": trainable["model"], "batch_stats": state.batch_stats}, batch["image"],
        train=True, rngs={"dropout": step_rng}, mutable=["batch_stats"])
    # The objective's one call: the loss, and its own state (the centers) moved by its rule.
    (loss, metrics), head_updates = objective.apply(
        {"params": trainable["head"], **state.loss_state}, emb, features,
        labels=batch["label"], mask=batch["mask"], step=state.step,
        mutable=list(state.loss_state), **head_kwargs, **reference)
    return loss, (metrics, net_updates, head_updates, emb)

  trainable, opt_state, loss, (metrics, net_updates, head_updates, emb), grads = (
      partial_fc.optimizer_step(tx, state.trainable(), state.opt_state, compute_loss, index,
                                update_scale=state.lr_scale))
  mask = batch["mask"].astype(jnp.float32)
  # Collapse check (FaceNet §3.2): spread of the embeddings around their mean.
  mean_emb = jnp.sum(emb * mask[:, None], 0) / jnp.maximum(mask.sum(), 1.0)
  spread = jnp.sum(jnp.sum(jnp.square(emb - mean_emb), -1) * mask) / jnp.maximum(mask.sum(), 1.0)
  metrics = dict(metrics, loss=loss, grad_norm=optax.tree_utils.tree_norm(grads),
                 embedding_spread=spread, valid_images=mask.sum())
  ema_params = state.ema_params
  if ema_decay:
    d = ema_decay_at(ema_decay, state.step)
    ema_params = jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params, trainable["model"])
  new_state = state.replace(
      step=state.step + 1, params=trainable["model"], head=trainable["head"],
      ema_params=ema_params,
      opt_state=opt_state, batch_stats=net_updates.get("batch_stats", state.batch_stats),
      loss_state={**state.loss_state, **head_updates})
  return new_state, metrics


def abstract_state(config, model, tx, objective: Head | None = None) -> TrainState:
  """The TrainState's shapes and dtypes, computed without allocating it."""
  return jax.eval_shape(functools.partial(create_train_state, config, model, tx,
                                          objective=objective), jax.random.key(0))


def train_state_shardings(config, model, tx, mesh: Mesh, objective: Head | None = None):
  """`sharding.state_shardings` of the TrainState `create_train_state` builds."""
  return sharding.state_shardings(abstract_state(config, model, tx, objective), tx, mesh)


def create_sharded_train_state(config, model, tx, rng, mesh: Mesh,
                               objective: Head | None = None, shardings=None) -> TrainState:
  """`create_train_state` placed on the mesh by `sharding.state_shardings` (`shardings`, when
  the caller has them already: tracing the init for them costs seconds on a large net).

  Initialised under jit with those shardings as outputs, so a sharded head is
  never whole on one device.
  """
  if shardings is None:
    shardings = train_state_shardings(config, model, tx, mesh, objective)
  init = functools.partial(create_train_state, config, model, tx, objective=objective)
  return jax.jit(init, out_shardings=shardings)(rng)


def make_jitted_step(config, model, tx, mesh: Mesh, objective: Head | None = None,
                     state_sharding=None):
  """train_step jitted with the state placed by `sharding.state_shardings` (replicated,
  except a Partial FC head's rows and their optimizer state) and the batch sharded over "data".

  `objective` defaults to `config.loss` for a triplet loss (which needs no
  class count); classification losses must pass theirs. `state_sharding`: the
  state's shardings when the caller has them (`train_state_shardings`).
  """
  objective = _default_objective(config) if objective is None else objective
  if state_sharding is None:
    state_sharding = train_state_shardings(config, model, tx, mesh, objective)
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P(sharding.MESH_AXIS))
  step = functools.partial(train_step, model=model, tx=tx, objective=objective,
                           ema_decay=config.get("ema_decay", 0.0))

  def step_on_mesh(state, batch):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):  # a head pins shardings by axis name
      return step(state, batch)

  return jax.jit(step_on_mesh, in_shardings=(state_sharding, batch_sharding),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Host-local numpy batch -> global jax arrays sharded over the mesh."""
  batch_sharding = NamedSharding(mesh, P(sharding.MESH_AXIS))
  return {k: jax.make_array_from_process_local_data(batch_sharding, batch[k])
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


def is_due(step: int, every: int) -> bool:
  """Whether an action done every `every` steps (0: never) is due after `step` steps."""
  return every > 0 and step % every == 0


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Fails at start-up, naming the key: see `facejax.config_checks`."""
  config_checks.validate_config(config, num_devices)


@dataclasses.dataclass(frozen=True)
class DivergenceGuard:
  """`config.divergence`: what counts as divergence and what to do about it.

  Checked at every logging step and before every checkpoint save, so a saved
  step is never a diverged one. `action` "stop" raises DivergenceError;
  "rollback" restores the newest good checkpoint (or the initial state),
  multiplies the learning-rate scale by `rollback_lr_factor` and goes on, at
  most `max_rollbacks` times over the whole run (the count and the lowered
  scale are kept in the checkpoint meta, so a restart keeps them).
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

  def may_roll_back(self, rollbacks: int) -> bool:
    """Whether a run that has rolled back `rollbacks` times may do so again."""
    return self.action == "rollback" and rollbacks < self.max_rollbacks


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
    raise checkpointing.NoCheckpointError(
        f"config.init_from={source_workdir!r} holds no checkpoint: point it at a training "
        f"workdir or at the output of `python -m facejax.convert --workdir=...`")
  step, _, model_vars, _ = found
  logging.info("Initialised the net from %s step %d", checkpointing.checkpoint_dir(source_workdir),
               step)
  return model_vars


def restore_or_init(config, workdir, manager, model, tx, objective,
                    shardings=None) -> tuple[TrainState, dict]:
  """The newest good checkpoint of `workdir` (or a fresh state), placed on the mesh by
  `shardings` (`train_state_shardings`); and its meta."""
  state = create_sharded_train_state(config, model, tx, jax.random.key(config.seed), make_mesh(),
                                     objective, shardings)
  found = checkpointing.restore_latest_good(manager, workdir, config, state.eval_vars(),
                                            state.train_vars())
  if found is None:
    if config.get("init_from"):
      model_vars = init_model_vars_from(config, config.init_from, state.model_vars())
      state = state.replace(params=model_vars["params"], batch_stats=model_vars["batch_stats"],
                            ema_params=(ema_start(model_vars["params"])
                                        if state.ema_params else {}))
    return state, {}
  step, meta, model_vars, train_vars = found
  # The scale was saved as float(float32) in JSON: the same float32 comes back.
  lr_scale = jax.device_put(np.float32(meta.get("lr_scale", 1.0)), state.lr_scale.sharding)
  state = state.with_checkpoint(model_vars, train_vars).replace(lr_scale=lr_scale)
  logging.info("Resumed from %s at step %d", checkpointing.checkpoint_dir(workdir), step)
  return state, meta


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
  """Trains `config` in `workdir`, resuming from its newest good checkpoint if any."""
  validate_config(config, jax.device_count())
  checkpointing.workdir_path(workdir).mkdir(parents=True, exist_ok=True)
  is_chief = jax.process_index() == 0
  model = create_model(config.model)
  source = datasets.build_train_source(config.data)
  if is_chief and source.report is not None:
    (checkpointing.workdir_path(workdir) / "data_report.json").write_text(
        json.dumps(source.report.to_dict(), indent=1))
  objective = make_objective(config.loss, num_classes=len(source.class_names),
                             feature_dim=model.embedding_dim, num_shards=jax.device_count())
  tx = optimizers.create_optimizer(config.optimizer, config.num_train_steps)
  mesh = make_mesh()
  manager = checkpointing.make_manager(workdir, max_to_keep=config.checkpoint.max_to_keep,
                                       async_save=config.checkpoint.get("async_save", True))
  # Traced once here for the init, the restore, the step and any rollback.
  shardings = train_state_shardings(config, model, tx, mesh, objective)
  restore = functools.partial(restore_or_init, config, workdir, manager, model, tx, objective,
                              shardings)
  state, meta = restore()
  reference = (harmonic.reference_embedder(config, mesh)
               if getattr(objective, "needs_reference", False) else None)
  loop = _Loop(config=config, workdir=workdir, source=source, mesh=mesh, manager=manager,
               reference=reference,
               step_fn=make_jitted_step(config, model, tx, mesh, objective, shardings),
               guard=DivergenceGuard.from_config(config),
               writer=_SummaryWriter(workdir) if is_chief else None,
               progress=_progress(int(state.step), config.num_train_steps, is_chief),
               evaluators=registry.build_all(config, out_dir=results.eval_dir(workdir)))
  rollbacks = meta.get("rollbacks", 0)
  try:
    while True:
      lr_scale = float(state.lr_scale)  # read now: the steps donate `state`'s buffers
      try:
        state = loop.run(state, rollbacks)
        break
      except DivergenceError as e:
        logging.error("%s", e)
        if not loop.guard.may_roll_back(rollbacks):
          raise
        manager.wait_until_finished()
        rollbacks += 1
        state, _ = restore()
        lr_scale *= loop.guard.rollback_lr_factor
        state = state.replace(lr_scale=jax.device_put(np.float32(lr_scale),
                                                      state.lr_scale.sharding))
        loop.rolled_back(e.step, state, rollbacks)
  finally:
    # A Python-level failure (bad image, NaN, Ctrl-C) must not lose the
    # checkpoint that is still being written in the background.
    manager.wait_until_finished()
    loop.progress.close()

  loop.evaluate(state, int(state.step), last=True)
  if loop.writer:
    loop.writer.close()
  manager.close()
  return state


@dataclasses.dataclass(frozen=True)
class _Loop:
  """The training loop and what it runs with, fixed for the whole run."""
  config: ml_collections.ConfigDict
  workdir: str
  source: datasets.TrainSource
  mesh: Mesh
  manager: Any  # orbax CheckpointManager
  step_fn: Callable[[TrainState, dict], tuple[TrainState, dict]]
  guard: DivergenceGuard
  writer: "_SummaryWriter | None"
  progress: Any  # tqdm
  evaluators: dict[str, Any]  # name -> registry.Evaluator, built from config.evals
  reference: Callable[[jax.Array], jax.Array] | None = None  # the harmonic loss's v1 net

  def run(self, state: TrainState, rollbacks: int) -> TrainState:
    """Steps from `state.step` to `config.num_train_steps`, logging, saving and evaluating
    when due. Raises DivergenceError, before saving, when a checked step diverged."""
    c = self.config
    batches = input_pipeline.train_batches(
        self.source.table, self.source.classes,
        datasets.preprocessing(c.data, train=True), sampling.Sampler.from_config(c),
        start_step=int(state.step), num_steps=c.num_train_steps,
        process_index=jax.process_index(), process_count=jax.process_count())
    t_last, n_last = time.perf_counter(), 0
    for data_step, batch in prefetch_to_mesh(batches, self.mesh, c.device_prefetch):
      step = data_step + 1  # step count after this update
      if self.reference is not None:
        batch = dict(batch, reference=self.reference(batch["image"]))
      state, metrics = self.step_fn(state, batch)
      n_last += 1
      last = step == c.num_train_steps
      log_now = is_due(step, c.log_every_steps) or last
      save_now = is_due(step, c.checkpoint.every_steps) or last
      if log_now or save_now:
        metrics = jax.device_get(metrics)
        reason = self.guard.reason(metrics)
        if reason:
          raise DivergenceError(step, reason, self.manager.latest_step())
      if log_now:
        now = time.perf_counter()
        metrics["images_per_sec"] = n_last * c.batch_size / (now - t_last)
        t_last, n_last = now, 0
        self._log(step, metrics)
      self.progress.update(1)
      if save_now:
        meta = checkpointing.checkpoint_meta(c, step, lr_scale=float(state.lr_scale),
                                             rollbacks=rollbacks)
        checkpointing.save(self.manager, step, state.eval_vars(), state.train_vars(), meta)
      if not last:  # the last step's evaluations run after the loop (`at_end`)
        self.evaluate(state, step, last=False)
    return state

  def evaluate(self, state: TrainState, step: int, *, last: bool) -> None:
    """Runs the evaluators of `config.evals` due at `step` on the in-memory weights and
    logs their scalars as `eval/<name>/<scalar>`."""
    specs = self.config.evals
    due = [name for name in self.evaluators if registry.is_due(specs[name], step, last=last)]
    if not due:
      return
    embedder = Embedder.from_variables(self.config, state.eval_vars(), step=step,
                                       workdir=self.workdir)
    for name in due:
      evaluator = self.evaluators[name]
      scalars = evaluator.run(embedder)
      if jax.process_index() == 0:
        logging.info("step %d: %s", step, evaluator.summary())
      if self.writer:
        self.writer.scalars(step, {f"eval/{name}/{k}": v for k, v in scalars.items()})

  def _log(self, step: int, metrics: dict) -> None:
    if self.writer:
      self.writer.scalars(step, metrics)
    # Triplet losses report the active fraction, classifiers their accuracy.
    shown = "fraction_active" if "fraction_active" in metrics else "accuracy"
    self.progress.set_postfix(loss=f"{metrics['loss']:.4f}", **{shown: f"{metrics[shown]:.2f}"},
                              img_s=f"{metrics['images_per_sec']:.1f}")

  def rolled_back(self, diverged_step: int, state: TrainState, rollbacks: int) -> None:
    """Reports a rollback to `state` and rewinds the progress bar."""
    lr_scale = float(state.lr_scale)
    logging.warning("Rollback %d/%d: back to step %d with the learning rate x%g",
                    rollbacks, self.guard.max_rollbacks, int(state.step), lr_scale)
    if self.writer:
      self.writer.scalars(diverged_step, {"divergence/rollback_to_step": int(state.step),
                                          "divergence/lr_scale": lr_scale})
    self.progress.reset(self.config.num_train_steps)
    self.progress.update(int(state.step))


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
