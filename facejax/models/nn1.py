"""FaceNet NN1: the Zeiler&Fergus-style net of Schroff et al. 2015, Table 1.

Source followed: the FaceNet paper (arXiv 1503.03832) Table 1. The table
prints sizes, parameters and multiply-adds only; what it leaves open is
decided as follows:

* Padding: symmetric (conv 7x7 p=3, conv 3x3 p=1, pools 3x3/2 p=1, floor),
  which reproduces the printed sizes 220 -> 110 -> 55 -> 28 -> 14 -> 7.
* Pools are max pools (Table 1 does not print the type; ZF-net uses max).
* rnorm is cross-channel LRN with GoogLeNet's size 5, alpha 1e-4, beta 0.75,
  k 1, placed after pool1 and after conv2 (before pool2), as the table orders.
* The "concat" row has no parameters and no stated purpose: identity.
* fc1 and fc2 are maxout with p=2 over adjacent units (8192 linear -> 4096).
* No BatchNorm (the paper has none); ReLU after every conv; the maxout is the
  non-linearity of fc1/fc2; fc7128 is linear, then L2 normalisation.
  `batch_norm=True` is an opt-in deviation (BatchNorm between each conv and its
  ReLU, as OpenFace and davidsandberg do for their FaceNet ports): without it,
  a small NN1 trained from scratch on LFW alone starts with nearly collapsed
  embeddings (post-ReLU features share one dominant direction) and semi-hard
  mining collapses it completely within a few hundred steps.
* Conv init: He-normal (fan-in), matching "random init similar to GoogLeNet"
  for ReLU nets; dense layers use LeCun-normal.

At 220x220 and 128-D the net has 140.0M parameters and 1.606 G multiply-adds
(paper: 140M, 1.6B). `conv_width` and `maxout_features` scale it down for CPU
runs; `input` sizes other than 220 are accepted (the fc1 fan-in follows).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models.layers import Conv, LocalResponseNorm, MaxoutDense, max_pool, normalized_embedding

_he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class NN1(nn.Module):
  """FaceNet NN1.

  Attributes:
    embedding_dim: size of the L2-normalised embedding (paper: 128).
    maxout_features: outputs of fc1 and fc2 after maxout (paper: 4096).
    conv_width: multiplier on every conv's channel count (paper: 1.0).
    dtype: compute dtype (params stay float32).
  """
  embedding_dim: int = 128
  maxout_features: int = 4096
  conv_width: float = 1.0
  batch_norm: bool = False
  dtype: Any = jnp.float32

  def _conv(self, x, features, kernel, name, train):
    features = max(1, int(round(features * self.conv_width)))
    pad = (kernel - 1) // 2
    stride = 2 if name == "conv1" else 1
    x = Conv(features, (kernel, kernel), strides=(stride, stride),
             padding=((pad, pad), (pad, pad)), dtype=self.dtype,
             kernel_init=_he_normal, use_bias=not self.batch_norm, name=name)(x)
    if self.batch_norm:
      # Batch statistics of the global batch: under jit on a sharded batch XLA
      # reduces across devices, so every replica keeps identical stats.
      x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3,
                       dtype=self.dtype, name=name + "_bn")(x)
    return nn.relu(x)

  @staticmethod
  def _pool(x):
    return max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Embeds a batch of faces.

    Args:
      images: [B, H, W, 3] float32, standardised (220x220 in the paper).
      train: BatchNorm uses batch statistics (and updates its running
        averages) when True, the running averages when False.

    Returns:
      `layers.normalized_embedding`'s (embedding [B, embedding_dim] float32,
      unit-norm; features [B, embedding_dim] in the net's dtype).
    """
    x = images.astype(self.dtype)
    x = self._conv(x, 64, 7, "conv1", train)
    x = self._pool(x)
    x = LocalResponseNorm(name="rnorm1")(x)
    x = self._conv(x, 64, 1, "conv2a", train)
    x = self._conv(x, 192, 3, "conv2", train)
    x = LocalResponseNorm(name="rnorm2")(x)
    x = self._pool(x)
    x = self._conv(x, 192, 1, "conv3a", train)
    x = self._conv(x, 384, 3, "conv3", train)
    x = self._pool(x)
    x = self._conv(x, 384, 1, "conv4a", train)
    x = self._conv(x, 256, 3, "conv4", train)
    x = self._conv(x, 256, 1, "conv5a", train)
    x = self._conv(x, 256, 3, "conv5", train)
    x = self._conv(x, 256, 1, "conv6a", train)
    x = self._conv(x, 256, 3, "conv6", train)
    x = self._pool(x)
    x = x.reshape((x.shape[0], -1))
    x = MaxoutDense(self.maxout_features, dtype=self.dtype, name="fc1")(x)
    x = MaxoutDense(self.maxout_features, dtype=self.dtype, name="fc2")(x)
    x = nn.Dense(self.embedding_dim, dtype=self.dtype, name="fc7128")(x)
    return normalized_embedding(x)
