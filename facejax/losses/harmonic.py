"""Harmonic embeddings (FaceNet, appendix 7): train a v2 net whose embeddings a v1 net's can
be compared with, so that a gallery embedded by v1 is searched with v2 probes.

The harmonic triplet loss mixes the versions inside the triplets. The batch's v2
embeddings [B, D] (trained) and the v1 embeddings of the same images [B, D] (fixed: v1's
newest good checkpoint in `v1_workdir`) form one set of 2B unit rows with the same labels,
and the triplet loss of `mining` is taken over it: anchor, positive and negative each come
from either version. The v1 and v2 embeddings of one image are a positive pair like any
other, so the v2 map is pulled onto v1's, and the cross-version negatives keep identities
apart across versions. The v1 rows carry no gradient; a v1-v1-v1 triplet only enters the
mean as a constant.

    config.loss = dict(name="harmonic", v1_workdir="/tmp/nn1_v1", mining="semi_hard",
                       margin=0.2)

v1 sees the v2 batch as it is: the two configs must share the input size (checked against
v1's checkpoint) and the standardisation. v1's weights are not part of v2's checkpoints;
a resumed v2 run reads them again from `v1_workdir`.
"""

from __future__ import annotations

import functools
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from facejax.errors import ConfigError
from facejax.losses._masked import Metrics
from facejax.losses.heads import Head, HeadArgumentError
from facejax.losses.triplet import TRIPLET_LOSSES


def harmonic_triplet_loss(embedding: jax.Array, reference: jax.Array, labels: jax.Array,
                          mask: jax.Array, *, mining: str = "semi_hard",
                          margin: float = 0.2) -> tuple[jax.Array, Metrics]:
  """The triplet loss of `mining` over the rows of both versions.

  Args:
    embedding: [B, D] float32 v2 unit rows (trained).
    reference: [B, D] v1 unit rows of the same images (no gradient flows into them).
    labels: [B] int32; mask: [B] bool (False: a padded row, in both versions).
  Returns:
    (loss, metrics) of `triplet.TRIPLET_LOSSES[mining]` on the [2B, D] stack.
  """
  rows = jnp.concatenate([embedding, jax.lax.stop_gradient(reference).astype(embedding.dtype)])
  return TRIPLET_LOSSES[mining](rows, jnp.concatenate([labels, labels]),
                                jnp.concatenate([mask, mask]), margin=margin)


class HarmonicTripletHead(Head):
  """`harmonic_triplet_loss` against the v1 net of `v1_workdir`; no weights of its own.

  The train step passes `reference`, the v1 embeddings of the batch (`reference_embedder`).
  """
  v1_workdir: str
  mining: str = "semi_hard"
  margin: float = 0.2
  _choices: ClassVar[dict[str, tuple]] = {"mining": tuple(TRIPLET_LOSSES)}
  needs_pk_batches: ClassVar[bool] = True
  _minimum: ClassVar[dict[str, float]] = {"margin": 0.0}
  needs_reference: ClassVar[bool] = True

  def __post_init__(self):
    if not self.v1_workdir:
      raise HeadArgumentError([f"v1_workdir={self.v1_workdir!r}: give v1's workdir "
                               f"(--config.loss.v1_workdir=...)"])
    super().__post_init__()

  def __call__(self, embedding, features, *, labels, mask, step, reference=None):
    del features, step
    if reference is None:
      if not self.is_initializing():
        raise ValueError("the harmonic loss needs the v1 embeddings of the batch "
                         "(`reference`, see harmonic.reference_embedder)")
      reference = embedding  # init's placeholder batch is masked out
    return harmonic_triplet_loss(embedding, reference, labels, mask, mining=self.mining,
                                 margin=self.margin)


def reference_embedder(config: ml_collections.ConfigDict, mesh: Mesh
                       ) -> Callable[[jax.Array], jax.Array]:
  """v1's embeddings of a v2 batch: image [B, H, W, 3] float32 (sharded over the mesh's data
  axis) -> [B, D] float32 unit rows, jitted, v1's weights replicated on `mesh`.

  The net is the one v1's checkpoint meta names; its weights those of its newest good step.
  Raises ConfigError when v1's input size or embedding size differs from v2's.
  """
  # Imported here: the losses package stays free of the checkpoint and model code.
  from facejax import checkpointing  # pylint: disable=import-outside-toplevel
  from facejax.data.datasets import hw  # pylint: disable=import-outside-toplevel
  from facejax.models import create_model  # pylint: disable=import-outside-toplevel

  workdir = config.loss.v1_workdir
  manager = checkpointing.make_manager(workdir, read_only=True)
  try:
    if not manager.all_steps():
      raise ConfigError(f"config.loss.v1_workdir={workdir!r} holds no checkpoint")
    meta = checkpointing.restore_meta(manager, manager.latest_step())
    v1_config = ml_collections.ConfigDict(config.to_dict())
    v1_config.model = ml_collections.ConfigDict(meta["model"])
    problems = []
    if tuple(meta["image_size"]) != tuple(hw(config.data.image_size)):
      problems.append(f"config.loss.v1_workdir: v1 takes {tuple(meta['image_size'])} images, "
                      f"config.data.image_size={config.data.image_size!r}")
    if meta["model"]["embedding_dim"] != config.model.embedding_dim:
      problems.append(f"config.loss.v1_workdir: v1 embeds in {meta['model']['embedding_dim']}-D, "
                      f"config.model.embedding_dim={config.model.embedding_dim}")
    if problems:
      raise ConfigError(problems)
    model = create_model(v1_config.model)
    h, w = hw(config.data.image_size)
    target = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, h, w, 3)),
                                               train=False))
    target = {"params": target["params"], "batch_stats": target.get("batch_stats", {})}
    target = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), target)
    _, _, variables, _ = checkpointing.restore_latest_good(manager, workdir, v1_config, target,
                                                           None, quarantine=False)
  finally:
    manager.close()
  variables = jax.device_put(variables, NamedSharding(mesh, P()))
  # The weights are an argument, not a closure: captured arrays would be compiled in as
  # constants.
  embed = jax.jit(lambda v, images: model.apply(v, images, train=False)[0].astype(jnp.float32))
  return functools.partial(embed, variables)
