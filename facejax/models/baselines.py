"""Parameter-free reference "nets" for sanity baselines."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models.layers import normalized_embedding


class RawPixels(nn.Module):
  """Embeds a face as its own standardised pixels, L2-normalised.

  The raw-pixel distance is the floor any trained net must clear on LFW.
  With `configs/nn1.py:cpu`'s preprocessing (unaligned originals, 140 px
  centre crop, 96x96) and cosine distance it measures 0.584 ± 0.058
  accuracy (AUC 0.642) on View 1 DevTest and 0.609 ± 0.025 on View 2.
  With "euclidean" distance on unit vectors the ranking equals cosine.

  images [B, H, W, 3] float32 -> (embedding [B, H*W*3] float32 of unit norm,
  features [B, H*W*3], the flattened pixels).
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    del train
    return normalized_embedding(images.reshape((images.shape[0], -1)))
