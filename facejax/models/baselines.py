"""Parameter-free reference "nets" for sanity baselines."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models.layers import normalized_embedding


class RawPixels(nn.Module):
  """Embeds a face as its own standardised pixels, L2-normalised.

  The raw-pixel distance is the floor any trained net must clear on LFW
  (about 0.62 accuracy on View 1 DevTest with cosine distance, issue #2).
  With "euclidean" distance on unit vectors the ranking equals cosine.

  images [B, H, W, 3] float32 -> [B, H*W*3] float32 of unit norm.
  """
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
    del train
    return normalized_embedding(self, images.reshape((images.shape[0], -1)))
