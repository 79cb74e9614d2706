"""MobileFaceNet as arcface_torch builds it (`backbones/mobilefacenet.py`, "mbf").

Layout followed (SCALE.md §5; Chen et al. 2018, with arcface_torch's
`scale` widening): 112x112 input, 512-D output.

* ConvBlock = conv (no bias) -> BN -> PReLU; LinearBlock = conv -> BN.
* DepthWise(in, out, g, s) = ConvBlock 1x1 in->g -> ConvBlock 3x3 with g
  groups and stride s -> LinearBlock 1x1 g->out; a Residual block is a
  stride-1 DepthWise plus the identity.
* Body for blocks (b1, b2, b3, b4) and scale k (mbf: (1, 4, 6, 2), k = 2):
  ConvBlock 3x3 s2 3->64k; then b1 == 1: ConvBlock 3x3 64k->64k with 64
  groups, else b1 Residuals (g 128); DepthWise 64k->64k g128 s2 + b2
  Residuals (g 128); DepthWise 64k->128k g256 s2 + b3 Residuals (g 256);
  DepthWise 128k->128k g512 s2 + b4 Residuals (g 256); ConvBlock 1x1
  128k->512.
* GDC head: 7x7 depthwise LinearBlock (valid) -> flatten -> Dense 512 (no
  bias) -> BN1d.
* BN eps 1e-5, momentum 0.9 (torch 0.1). Init: Kaiming normal fan_out for
  convs and the Dense (torch's kaiming_normal_, untruncated), BN 1/0,
  PReLU 0.25. Under bf16 the last ConvBlock and the GDC head run in float32,
  as arcface_torch runs them outside autocast.

Parameters ("params" collection; BN running statistics are "batch_stats"):
mbf 2,059,520 (0.438 G multiply-adds at 112x112); mbf_large (blocks
(2, 8, 12, 4), scale 4) 6,314,880 (1.82 G).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models.layers import Conv, PReLU, normalized_embedding, torch_batch_norm

_kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ConvBN(nn.Module):
  """Conv (no bias) -> BN -> optional PReLU: ConvBlock (prelu) or LinearBlock.

  Input [B, H, W, C_in]; output [B, H', W', features] in `dtype`.
  """
  features: int
  kernel: int = 1
  stride: int = 1
  groups: int = 1
  padding: int = 0
  prelu: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    p = self.padding
    x = Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
             padding=((p, p), (p, p)), feature_group_count=self.groups, use_bias=False,
             kernel_init=_kaiming_fan_out, dtype=self.dtype, name="conv")(x)
    x = torch_batch_norm(train, self.dtype, "bn")(x)
    return PReLU(name="prelu")(x) if self.prelu else x


class DepthWise(nn.Module):
  """1x1 expand to `groups` -> 3x3 depthwise (stride) -> 1x1 linear project, +x if residual.

  Input [B, H, W, C_in]; output [B, H / stride, W / stride, features].
  """
  features: int
  groups: int
  stride: int = 1
  residual: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = ConvBN(self.groups, dtype=self.dtype, name="expand")(x, train)
    y = ConvBN(self.groups, 3, self.stride, groups=self.groups, padding=1, dtype=self.dtype,
               name="depthwise")(y, train)
    y = ConvBN(self.features, prelu=False, dtype=self.dtype, name="project")(y, train)
    return x + y if self.residual else y


class MobileFaceNet(nn.Module):
  """MobileFaceNet face embedder (arcface_torch "mbf" / "mbf_large").

  Attributes:
    blocks: (b1, b2, b3, b4) as in the module docstring; (1, 4, 6, 2) = mbf,
      (2, 8, 12, 4) with scale 4 = mbf_large.
    scale: width multiplier of the body (64k / 128k channels).
    embedding_dim: output size.
    dtype: compute dtype of the body (params stay float32; the last
      ConvBlock and the GDC head run in float32).
  """
  blocks: Sequence[int] = (1, 4, 6, 2)
  scale: int = 2
  embedding_dim: int = 512
  dtype: Any = jnp.float32

  def _residuals(self, x, n, groups, train, name):
    for i in range(n):
      x = DepthWise(x.shape[-1], groups, residual=True, dtype=self.dtype,
                    name=f"{name}_{i}")(x, train)
    return x

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Embeds a batch of aligned faces.

    Args:
      images: [B, 112, 112, 3] float32 in about [-1, 1]. The GDC head's 7x7
        depthwise kernel needs a 7x7 final map, i.e. a 112x112 input.
      train: BatchNorm uses batch statistics and updates its running averages.

    Returns:
      (embedding, features): embedding [B, embedding_dim] float32 of unit L2
      norm; features [B, embedding_dim] float32 before the normalisation.
    """
    if len(self.blocks) != 4:
      raise ValueError(f"config.model.blocks={self.blocks!r} must give 4 stages")
    b1, b2, b3, b4 = (int(b) for b in self.blocks)
    c64, c128 = 64 * self.scale, 128 * self.scale
    x = images.astype(self.dtype)
    x = ConvBN(c64, 3, 2, padding=1, dtype=self.dtype, name="conv1")(x, train)
    if b1 == 1:
      x = ConvBN(c64, 3, 1, groups=64, padding=1, dtype=self.dtype, name="conv2_dw")(x, train)
    else:
      x = self._residuals(x, b1, 128, train, "res2")
    x = DepthWise(c64, 128, stride=2, dtype=self.dtype, name="dw3")(x, train)
    x = self._residuals(x, b2, 128, train, "res3")
    x = DepthWise(c128, 256, stride=2, dtype=self.dtype, name="dw4")(x, train)
    x = self._residuals(x, b3, 256, train, "res4")
    x = DepthWise(c128, 512, stride=2, dtype=self.dtype, name="dw5")(x, train)
    x = self._residuals(x, b4, 256, train, "res5")
    x = ConvBN(512, dtype=jnp.float32, name="conv_sep")(x.astype(jnp.float32), train)
    if x.shape[1:3] != (7, 7):
      raise ValueError(f"MobileFaceNet's GDC head needs a 7x7 final map (112x112 input), "
                       f"got {x.shape[1]}x{x.shape[2]}")
    x = ConvBN(512, 7, groups=512, prelu=False, dtype=jnp.float32, name="gdc_dw")(x, train)
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(self.embedding_dim, use_bias=False, kernel_init=_kaiming_fan_out,
                 dtype=jnp.float32, name="gdc_fc")(x)
    x = torch_batch_norm(train, jnp.float32, "features")(x)
    return normalized_embedding(x)


# Registry entries: "mobilefacenet" is arcface_torch's mbf, "mobilefacenet_large" its mbf_large.
class MobileFaceNetLarge(MobileFaceNet):
  blocks: Sequence[int] = (2, 8, 12, 4)
  scale: int = 4
