"""Masked-batch helpers shared by the classification and angular-margin losses.

Conventions as in :mod:`facejax.losses.triplet`: ``mask [B]`` bool is False for padded rows,
which are zeroed before any arithmetic, and every masked reduction is finite (0, not NaN) when
no row is valid.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Metrics = dict[str, jax.Array]
Params = dict[str, jax.Array]

# Floor on squared norms before rsqrt/sqrt: a zeroed (padded) row would otherwise give 0/0 in the
# forward pass and an infinite derivative of sqrt at 0 in the backward pass.
SQ_NORM_EPS = 1e-12


def upcast(x) -> jax.Array:
  """At least float32: exp/arccos/polynomials of cos lose too much in bf16; float64 stays."""
  x = jnp.asarray(x)
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def prepare(features, labels, mask):
  """Upcast features, zero padded rows; returns ``(features [B, D], labels [B], mask [B])``."""
  mask = jnp.asarray(mask).astype(bool)
  features = upcast(features)
  features = jnp.where(mask[:, None], features, jnp.zeros_like(features))
  return features, jnp.asarray(labels), mask


def masked_mean(values, mask):
  """Mean of ``values [B]`` over ``mask [B]``; 0 (not NaN) when nothing is valid."""
  total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
  count = jnp.sum(mask, dtype=jnp.int32)
  return total / jnp.maximum(count, 1).astype(total.dtype)


def one_hot(labels, num_classes):
  """``[B, C]`` bool; an out-of-range label (e.g. on a padded row) gives an all-False row."""
  return jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)


def pick(values, target):
  """``values[i, labels[i]]`` as ``[B]``, given ``target = one_hot(labels, C)``.

  A masked sum rather than a gather, so a junk label on a padded row cannot fault or wrap.
  """
  return jnp.sum(jnp.where(target, values, jnp.zeros_like(values)), axis=-1)


def cross_entropy_loss(logits, labels, mask):
  """Mean softmax cross-entropy over valid rows; ``logits [B, C]``, returns a scalar."""
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  per_row = -pick(log_probs, one_hot(labels, logits.shape[-1]))
  return masked_mean(per_row, mask)


def base_metrics(scores, labels, mask) -> Metrics:
  """Top-1 ``accuracy`` (float32) of ``scores [B, C]`` and ``num_valid`` (int32)."""
  correct = (jnp.argmax(scores, axis=-1) == labels) & mask
  num_valid = jnp.sum(mask, dtype=jnp.int32)
  accuracy = jnp.sum(correct, dtype=jnp.int32).astype(jnp.float32) / jnp.maximum(
      num_valid, 1).astype(jnp.float32)
  return {"accuracy": accuracy, "num_valid": num_valid}


def stop(metrics: Metrics) -> Metrics:
  """Metrics are logged, never differentiated."""
  return jax.tree_util.tree_map(jax.lax.stop_gradient, metrics)
