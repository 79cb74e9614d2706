"""Partial FC: a margin-softmax head whose class centers are sharded over the device mesh.

arcface_torch's `partial_fc_v2` (An et al., arXiv 2010.05222; SCALE.md §4),
written as global-view jnp under jit: the centers `weight` [C_pad, D] are
sharded over the mesh axis "data" by rows (`state_shardings`), so each
device holds C_pad / N of them, and XLA inserts every collective: the
all-gather of the global batch's embeddings, the max and sum of the
distributed softmax, the reduce-scatter of the embedding gradient.

Each step, on each of the N row shards (one per device):
  1. scores ~ U[0, 1) for the shard's M = C_pad / N rows, 2.0 for the rows
     that are a label of the global batch (positives), -1 for padding rows;
  2. the top k = max(int(r M), min(M, B)) rows are sampled: every positive
     plus uniform negatives without replacement (k >= B keeps every
     positive even if one shard owns them all; arcface_torch grows k then);
  3. cos = normalize(x) . normalize(W_sampled), clipped to [-1, 1], float32;
  4. the target logit becomes s (cos(m1 theta + m2) - m3) (ArcFace
     (1, 0.5, 0), CosFace (1, 0, 0.4)), the softmax runs over all N k
     sampled logits.
With r = 1 nothing is sampled: the head is the full margin softmax, equal
to `CombinedMarginHead` with kernel = weight[:C].T (tested).

Differences from arcface_torch, on purpose:
* The margin's gradient is the true d cos(theta + m) / d cos(theta);
  arcface_torch applies the margin in place under no_grad (straight-through).
* Only the sampled rows are updated, and only they are ever materialised
  outside the weight: the train step draws the rows (`sample`), gathers them
  and their optimizer state from each device's shard (`gather_rows`),
  differentiates the loss with respect to the [N, k, D] slice, runs the
  optimizer on the slice and writes it back in place (`scatter_rows`). So a
  step holds the centers, their momentum and O(k) of temporaries per device,
  not a dense [C, D] gradient (arcface_torch's dense gradient lets momentum
  and weight decay move every row, and costs a full-size gradient).
* The sample of step s comes from the "sample" RNG stream, a function of
  (seed, s), so a resumed run draws the same rows.
Rows are padded to a multiple of `row_multiple` (default 1024) so that the
checkpoint's shape does not depend on the device count; N must divide it.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from facejax.losses._masked import (SQ_NORM_EPS, base_metrics, cross_entropy_loss, masked_mean,
                                    one_hot, pick, prepare, stop)
from facejax.losses.angular_margin import _combined
from facejax.losses.heads import ClassifierHead, HeadArgumentError
from facejax.sharding import MESH_AXIS, row_split_leaves


def padded_rows(num_classes: int, row_multiple: int) -> int:
  return -(-num_classes // row_multiple) * row_multiple


def _constrain(x: jax.Array, spec: P) -> jax.Array:
  """Pins `x`'s sharding when traced under a mesh with the "data" axis (else a no-op)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or MESH_AXIS not in mesh.axis_names:
    return x
  return jax.lax.with_sharding_constraint(x, spec)


def sample_rows(key: jax.Array, labels: jax.Array, mask: jax.Array, *, num_classes: int,
                num_shards: int, rows_per_shard: int, k: int) -> jax.Array:
  """Per shard, the sorted local indices [N, k] of every positive plus random negatives.

  labels [B] int32 global class ids; mask [B] bool (padded rows bring no
  positive). Rows >= num_classes (padding) are only drawn when a shard has
  fewer than k real rows, and are masked out of the softmax by the caller.
  """
  positive = jnp.zeros((num_shards * rows_per_shard,), bool).at[
      jnp.where(mask, labels, num_shards * rows_per_shard)].set(True, mode="drop")
  positive = positive.reshape(num_shards, rows_per_shard)
  rows = jnp.arange(num_shards * rows_per_shard).reshape(num_shards, rows_per_shard)
  scores = jax.random.uniform(key, (num_shards, rows_per_shard))
  scores = jnp.where(positive, 2.0, jnp.where(rows < num_classes, scores, -1.0))
  scores = _constrain(scores, P(MESH_AXIS, None))
  # A full sort of each shard's row rather than lax.top_k: XLA partitions a sort
  # along its batch axis, but gathered every shard's scores onto each device for TopK.
  _, order = jax.lax.sort((-scores, jnp.broadcast_to(jnp.arange(rows_per_shard), scores.shape)),
                          dimension=1, num_keys=1)
  return jnp.sort(order[:, :k], axis=-1)


