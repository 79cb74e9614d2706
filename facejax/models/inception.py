"""FaceNet's Inception nets NN2, NN3, NN4, NNS1 and NNS2 (Schroff et al. 2015).

One `FaceNetInception` module builds all five from a per-net table of
`ModuleSpec` rows (`NETS`). Shared structure (NN2, paper Table 2):

  conv1 7x7/2 -> max pool 3x3/2 -> LRN -> inception(2) (1x1 reduce -> 3x3)
  -> LRN -> max pool 3x3/2 -> inception modules (3a ... 5b) -> head -> L2.

Sources: FaceNet (Schroff et al. 2015) Table 2 and §3.3; OpenFace's
`nn4.def.lua` / `nn4.small2.def.lua` and dpnn's `Inception.lua` where the
paper is silent. Decisions:

* NN2 (224x224) follows Table 2 row by row. NN3 is "identical in
  architecture" at 160x160. The 7x7 average pool of Table 2 is the global
  average of the final map (7x7 at 224, 5x5 at 160, 3x3 at 96). NN2:
  7,456,304 params and 1.597G multiply-adds (paper: 7.5M, 1.6B); NN3: the
  same params, 815M multiply-adds (no published per-net figure).
* NN4 (96x96) "does not use 5x5 convolutions in the higher layers" (paper
  §3.3), without saying which layers; its Table 6 mentions a 96x96 NN2-like
  net with no 5x5 at all. We drop the 5x5 branches of 5a and 5b only, as
  OpenFace's nn4 and davidsandberg's port do, so
  5a/5b output 384+384+128 = 896 channels. At 96 input 5a/5b see a 3x3 map,
  where a 5x5 kernel is mostly padding. This gives 288.9M multiply-adds
  against the published 285M; dropping every 5x5 would give 252M.
* NNS1 (165x165, "mini Inception", published 26M params / 220M
  multiply-adds) and NNS2 (140x116, "tiny Inception", 4.3M / 20M): the paper
  gives only these totals, no layer table. Their layer tables below are
  facejax's own design, not the paper's, sized to hit those two totals
  (within 4% and 5% for NNS1/NNS2): both figures are far
  more parameters than multiply-adds can pay for in conv layers (26M params
  at 220M MACs is under 9 MACs per weight), so most weights must sit in a
  layer applied once per image. We keep the final feature map instead of
  average-pooling it, flatten it and add one fully connected ReLU layer
  before the embedding, as NN1 does (its fc1 reads the flattened 7x7 map).
  - NNS1: NN2 at half width with 4b-4d removed (OpenFace's nn4.small2 also
    drops them); 165 -> 83 -> 42 -> 21 -> 11 -> 6; flatten 6x6x512 ->
    FC 1280 -> 128. 25.10M params, 220.5M multiply-adds.
  - NNS2: conv1 with 8 filters, inception(2) 8 -> 24, then NN2's 3a, 3c,
    4a, 4e, 5a at quarter width; 140x116 -> 70x58 -> 35x29 -> 18x15 -> 9x8
    -> 5x4; flatten 5x4x256 -> FC 768 -> 128. 4.24M params, 20.9M
    multiply-adds.
* Module semantics (paper Table 2 and its caption): branches 1x1 / 1x1
  reduce -> 3x3 / 1x1 reduce -> 5x5 / 3x3 pool -> optional 1x1 projection
  (no projection: the pooled input passes through), concatenated in the
  paper caption's order 1x1, 3x3, 5x5, pool (OpenFace uses 3x3, 5x5, pool,
  1x1; this only matters for porting weights). In the stride-2 modules (3c,
  4e) the 1x1 reduces run at input resolution and only the 3x3, the 5x5 and
  the pool are strided: that is what reproduces the paper's 108M
  multiply-adds for 3c (40.1M at 28x28 plus 67.8M at 14x14).
* Padding: 3x3 convs pad 1, 5x5 pad 2, 7x7 pad 3, pools pad 1 (max pools
  ignore the pad, L2 pools add zeros), floor sizes; this reproduces every
  size of Table 2 (112, 56, 28, 14, 7). The paper gives no padding.
  OpenFace's unpadded L2 pool plus centred zero-padding of the branch output
  is not reproduced.
* L2 pooling is `L2Pool`: sqrt(sum x^2 + 1e-6) over the 3x3 window.
* LRN: the paper writes "norm" with no parameters; we take GoogLeNet's and
  OpenFace's size 5, alpha 1e-4, beta 0.75, k 1, after pool1 and after
  the 3x3 conv of inception(2) (before pool2), the order Table 2 prints.
* BatchNorm: none in the paper, so `batch_norm=False` by default. With
  `batch_norm=True` every conv is conv (no bias) -> BatchNorm -> ReLU, as in
  OpenFace's and davidsandberg's ports; see `facejax/models/nn1.py` for why
  small nets trained from scratch on LFW collapse without it.
* Init: He-normal (fan-in) for convs and the ReLU FC layer ("similar to
  GoogLeNet", §3.3), LeCun-normal for the linear embedding layer.

`width` scales every conv and hidden-FC width (not the embedding) for small
CPU runs; any input size >= 32 px per side works.
"""

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models.layers import Conv, L2Pool, LocalResponseNorm, max_pool, normalized_embedding

