"""OpenFace nn4.small2: the 96x96 FaceNet NN4 variant with BatchNorm (3,733,968 params).

Sources: OpenFace `models/openface/nn4.small2.def.lua` (layer table and
widths), dpnn `Inception` and torch/nn `DepthConcat`, `SpatialLPPooling`,
`SpatialBatchNormalization` (module mechanics), and OpenFace issues #349/#351
and the Keras-OpenFace port for the released `nn4.small2.v1` weights. NN4 with
4b/4c/4d removed and narrower 5a/5b.

Decisions:

* Every conv is conv (with bias) -> BatchNorm (affine, eps 1e-5, Torch
  momentum 0.1 = flax momentum 0.9) -> ReLU, as OpenFace. The conv bias is
  redundant in front of BN (its gradient is zero in train mode) but is kept so
  that the parameter count (3,733,968) and a weight import match OpenFace.
  Flax updates the running variance with the biased batch variance, Torch
  with the unbiased one: a <1% difference in the running stats only.
* LRN: Torch `SpatialCrossMapLRN` (size 5, alpha 1e-4, beta 0.75, k 1), after
  pool1 and after conv3 (before pool2).
* L2 pooling: the shared `layers.L2Pool`, sqrt(sum of squares over the 3x3
  window + 1e-6), with no padding (def) or stride 3 (v1). The eps keeps the
  gradient finite on all-zero (post-ReLU) windows; it shifts the output by at
  most 1e-3, immaterial for imported weights.
* Branch outputs smaller than the module's output (unpadded L2 pools, the
  released geometry's strided pools) are zero-padded, centred (floor before,
  ceil after), after the pool projection's conv+BN+ReLU, as Torch
  `DepthConcat` does. Concat order is dpnn's: 3x3, 5x5, pool, 1x1.
* `pooling_geometry="def"` follows nn4.small2.def.lua (after the 2016 pooling
  fix); `"v1"` follows the released nn4.small2.v1.t7, which was trained
  before that fix with strided, unpadded pool branches (max 3x3 stride 2, L2
  stride 3; `POOLING_GEOMETRIES`), needed to load those weights. Both have
  the same parameters.
* The final 3x3 average pool is a global spatial mean: identical at 96x96
  (the map is 3x3) and it lets other input sizes reach the 736->128 Linear.
* Init: Torch's default U(+-1/sqrt(fan_in)) for conv and Linear weights,
  zero biases (all but the Linear's are cancelled by BN anyway).
* The released weights expect RGB in [0, 1]; the "fixed" standardisation of
  this repo gives (x - 127.5) / 128, i.e. map x -> x * 128 / 255 + 0.5 before
  applying imported weights. Training from scratch does not care (BN follows).

Inputs must be at least 65x65 (5a's unpadded 3x3 L2 pool needs a 3x3 map).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models.layers import Conv, L2Pool, LocalResponseNorm, max_pool, normalized_embedding

# Torch7 default init for conv/Linear weights: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_torch_default = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

MIN_INPUT_SIZE = 65

# Inception widths: (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, stride
# of the 3x3/5x5 convs). 0 = branch absent; pool proj 0 = pooled input passed on.
_INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32, 1),
    "3b": (64, 96, 128, 32, 64, 64, 1),
    "3c": (0, 128, 256, 32, 64, 0, 2),
    "4a": (256, 96, 192, 32, 64, 128, 1),
    "4e": (0, 160, 256, 64, 128, 0, 2),
    "5a": (256, 96, 384, 0, 0, 96, 1),
    "5b": (256, 96, 384, 0, 0, 96, 1),
}

# Pool branch per module: (kind, stride, symmetric pad), window always 3x3.
POOLING_GEOMETRIES = {
    # nn4.small2.def.lua: stride-1 L2 pools are unpadded (the concat zero-pads them).
    "def": {"3a": ("max", 1, 1), "3b": ("l2", 1, 0), "3c": ("max", 2, 1),
            "4a": ("l2", 1, 0), "4e": ("max", 2, 1), "5a": ("l2", 1, 0),
            "5b": ("max", 1, 1)},
    # Released nn4.small2.v1 weights: trained before dpnn's 2016 pooling fix
    # (OpenFace issue #142); the geometry the Keras-OpenFace port uses to
    # reproduce their LFW accuracy.
    "v1": {"3a": ("max", 2, 0), "3b": ("l2", 3, 0), "3c": ("max", 2, 0),
           "4a": ("l2", 3, 0), "4e": ("max", 2, 0), "5a": ("l2", 3, 0),
           "5b": ("max", 2, 0)},
}


def _pool3x3(x: jax.Array, kind: str, stride: int, pad: int) -> jax.Array:
  """3x3 max or L2 pool of [B, H, W, C]; max pads with -inf, L2 with zeros."""
  h, w = x.shape[1] + 2 * pad, x.shape[2] + 2 * pad
  if h < 3 or w < 3:
    raise ValueError(f"a 3x3 pool got a {x.shape[1]}x{x.shape[2]} map: nn4_small2 "
                     f"needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}")
  padding = ((pad, pad), (pad, pad))
  if kind == "max":
    return max_pool(x, (3, 3), strides=(stride, stride), padding=padding)
  # The shared parameter-free L2Pool, detached (parent=None) so that this
  # helper also works outside a module.
  return L2Pool(stride=stride, padding=pad, parent=None).apply({}, x)


def _pad_to(x: jax.Array, h: int, w: int) -> jax.Array:
  """Centred zero-pad of [B, h', w', C] to [B, h, w, C] (Torch DepthConcat rule)."""
  dh, dw = h - x.shape[1], w - x.shape[2]
  if dh == 0 and dw == 0:
    return x
  return jnp.pad(x, ((0, 0), (dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2), (0, 0)))


class ConvBN(nn.Module):
  """Conv (with bias) -> BatchNorm -> ReLU, OpenFace's unit. [B,H,W,Cin] -> [B,H',W',features]."""
  features: int
  kernel: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    pad = (self.kernel - 1) // 2  # Torch pads: 7x7 p3, 5x5 p2, 3x3 p1, 1x1 p0
    x = Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
             padding=((pad, pad), (pad, pad)), dtype=self.dtype,
             kernel_init=_torch_default, name="conv")(x)
    # Under jit on a sharded global batch, XLA reduces the batch statistics
    # across devices, so they are the global batch's (no pmean needed).
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


