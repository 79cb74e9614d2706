"""Reusable layers of the FaceNet-family nets: LRN, L2 pooling, maxout dense, L2 normalisation."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-10) -> jax.Array:
  """Projects `x` onto the unit hypersphere along `axis`.

  The norm is computed in float32 even for bf16 activations, because the
  triplet margin (0.2 on squared distances in [0, 4]) is below bf16 resolution
  near 1.
  """
  x32 = x.astype(jnp.float32)
  norm_sq = jnp.sum(jnp.square(x32), axis=axis, keepdims=True)
  return x32 * jax.lax.rsqrt(jnp.maximum(norm_sq, eps))


class LocalResponseNorm(nn.Module):
  """Cross-channel local response normalisation, Torch `SpatialCrossMapLRN` form.

  y_c = x_c / (k + alpha / size * sum_{c' in window(c)} x_{c'}^2) ** beta,
  with a window of `size` channels centred on c and zeros outside the channel
  range. Defaults (size 5, alpha 1e-4, beta 0.75, k 1) are GoogLeNet's and
  OpenFace's; the FaceNet paper prints "rnorm" without parameters.

  Input and output: [B, H, W, C].
  """
  size: int = 5
  alpha: float = 1e-4
  beta: float = 0.75
  k: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    sq = jnp.square(x.astype(jnp.float32))
    lo = (self.size - 1) // 2
    hi = self.size - 1 - lo
    window_sum = jax.lax.reduce_window(
        sq, 0.0, jax.lax.add,
        window_dimensions=(1, 1, 1, self.size),
        window_strides=(1, 1, 1, 1),
        padding=((0, 0), (0, 0), (0, 0), (lo, hi)))
    scale = jnp.power(self.k + (self.alpha / self.size) * window_sum, -self.beta)
    return (x.astype(jnp.float32) * scale).astype(x.dtype)


class L2Pool(nn.Module):
  """L2 ("p-norm", p=2) pooling of FaceNet's Inception modules.

  y = sqrt(sum_{window} x^2 + eps) per channel, the paper's "instead of the
  spatial max the L2 norm is computed". Windows are zero-padded by `padding`
  pixels each side; zeros add nothing to the sum, so a padded window is the
  L2 norm of its in-image taps (OpenFace instead pools unpadded and zero-pads
  the branch output; NETS.md §7.5). `eps` keeps the gradient finite on
  all-zero windows, which post-ReLU inputs often produce (d sqrt(s)/ds is
  infinite at 0). Computed in float32 for bf16 inputs, like the LRN.

  Input [B, H, W, C]; output [B, H', W', C] with
  H' = (H + 2 * padding - window) // stride + 1.
  """
  window: int = 3
  stride: int = 1
  padding: int = 1
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    sq = jnp.square(x.astype(jnp.float32))
    p = self.padding
    sums = jax.lax.reduce_window(
        sq, 0.0, jax.lax.add,
        window_dimensions=(1, self.window, self.window, 1),
        window_strides=(1, self.stride, self.stride, 1),
        padding=((0, 0), (p, p), (p, p), (0, 0)))
    return jnp.sqrt(sums + self.eps).astype(x.dtype)


class MaxoutDense(nn.Module):
  """Dense layer with maxout over `num_pieces` linear units per output.

  NN1's fc1/fc2 have 8192 linear units and 4096 outputs (the paper's
  parameter counts fix this). The pairing rule is not published; we group
  adjacent units (unit 2i and 2i+1 -> output i). From a random init every
  pairing is equivalent up to a permutation of the weights.

  Input [..., D_in]; output [..., features].
  """
  features: int
  num_pieces: int = 2
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = nn.Dense(self.features * self.num_pieces, dtype=self.dtype,
                 kernel_init=self.kernel_init, name="linear")(x)
    y = y.reshape(y.shape[:-1] + (self.features, self.num_pieces))
    return jnp.max(y, axis=-1)