_he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")


class ModuleSpec(NamedTuple):
  """One Inception module, in the paper's Table 2 notation (0 = no branch)."""
  name: str
  n1x1: int
  n3x3_reduce: int
  n3x3: int
  n5x5_reduce: int
  n5x5: int
  pool: str  # "max" or "l2"
  pool_proj: int  # 0: the pooled input passes through unprojected
  stride: int = 1


class NetSpec(NamedTuple):
  """A whole net: stem widths, modules and head."""
  input_size: tuple[int, int]  # (H, W) it was designed for
  conv1: int  # 7x7/2 filters
  conv2_reduce: int  # inception(2): 1x1 reduce ...
  conv2: int  # ... -> 3x3
  modules: tuple[ModuleSpec, ...]
  head: str = "avg"  # "avg": global average pool; "flatten": keep the map
  fc_hidden: tuple[int, ...] = ()  # ReLU FC layers before the embedding


M = ModuleSpec
_NN2_MODULES = (
    M("3a", 64, 96, 128, 16, 32, "max", 32),
    M("3b", 64, 96, 128, 32, 64, "l2", 64),
    M("3c", 0, 128, 256, 32, 64, "max", 0, stride=2),
    M("4a", 256, 96, 192, 32, 64, "l2", 128),
    M("4b", 224, 112, 224, 32, 64, "l2", 128),
    M("4c", 192, 128, 256, 32, 64, "l2", 128),
    M("4d", 160, 144, 288, 32, 64, "l2", 128),
    M("4e", 0, 160, 256, 64, 128, "max", 0, stride=2),
    M("5a", 384, 192, 384, 48, 128, "l2", 128),
    M("5b", 384, 192, 384, 48, 128, "max", 128),
)
_NN4_MODULES = _NN2_MODULES[:8] + (
    M("5a", 384, 192, 384, 0, 0, "l2", 128),
    M("5b", 384, 192, 384, 0, 0, "max", 128),
)
# facejax's own designs, sized to the paper's totals (it publishes no tables for
# NNS1/NNS2), see the module docstring.
_NNS1_MODULES = (
    M("3a", 32, 48, 64, 8, 16, "max", 16),
    M("3b", 32, 48, 64, 16, 32, "l2", 32),
    M("3c", 0, 64, 128, 16, 32, "max", 0, stride=2),
    M("4a", 128, 48, 96, 16, 32, "l2", 64),
    M("4e", 0, 80, 128, 32, 64, "max", 0, stride=2),
    M("5a", 192, 96, 192, 24, 64, "l2", 64),
    M("5b", 192, 96, 192, 24, 64, "max", 64),
)
_NNS2_MODULES = (
    M("3a", 16, 24, 32, 4, 8, "max", 8),
    M("3c", 0, 32, 64, 8, 16, "max", 0, stride=2),
    M("4a", 64, 24, 48, 8, 16, "l2", 32),
    M("4e", 0, 40, 64, 16, 32, "max", 0, stride=2),
    M("5a", 96, 48, 96, 12, 32, "l2", 32),
)
del M