class Inception(nn.Module):
  """One dpnn Inception module of nn4.small2.

  Attributes:
    widths: (#1x1, #3x3r, #3x3, #5x5r, #5x5, pool proj, conv stride), see _INCEPTION.
    pool: (kind "max"|"l2", stride, pad) of the pool branch.
  Input [B, H, W, Cin]; output [B, H', W', Cout] with H' = the 3x3 branch's size.
  """
  widths: tuple
  pool: tuple
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    n1, n3r, n3, n5r, n5, proj, stride = self.widths
    conv = lambda f, k, name, s=1: ConvBN(f, k, s, dtype=self.dtype, name=name)
    branches = [conv(n3, 3, "branch3x3", stride)(conv(n3r, 1, "branch3x3_reduce")(x, train), train)]
    if n5:
      branches.append(conv(n5, 5, "branch5x5", stride)(conv(n5r, 1, "branch5x5_reduce")(x, train),
                                                       train))
    pooled = _pool3x3(x, *self.pool)
    branches.append(conv(proj, 1, "pool_proj")(pooled, train) if proj else pooled)
    if n1:
      branches.append(conv(n1, 1, "branch1x1")(x, train))
    h, w = branches[0].shape[1:3]
    # Padding comes after the projection: the border of a padded branch is 0,
    # not ReLU(BN(bias)), exactly as DepthConcat produces it.
    return jnp.concatenate([_pad_to(b, h, w) for b in branches], axis=-1)


class NN4Small2(nn.Module):
  """OpenFace nn4.small2 (registry name "nn4_small2").

  Attributes:
    embedding_dim: size of the L2-normalised embedding (OpenFace: 128).
    pooling_geometry: "def" (nn4.small2.def.lua) or "v1" (the released
      nn4.small2.v1 weights); see POOLING_GEOMETRIES.
    dtype: compute dtype (params stay float32).
  """
  embedding_dim: int = 128
  pooling_geometry: str = "def"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Embeds a batch of faces.

    Args:
      images: [B, H, W, 3] float32, H, W >= 65 (96x96 in OpenFace).
      train: BatchNorm uses (and updates the running averages of) batch
        statistics when True, the running averages when False.

    Returns:
      (embedding, features): embedding [B, embedding_dim] float32 of unit L2
      norm; features [B, embedding_dim], the same vectors before the
      normalisation, in the net's dtype.
    """
    if self.pooling_geometry not in POOLING_GEOMETRIES:
      raise ValueError(f"pooling_geometry={self.pooling_geometry!r}: use one of "
                       f"{sorted(POOLING_GEOMETRIES)}")
    geometry = POOLING_GEOMETRIES[self.pooling_geometry]
    x = images.astype(self.dtype)
    x = ConvBN(64, 7, 2, dtype=self.dtype, name="conv1")(x, train)
    x = max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    x = LocalResponseNorm(name="lrn1")(x)
    x = ConvBN(64, 1, dtype=self.dtype, name="conv2")(x, train)
    x = ConvBN(192, 3, dtype=self.dtype, name="conv3")(x, train)
    x = LocalResponseNorm(name="lrn2")(x)
    x = max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for name in ("3a", "3b", "3c", "4a", "4e", "5a", "5b"):
      x = Inception(_INCEPTION[name], geometry[name], dtype=self.dtype,
                    name=f"inception_{name}")(x, train)
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
    x = nn.Dense(self.embedding_dim, dtype=self.dtype, kernel_init=_torch_default,
                 name="linear")(x)
    return normalized_embedding(x)
