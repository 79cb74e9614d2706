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


def row_split_leaves(trainable: Any) -> Any:
  """True per leaf of {"model": params, "head": head params} split by rows over the mesh."""
  def split(path, leaf):
    keys = tuple(getattr(k, "key", None) for k in path)
    return keys[:1] == ("head",) and keys[-1] in SHARDED_HEAD_LEAVES and leaf.ndim == 2
  return jax.tree_util.tree_map_with_path(split, trainable)


def _trainable_specs(trainable: Any) -> Any:
  """PartitionSpec per leaf of {"model": params, "head": head params}."""
  return jax.tree.map(lambda split: P(MESH_AXIS, None) if split else P(),
                      row_split_leaves(trainable))


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
