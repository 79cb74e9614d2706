"""SphereFace-20/36/64: the residual PReLU nets of Liu et al. 2017 (no BatchNorm).

Source followed: wy1iu/sphereface, `train/code/sphereface_model.prototxt`
(SpherefaceNet-20) and `train/code/make_spherenet.py` (the authors' generator
for 20/36/64). Decisions on the points that source leaves open:

* Unit counts per stage (stage widths 64/128/256/512): 20 -> (1, 2, 4, 1),
  36 -> (2, 4, 8, 2), 64 -> (3, 8, 16, 3), as in the authors'
  `make_spherenet.py`; depth = 4 stage openers + 2 convs per unit. Only 20
  and 64 have official prototxts; 36 has none, but the same official
  generator script lists it.
  The hand-written `model_lib/Sphereface-64/sphereface_64_model.prototxt` has
  only 7 units in stage 2 (62 convs); we follow the generator (64 convs),
  and `units=(3, 7, 16, 3)` reproduces that prototxt if needed.
* Each stage opens with a 3x3 stride-2 conv (pad 1) + PReLU; each residual
  unit is out = x + PReLU(conv3x3(PReLU(conv3x3(x)))), nothing after the add.
  112x96 -> 56x48 -> 28x24 -> 14x12 -> 7x6, then fc5 (7*6*512 -> 512), linear.
* PReLU: one learnable slope per channel, initialised to 0.25 (Caffe's PReLU
  defaults; the prototxt sets no parameters).
* Init: stage openers and fc5 use Caffe "xavier" = uniform +-sqrt(3 / fan_in);
  residual convs use N(0, 0.01^2). Opener and fc5 biases start at 0 and are
  learned. Residual convs have biases in Caffe but with lr_mult 0 and
  decay_mult 0 from a constant-0 filler, i.e. they are zero for ever: we omit
  them (same function, and the parameter count then counts learnable weights
  only). Caffe's per-blob lr_mult 2 / decay_mult 0 on the learned biases is an
  optimizer matter, not modelled here.
* Embedding: fc5's output, L2-normalised here (SphereFace itself normalises
  only in A-Softmax and at evaluation), because the facejax interface returns
  unit-norm embeddings.
* Flatten order before fc5 is H, W, C (Caffe flattens C, H, W): importing
  Caffe fc5 weights needs that permutation, OIHW -> HWIO for the convs, and
  BGR -> RGB on conv1_1's input channels (Caffe's ImageData reads BGR).
  Layer names follow the prototxt (conv{s}_{i}, relu{s}_{i}, fc5) to ease it.

Parameters at 112x96: SphereFace-20 22,666,944 (a hand count from the
prototxt gives the same 22.67M),
-36 32,771,392, -64 48,186,816; multiply-adds 1.750 G / 3.335 G / 6.110 G.
`width` scales every stage's channel count (1.0 = paper) for CPU smoke runs.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models.layers import Conv, PReLU, normalized_embedding, stage_counts

# depth -> residual units in the 64/128/256/512 stages (make_spherenet.py).
UNITS = {20: (1, 2, 4, 1), 36: (2, 4, 8, 2), 64: (3, 8, 16, 3)}
STAGE_WIDTHS = (64, 128, 256, 512)

# Caffe "xavier" (default variance_norm FAN_IN): U(-a, a), a = sqrt(3 / fan_in).
_caffe_xavier = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
_gaussian_001 = nn.initializers.normal(stddev=0.01)


class SphereFace(nn.Module):
  """SphereFace-`depth` (20, 36 or 64) embedding net.

  Attributes:
    depth: 20, 36 or 64; picks the units per stage unless `units` is given.
    units: optional explicit residual units per stage (4 ints), overriding
      `depth` (e.g. (3, 7, 16, 3) for the released Sphereface-64 prototxt).
    embedding_dim: fc5 size (paper: 512).
    width: multiplier on the stage widths 64/128/256/512 (paper: 1.0).
    dtype: compute dtype (params stay float32).
  """
  depth: int = 20
  units: Sequence[int] | None = None
  embedding_dim: int = 512
  width: float = 1.0
  dtype: Any = jnp.float32

  def stage_units(self) -> tuple[int, ...]:
    return stage_counts(self.units, self.depth, UNITS, "units")

  def _conv_prelu(self, x, features, stride, name, opener):
    # Openers: Xavier + learned bias. Residual convs: N(0, 0.01), no bias
    # (Caffe keeps a bias frozen at 0 there; see module docstring).
    x = Conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)),
             use_bias=opener, kernel_init=_caffe_xavier if opener else _gaussian_001,
             bias_init=nn.initializers.zeros, dtype=self.dtype, name="conv" + name)(x)
    return PReLU(name="relu" + name)(x)

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Embeds a batch of aligned faces.

    Args:
      images: [B, H, W, 3] float32, standardised as (x - 127.5) / 128
        (112x96 in the paper; any size with H, W >= 16 works, the fc5 fan-in
        follows the final map).
      train: unused (no BatchNorm or dropout); kept for the common interface.

    Returns:
      (embedding, features): embedding [B, embedding_dim] float32 of unit L2
      norm; features [B, embedding_dim], the same vectors before the
      normalisation, in the net's dtype.
    """
    del train
    x = images.astype(self.dtype)
    for s, (n_units, channels) in enumerate(zip(self.stage_units(), STAGE_WIDTHS), start=1):
      channels = max(1, int(round(channels * self.width)))
      x = self._conv_prelu(x, channels, 2, f"{s}_1", opener=True)
      for u in range(n_units):
        y = self._conv_prelu(x, channels, 1, f"{s}_{2 * u + 2}", opener=False)
        y = self._conv_prelu(y, channels, 1, f"{s}_{2 * u + 3}", opener=False)
        x = x + y
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(self.embedding_dim, kernel_init=_caffe_xavier, bias_init=nn.initializers.zeros,
                 dtype=self.dtype, name="fc5")(x)
    return normalized_embedding(x)


# Registry entries ("sphereface20" etc.): the depth is fixed by the name.
class SphereFace20(SphereFace):
  depth: int = 20


class SphereFace36(SphereFace):
  depth: int = 36


class SphereFace64(SphereFace):
  depth: int = 64
