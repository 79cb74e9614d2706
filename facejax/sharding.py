"""Where each array of the training state lives on the device mesh.

Everything is replicated over the 1-D mesh axis "data" except the rows of a
Partial FC head's centers (`losses.partial_fc`), which are split over it,
and the optimizer state that mirrors them (momentum, Adam moments), which
`optax.tree_utils.tree_map_params` finds inside any optax state. A state
placed by these shardings and a step jitted with them keep C x D / N center
floats per device; XLA inserts the collectives the step needs.
"""

from typing import Any

import jax
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXIS = "data"
# Leaves of the trainable tree {"model": ..., "head": ...} split by rows.
SHARDED_HEAD_LEAVES = ("weight",)


def _trainable_specs(trainable: Any) -> Any:
  """PartitionSpec per leaf of {"model": params, "head": head params}."""
  def spec(path, leaf):
    keys = tuple(getattr(k, "key", None) for k in path)
    if keys[:1] == ("head",) and keys[-1] in SHARDED_HEAD_LEAVES and leaf.ndim == 2:
      return P(MESH_AXIS, None)
    return P()
  return jax.tree_util.tree_map_with_path(spec, trainable)


def trainable_shardings(trainable: Any, opt_state: Any, tx: optax.GradientTransformation,
                        mesh: Mesh) -> tuple[Any, Any]:
  """NamedShardings of {"model": params, "head": head params} and of `tx`'s state for them
  (concrete or abstract trees): the Partial FC rows and their moments split, all else
  replicated."""
  replicated = NamedSharding(mesh, P())
  named = jax.tree.map(lambda s: NamedSharding(mesh, s), _trainable_specs(trainable),
                       is_leaf=lambda x: isinstance(x, P))
  opt = optax.tree_utils.tree_map_params(
      tx, lambda _, s: s, opt_state, named,
      transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, NamedSharding))
  return named, opt


def state_shardings(state: Any, tx: optax.GradientTransformation, mesh: Mesh) -> Any:
  """NamedShardings for every leaf of `state` (a TrainState, concrete or abstract)."""
  named, opt = trainable_shardings(state.trainable(), state.opt_state, tx, mesh)
  everything = jax.tree.map(lambda _: NamedSharding(mesh, P()), state)
  return everything.replace(params=named["model"], head=named["head"], opt_state=opt)


def row_masked_update(tx: optax.GradientTransformation, update_mask: Any, trainable: Any,
                      updates: Any, new_opt_state: Any, old_opt_state: Any) -> tuple[Any, Any]:
  """Keeps the rows a head did not sample as they were: no update, no optimizer-state change.

  `update_mask` is {"head": {leaf: [rows, 1] bool}} for the head leaves that
  sampled rows this step (from the head's "update_mask" collection); every
  other leaf updates normally. Returns (updates, opt_state).
  """
  def mask_for(path, leaf):
    keys = tuple(getattr(k, "key", None) for k in path)
    node = update_mask
    for k in keys:
      if not isinstance(node, dict) or k not in node:
        return True
      node = node[k]
    return node
  masks = jax.tree_util.tree_map_with_path(mask_for, trainable)
  updates = jax.tree.map(lambda m, u: jax.numpy.where(m, u, 0), masks, updates)
  state_masks = optax.tree_utils.tree_map_params(
      tx, lambda _, m: m, new_opt_state, masks, transform_non_params=lambda _: True)
  opt_state = jax.tree.map(lambda m, new, old: jax.numpy.where(m, new, old), state_masks,
                           new_opt_state, old_opt_state)
  return updates, opt_state