NETS: dict[str, NetSpec] = {
    "nn2": NetSpec((224, 224), 64, 64, 192, _NN2_MODULES),
    "nn3": NetSpec((160, 160), 64, 64, 192, _NN2_MODULES),
    "nn4": NetSpec((96, 96), 64, 64, 192, _NN4_MODULES),
    "nns1": NetSpec((165, 165), 32, 32, 96, _NNS1_MODULES, head="flatten", fc_hidden=(1280,)),
    "nns2": NetSpec((140, 116), 8, 8, 24, _NNS2_MODULES, head="flatten", fc_hidden=(768,)),
}


class ConvUnit(nn.Module):
  """Conv (SAME-size symmetric pad) -> optional BatchNorm -> ReLU.

  Input [B, H, W, C_in]; output [B, ceil(H / stride), ceil(W / stride), features].
  """
  features: int
  kernel: int
  stride: int = 1
  batch_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    pad = (self.kernel - 1) // 2
    x = Conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
             padding=((pad, pad), (pad, pad)), use_bias=not self.batch_norm,
             kernel_init=_he_normal, dtype=self.dtype, name="conv")(x)
    if self.batch_norm:
      # Statistics of the global batch: under jit on a sharded batch XLA
      # reduces across devices, so every replica keeps identical stats.
      x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3,
                       dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


def _max_pool(x: jax.Array, stride: int) -> jax.Array:
  # Padded with -inf, so the pad never wins the max.
  return max_pool(x, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)))


class InceptionModule(nn.Module):
  """Four parallel branches concatenated on channels (FaceNet Table 2's caption).

  Attributes mirror one row of the paper's Table 2; a zero width drops that
  branch (`pool_proj=0` passes the pooled input through unprojected). With
  `stride=2` the 3x3, the 5x5 and the pool are strided, the reduces are not.

  Input [B, H, W, C]; output [B, ceil(H / stride), ceil(W / stride),
  n1x1 + n3x3 + n5x5 + (pool_proj or C)].
  """
  n1x1: int
  n3x3_reduce: int
  n3x3: int
  n5x5_reduce: int
  n5x5: int
  pool: str = "max"
  pool_proj: int = 0
  stride: int = 1
  batch_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    unit = functools.partial(ConvUnit, batch_norm=self.batch_norm, dtype=self.dtype)
    s = self.stride
    if s != 1 and (self.n1x1 or self.pool_proj):
      # A strided 1x1 would discard 3/4 of its input; Table 2 has none.
      raise ValueError("strided Inception modules take no 1x1 or pool-projection branch")
    branches = []
    if self.n1x1:
      branches.append(unit(self.n1x1, 1, name="b1x1")(x, train))
    if self.n3x3:
      y = unit(self.n3x3_reduce, 1, name="b3x3_reduce")(x, train)
      branches.append(unit(self.n3x3, 3, s, name="b3x3")(y, train))
    if self.n5x5:
      y = unit(self.n5x5_reduce, 1, name="b5x5_reduce")(x, train)
      branches.append(unit(self.n5x5, 5, s, name="b5x5")(y, train))
    if self.pool == "max":
      y = _max_pool(x, s)
    elif self.pool == "l2":
      y = L2Pool(stride=s, padding=1)(x)
    else:
      raise ValueError(f"pool={self.pool!r}: use 'max' or 'l2'")
    if self.pool_proj:
      y = unit(self.pool_proj, 1, name="pool_proj")(y, train)
    branches.append(y)
    return jnp.concatenate(branches, axis=-1)