def _row_shards(weight: jax.Array, num_shards: int) -> jax.Array:
  """[N m, D] -> [N, m, D], shard i on the device that holds rows i m .. (i + 1) m."""
  return _constrain(weight.reshape(num_shards, -1, weight.shape[-1]), P(MESH_AXIS, None, None))


def gather_rows(weight: jax.Array, index: jax.Array) -> jax.Array:
  """weight [N m, D] (split by rows), index [N, k] local rows -> [N, k, D], each shard's
  rows read on its own device."""
  # vmapped over the shards, the gather's shard axis is a batching dimension, which XLA's
  # partitioner keeps local: no device sees another's rows.
  rows = jax.vmap(lambda w, i: w[i])(_row_shards(weight, index.shape[0]), index)
  return _constrain(rows, P(MESH_AXIS, None, None))


def scatter_rows(weight: jax.Array, index: jax.Array, rows: jax.Array) -> jax.Array:
  """`weight` with `rows` [N, k, D] written at `index` [N, k] (unique, sorted per shard):
  the inverse of `gather_rows`. Under jit with `weight` donated the write is in place."""
  write = lambda w, i, r: w.at[i].set(r, indices_are_sorted=True,  # noqa: E731
                                      unique_indices=True)
  shards = jax.vmap(write)(_row_shards(weight, index.shape[0]), index, rows.astype(weight.dtype))
  return _constrain(shards, P(MESH_AXIS, None, None)).reshape(weight.shape)


def gather_trainable(tx: optax.GradientTransformation, trainable: dict, opt_state: Any,
                     index: jax.Array) -> tuple[dict, Any]:
  """The slice of {"model": params, "head": head params} and of `tx`'s state a sampled step
  trains: every row-split leaf (the centers, their momentum or Adam moments) becomes its
  [N, k, D] rows at `index` [N, k]; the rest is passed through."""
  split = row_split_leaves(trainable)
  take = lambda is_split, w: gather_rows(w, index) if is_split else w  # noqa: E731
  rows = jax.tree.map(take, split, trainable)
  opt_rows = optax.tree_utils.tree_map_params(tx, lambda w, is_split: take(is_split, w),
                                              opt_state, split, transform_non_params=lambda x: x)
  return rows, opt_rows


def scatter_trainable(tx: optax.GradientTransformation, trainable: dict, opt_state: Any,
                      new_rows: dict, new_opt_rows: Any, index: jax.Array) -> tuple[dict, Any]:
  """The inverse of `gather_trainable`: the full trees with the slice's new values written
  back at `index`; every other leaf is the slice's (they were passed through whole)."""
  split = row_split_leaves(trainable)
  state_split = optax.tree_utils.tree_map_params(tx, lambda _, is_split: is_split, opt_state,
                                                 split, transform_non_params=lambda _: False)
  put = lambda is_split, full, new: scatter_rows(full, index, new) if is_split else new  # noqa: E731
  return (jax.tree.map(put, split, trainable, new_rows),
          jax.tree.map(put, state_split, opt_state, new_opt_rows))



