"""IResNet-18/34/50/100/200: the backbones of arcface_torch (`backbones/iresnet.py`).

Layout followed (SCALE.md §5; Deng et al., ArcFace, "improved ResNet" /
Duta et al.): 112x112 input in [-1, 1], 512-D output.

* Stem: conv3x3 3->64 (stride 1, pad 1, no bias) -> BN -> PReLU.
* Four stages of widths 64/128/256/512. The first block of every stage has
  stride 2 (112 -> 56 -> 28 -> 14 -> 7) and a conv1x1(stride)+BN shortcut.
* Block: BN(in) -> conv3x3 -> BN -> PReLU -> conv3x3 (the stride sits on
  this second conv) -> BN, plus the shortcut; no activation after the add.
* Head: BN2d(512) -> flatten (7*7*512 = 25,088) -> dropout -> Dense 512
  (bias) -> BN1d(512) with gamma frozen at 1 (beta learned).
* BN eps 1e-5, momentum 0.9 (torch 0.1). Init: conv N(0, 0.1), BN 1/0,
  PReLU 0.25, Dense torch's default U(+-1/sqrt(fan_in)) for weight and bias.
* Padding is torch's symmetric pad 1 (Flax "SAME" would pad stride-2 convs
  bottom/right only), so torch weights import unchanged apart from
  OIHW -> HWIO and the flatten order (H, W, C here, C, H, W in torch).
* Under bf16 the head (Dense and BN1d) runs in float32, as arcface_torch runs
  it outside autocast.

Parameters ("params" collection): arcface_torch's counts less the 512 frozen
gammas of the final BN1d, which are not a parameter here (use_scale=False).
r18 24,025,088; r34 34,138,816; r50 43,590,336; r100 65,155,648;
r200 118,833,408. BN running statistics live in "batch_stats". Multiply-adds
at 112x112 (conv + Dense): 2.610 / 4.460 / 6.309 / 12.090 / 23.419 G.
`width` scales the stage widths for CPU smoke runs (1.0 = paper).
"""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models.layers import (Conv, PReLU, normalized_embedding, stage_counts,
                                   torch_batch_norm)

# depth -> blocks per stage (arcface_torch iresnet18 ... iresnet200).
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3),
          200: (6, 26, 60, 6)}
STAGE_WIDTHS = (64, 128, 256, 512)
_conv_init = nn.initializers.normal(stddev=0.1)
# torch nn.Linear default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
_torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _torch_linear_bias_init(fan_in: int):
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound,
                                                                   bound)


def _conv3x3(features: int, stride: int, dtype, name: str) -> nn.Module:
  return Conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)),
              use_bias=False, kernel_init=_conv_init, dtype=dtype, name=name)


class IBasicBlock(nn.Module):
  """BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, + shortcut.

  Input [B, H, W, C_in]; output [B, H / stride, W / stride, features].
  """
  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = torch_batch_norm(train, self.dtype, "bn1")(x)
    y = _conv3x3(self.features, 1, self.dtype, "conv1")(y)
    y = torch_batch_norm(train, self.dtype, "bn2")(y)
    y = PReLU(name="prelu")(y)
    y = _conv3x3(self.features, self.stride, self.dtype, "conv2")(y)
    y = torch_batch_norm(train, self.dtype, "bn3")(y)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = Conv(self.features, (1, 1), strides=(self.stride, self.stride), padding="VALID",
               use_bias=False, kernel_init=_conv_init, dtype=self.dtype,
               name="downsample_conv")(x)
      x = torch_batch_norm(train, self.dtype, "downsample_bn")(x)
    return x + y


class IResNet(nn.Module):
  """IResNet-`depth` face embedder (arcface_torch layout).

  Attributes:
    depth: 18, 34, 50, 100 or 200; picks the blocks per stage unless
      `blocks` is given.
    blocks: optional explicit blocks per stage (4 ints), for unit tests.
    embedding_dim: output size (512 in every arcface_torch recipe).
    dropout_rate: dropout before the Dense (arcface_torch trains with 0).
    width: multiplier on the stage widths 64/128/256/512 (paper: 1.0).
    dtype: compute dtype of the convolutions (params stay float32; the head
      runs in float32).
  """
  depth: int = 50
  blocks: Sequence[int] | None = None
  embedding_dim: int = 512
  dropout_rate: float = 0.0
  width: float = 1.0
  dtype: Any = jnp.float32

  def stage_blocks(self) -> tuple[int, ...]:
    return stage_counts(self.blocks, self.depth, BLOCKS, "blocks")

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Embeds a batch of aligned faces.

    Args:
      images: [B, H, W, 3] float32 in about [-1, 1] ((x - 127.5) / 127.5 in
        arcface_torch; facejax's (x - 127.5) / 128 is within 0.4% of it).
        112x112 in every recipe; any H, W >= 16 works (the Dense fan-in
        follows the final map).
      train: BatchNorm uses batch statistics (and updates its running
        averages) and dropout is active when True.

    Returns:
      (embedding, features): embedding [B, embedding_dim] float32 of unit L2
      norm; features [B, embedding_dim] float32, the BN1d output before the
      normalisation (what margin heads take).
    """
    widths = [max(1, int(round(c * self.width))) for c in STAGE_WIDTHS]
    x = images.astype(self.dtype)
    x = _conv3x3(widths[0], 1, self.dtype, "conv1")(x)
    x = torch_batch_norm(train, self.dtype, "bn1")(x)
    x = PReLU(name="prelu")(x)
    for s, (n_blocks, features) in enumerate(zip(self.stage_blocks(), widths), start=1):
      for b in range(n_blocks):
        x = IBasicBlock(features, stride=2 if b == 0 else 1, dtype=self.dtype,
                        name=f"layer{s}_{b}")(x, train)
    x = torch_batch_norm(train, self.dtype, "bn2")(x)
    x = x.reshape((x.shape[0], -1))
    x = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(x)
    x = x.astype(jnp.float32)
    x = nn.Dense(self.embedding_dim, kernel_init=_torch_linear_init,
                 bias_init=_torch_linear_bias_init(x.shape[-1]), dtype=jnp.float32,
                 name="fc")(x)
    x = torch_batch_norm(train, jnp.float32, "features", use_scale=False)(x)
    return normalized_embedding(x)


# Registry entries ("iresnet50" etc.): the depth is fixed by the name.
class IResNet18(IResNet):
  depth: int = 18


class IResNet34(IResNet):
  depth: int = 34


class IResNet50(IResNet):
  depth: int = 50


class IResNet100(IResNet):
  depth: int = 100


class IResNet200(IResNet):
  depth: int = 200