class FaceNetInception(nn.Module):
  """FaceNet Inception net `net` (one of `NETS`), see the module docstring.

  Attributes:
    net: key of `NETS`: "nn2", "nn3", "nn4", "nns1" or "nns2".
    embedding_dim: size of the L2-normalised embedding (paper: 128).
    width: multiplier on every conv and hidden-FC width (paper: 1.0).
    batch_norm: BatchNorm between each conv and its ReLU (not in the paper).
    dtype: compute dtype (params stay float32).
  """
  net: str = "nn2"
  embedding_dim: int = 128
  width: float = 1.0
  batch_norm: bool = False
  dtype: Any = jnp.float32

  def _w(self, n: int) -> int:
    return max(1, int(round(n * self.width))) if n else 0

  @nn.compact
  def __call__(self, images: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    """Embeds a batch of faces.

    Args:
      images: [B, H, W, 3] float32, standardised (NETS[net].input_size in
        the paper).
      train: BatchNorm uses batch statistics (and updates its running
        averages) when True, the running averages when False.

    Returns:
      (embedding, features): embedding [B, embedding_dim] float32 of unit L2
      norm; features [B, embedding_dim], the same vectors before the
      normalisation, in the net's dtype.
    """
    if self.net not in NETS:
      raise ValueError(f"net={self.net!r}: choose one of {sorted(NETS)}")
    spec, w = NETS[self.net], self._w
    unit = functools.partial(ConvUnit, batch_norm=self.batch_norm, dtype=self.dtype)
    x = images.astype(self.dtype)
    x = unit(w(spec.conv1), 7, 2, name="conv1")(x, train)
    x = _max_pool(x, 2)
    x = LocalResponseNorm(name="norm1")(x)
    x = unit(w(spec.conv2_reduce), 1, name="conv2_reduce")(x, train)
    x = unit(w(spec.conv2), 3, name="conv2")(x, train)
    x = LocalResponseNorm(name="norm2")(x)
    x = _max_pool(x, 2)
    for m in spec.modules:
      x = InceptionModule(
          w(m.n1x1), w(m.n3x3_reduce), w(m.n3x3), w(m.n5x5_reduce), w(m.n5x5), m.pool,
          w(m.pool_proj), m.stride, batch_norm=self.batch_norm, dtype=self.dtype,
          name=f"inception_{m.name}")(x, train)
    if spec.head == "avg":
      x = jnp.mean(x, axis=(1, 2))
    else:
      x = x.reshape((x.shape[0], -1))
    for i, n in enumerate(spec.fc_hidden):
      x = nn.relu(nn.Dense(w(n), kernel_init=_he_normal, dtype=self.dtype, name=f"fc{i + 1}")(x))
    x = nn.Dense(self.embedding_dim, dtype=self.dtype, name="embedding")(x)
    return normalized_embedding(x)


# Registry entries: one class per net, so `config.model.name` picks the table.
class NN2(FaceNetInception):
  net: str = "nn2"


class NN3(FaceNetInception):
  net: str = "nn3"


class NN4(FaceNetInception):
  net: str = "nn4"


class NNS1(FaceNetInception):
  """NNS1, 165x165. The paper gives only its totals (26M params, 220M
  multiply-adds); the layer table (`_NNS1_MODULES`, flatten, FC 1280) is
  facejax's own design, sized to them: 25.10M params, 220.5M multiply-adds."""
  net: str = "nns1"


class NNS2(FaceNetInception):
  """NNS2, 140x116. The paper gives only its totals (4.3M params, 20M
  multiply-adds); the layer table (`_NNS2_MODULES`, flatten, FC 768) is
  facejax's own design, sized to them: 4.24M params, 20.9M multiply-adds."""
  net: str = "nns2"