def optimizer_step(tx: optax.GradientTransformation, trainable: dict, opt_state: Any,
                   loss_fn: Callable[[dict, dict], tuple[jax.Array, Any]],
                   index: jax.Array | None, update_scale: jax.Array | float = 1.0):
  """One step of `tx` on `trainable`; with a sample `index` [N, k], on its rows only.

  `loss_fn(trainable, head_kwargs) -> (loss, aux)` is differentiated with respect to
  the trainable tree, or to its gathered slice when `index` is given (`head_kwargs`
  is then {"index": index}, for the head's call). The updates are multiplied by
  `update_scale` (the trainer's learning-rate scale) before they are applied, and a
  slice is written back in place (`scatter_trainable`). Under `optax.MultiSteps` the
  sampled step accumulates instead (`_accumulating_step`).

  Returns (new trainable, new opt_state, loss, aux, grads); `grads` are the slice's.
  """
  full, full_opt_state = trainable, opt_state
  head_kwargs = {}
  if index is not None:
    if isinstance(opt_state, optax.MultiStepsState):
      return _accumulating_step(tx, trainable, opt_state, loss_fn, index, update_scale)
    trainable, opt_state = gather_trainable(tx, trainable, opt_state, index)
    head_kwargs = {"index": index}
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable, head_kwargs)
  updates, opt_state = tx.update(grads, opt_state, trainable)
  # Scaling the updates scales the learning rate: the optimizers facejax builds
  # (SGD, Adam, AdaGrad, AdamW, ..., after clipping and the L2 term) end in
  # `-learning_rate * direction`, with no state that depends on the rate. So a
  # rollback changes a number in the state, not the optimizer or the compiled step.
  updates = jax.tree.map(lambda u: u * jnp.asarray(update_scale, u.dtype), updates)
  trainable = optax.apply_updates(trainable, updates)
  if index is not None:
    trainable, opt_state = scatter_trainable(tx, full, full_opt_state, trainable, opt_state,
                                             index)
  return trainable, opt_state, loss, aux, grads


def _accumulating_step(tx: optax.GradientTransformation, trainable: dict,
                       opt_state: optax.MultiStepsState, loss_fn, index: jax.Array,
                       update_scale: jax.Array | float):
  """`optimizer_step` for a sampled head under `optax.MultiSteps` (k micro-steps per update).

  Each micro-step samples other rows, so the update of a window must reach the
  union of their rows. The slice's gradient is written into a zero [C_pad, D]
  (sharded like the centers) that MultiSteps averages into its accumulator, and
  a row is in the union when it is sampled now or its accumulated gradient is
  non-zero. Every row outside the union keeps its weight and optimizer state
  bit for bit (a dense update would let momentum and weight decay move them,
  as arcface_torch's does). The price, for accumulation only: the accumulator
  and one dense temporary, each C x D / N per device.
  """
  split = row_split_leaves(trainable)
  rows = jax.tree.map(lambda is_split, w: gather_rows(w, index) if is_split else w,
                      split, trainable)
  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(rows, {"index": index})

  def dense(is_split, w, g):
    return scatter_rows(jnp.zeros_like(w), index, g) if is_split else g

  def in_union(is_split, w, acc):
    if not is_split:
      return None
    now = jnp.ones(index.shape + (1,), w.dtype)
    sampled = scatter_rows(jnp.zeros((w.shape[0], 1), w.dtype), index, now) > 0
    return sampled | jnp.any(acc != 0, axis=-1, keepdims=True)

  union = jax.tree.map(in_union, split, trainable, opt_state.acc_grads)
  updates, new_state = tx.update(jax.tree.map(dense, split, trainable, grads), opt_state,
                                 trainable)
  updates = jax.tree.map(lambda u: u * jnp.asarray(update_scale, u.dtype), updates)
  new = optax.apply_updates(trainable, updates)
  keep = lambda rows_in, n, o: n if rows_in is None else jnp.where(rows_in, n, o)  # noqa: E731
  new = jax.tree.map(keep, union, new, trainable, is_leaf=lambda x: x is None)
  # Every params-shaped part of the state (the accumulator, momentum, Adam's moments):
  # outside the union the accumulator stays zero, so one rule covers them all.
  union_in_state = optax.tree_utils.tree_map_params(
      tx, lambda _, rows_in: rows_in, new_state, union, transform_non_params=lambda _: None,
      is_leaf=lambda x: x is None)
  new_state = jax.tree.map(keep, union_in_state, new_state, opt_state,
                           is_leaf=lambda x: x is None)
  return new, new_state, loss, aux, grads


class PartialFCHead(ClassifierHead):
  """Sharded, sampled combined-margin softmax (Partial FC). Owns `weight` [C_pad, D] float32.

  Attributes (besides ClassifierHead's num_classes, feature_dim, features):
    scale, m1, m2, m3: target logit s (cos(m1 theta + m2) - m3); ArcFace is
      (1, 0.5, 0), CosFace (1, 0, 0.4) (arcface_torch's `margin_list`).
    sample_rate: r, the fraction of each shard's centers in the softmax.
    num_shards: row shards = devices on the "data" axis (set by the trainer).
    row_multiple: the rows are padded to a multiple of this.
    init_std: N(0, init_std) initial centers (arcface_torch: 0.01).
  """
  features: str = "features"
  scale: float = 64.0
  m1: float = 1.0
  m2: float = 0.5
  m3: float = 0.0
  sample_rate: float = 1.0
  num_shards: int = 1
  row_multiple: int = 1024
  init_std: float = 0.01
  _minimum: ClassVar[dict[str, float]] = {**ClassifierHead._minimum, "num_shards": 1,
                                          "row_multiple": 1, "init_std": 0.0}

  def __post_init__(self):
    super().__post_init__()
    problems = []
    if not 0.0 < self.sample_rate <= 1.0:
      problems.append(f"sample_rate={self.sample_rate!r}: must be in (0, 1]")
    if self.row_multiple % self.num_shards:
      problems.append(f"row_multiple={self.row_multiple} is not a multiple of the "
                      f"{self.num_shards} devices the centers are sharded over")
    if problems:
      raise HeadArgumentError(problems)

  @property
  def rows(self) -> int:
    return padded_rows(self.num_classes, self.row_multiple)

  def samples_per_shard(self, global_batch: int) -> int:
    m = self.rows // self.num_shards
    if self.sample_rate >= 1.0:
      return m
    return min(m, max(int(self.sample_rate * m), global_batch))

  def sample(self, labels: jax.Array, mask: jax.Array) -> jax.Array | None:
    """Per shard, the sorted local rows [N, k] int32 this step uses (every positive of the
    global batch `labels` [B] plus random negatives, from the "sample" RNG stream), or
    None when r = 1 keeps them all."""
    m = self.rows // self.num_shards
    k = self.samples_per_shard(labels.shape[0])
    if k == m:
      return None
    return sample_rows(self.make_rng("sample"), labels, mask.astype(bool),
                       num_classes=self.num_classes, num_shards=self.num_shards,
                       rows_per_shard=m, k=k)

  @nn.compact
  def __call__(self, embedding, features, *, labels, mask, step, index=None):
    """loss and metrics. With `index` [N, k] (from `sample`), the "weight" param is the
    gathered slice [N, k, D] (`gather_rows`), the only centers the loss reads, so its
    gradient is [N, k, D] too; without, the head samples (r < 1) and gathers itself."""
    del step
    n, m = self.num_shards, self.rows // self.num_shards
    if index is None:
      weight = self.param("weight", nn.initializers.normal(self.init_std),
                          (self.rows, self.feature_dim), jnp.float32)
      index = self.sample(labels, mask)
      if index is None:
        index = jnp.broadcast_to(jnp.arange(m), (n, m))
        sampled = _row_shards(weight, n)
      else:
        sampled = gather_rows(weight, index)
    else:
      sampled = self.get_variable("params", "weight")
    x, labels, mask = prepare(self._input(embedding, features), labels, mask)
    x = x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), SQ_NORM_EPS))
    k = index.shape[1]
    sampled = sampled * jax.lax.rsqrt(
        jnp.maximum(jnp.sum(sampled * sampled, -1, keepdims=True), SQ_NORM_EPS))
    cos = jnp.clip(jnp.einsum("bd,nkd->bnk", x, sampled), -1.0, 1.0)
    cos = _constrain(cos, P(None, MESH_AXIS, None)).reshape(x.shape[0], n * k)
    # Where each row's label sits among the N k sampled centers (all positives are sampled).
    global_row = (jnp.arange(n)[:, None] * m + index).reshape(n * k)
    target = (global_row[None, :] == labels[:, None]) & mask[:, None]
    position = jnp.argmax(target, axis=-1)
    real = global_row < self.num_classes
    logits = _combined(cos, position, self.scale, self.m1, self.m2, self.m3)
    logits = jnp.where(real[None, :], logits, -jnp.inf)
    loss = cross_entropy_loss(logits, position, mask)
    metrics = base_metrics(jnp.where(real[None, :], cos, -2.0), position, mask)
    metrics["mean_target_cos"] = masked_mean(pick(cos, one_hot(position, n * k)),
                                             mask).astype(jnp.float32)
    metrics["sampled_classes"] = jnp.asarray(n * k, jnp.int32)
    return loss, stop(metrics)
