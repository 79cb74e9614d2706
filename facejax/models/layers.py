"""Reusable layers of the nets: LRN, pooling, maxout dense, PReLU, L2 normalisation."""

import contextlib
import functools
from typing import Any, Iterator, Sequence

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


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: Any, lhs_dilation: Sequence[int] | None = None,
                         rhs_dilation: Sequence[int] | None = None,
                         dimension_numbers: Any = None, feature_group_count: int = 1,
                         precision: Any = None, **kwargs) -> jax.Array:
  """`lax.conv_general_dilated` that runs pointwise (1x1) NHWC convolutions as a matmul.

  A 1x1 convolution with no padding or dilation is a matmul over channels
  (of the strided subsample, for stride > 1: IResNet's shortcuts), and gives
  the same result up to float rounding. XLA:CPU
  runs it about 2.5x faster forward and 3-4x faster forward+backward as a dot
  than as a convolution (`benchmarks/ops_bench.py`). 1x1 convs are a large
  share of the Inception nets' layers.

  A grouped NHWC convolution with few input channels per group (depthwise:
  one; MobileFaceNet's conv2_dw: two) runs as shifted multiply-adds, one per
  tap and input channel of a group: XLA:CPU's grouped convolution ran 15-34x
  slower forward and 16-38x slower forward+backward than the shifted form at
  MobileFaceNet's depthwise shapes (`benchmarks/ops_bench.py --ops depthwise`).
  Same result up to float rounding; the sum is kept in float32 for bf16 inputs.

  Every other convolution goes to `lax.conv_general_dilated` unchanged.
  """
  nhwc = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
  unit = lambda v: v is None or all(int(d) == 1 for d in v)  # noqa: E731
  no_pad = (padding in ("VALID", "SAME") if isinstance(padding, str)
            else all(tuple(p) == (0, 0) for p in padding))
  pointwise = (lhs.ndim == 4 and rhs.shape[:2] == (1, 1) and no_pad
               and unit(lhs_dilation) and unit(rhs_dilation) and feature_group_count == 1
               and dimension_numbers is not None
               and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
               and not kwargs)
  # CPU only: XLA:GPU/TPU have grouped convolutions of their own (cuDNN's, the MXU's).
  few_per_group = (_fast_grouped_convs and jax.default_backend() == "cpu"
                   and lhs.ndim == 4 and feature_group_count > 1
                   and rhs.shape[2] <= _MAX_TAPS_CHANNELS_PER_GROUP
                   and unit(lhs_dilation) and unit(rhs_dilation) and not kwargs
                   and dimension_numbers is not None
                   and jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape,
                                                      dimension_numbers) == nhwc)
  if few_per_group:
    return _grouped_conv_as_taps(lhs, rhs, tuple(int(d) for d in window_strides), padding,
                                 feature_group_count)
  if not pointwise:
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        precision=precision, **kwargs)
  if not unit(window_strides):
    sh, sw = (int(d) for d in window_strides)
    lhs = lhs[:, ::sh, ::sw, :]
  return jax.lax.dot_general(lhs, rhs[0, 0], (((3,), (0,)), ((), ())), precision=precision)


# Above this many input channels per group the taps' multiply-adds outgrow a convolution.
_MAX_TAPS_CHANNELS_PER_GROUP = 4
_fast_grouped_convs = True


@contextlib.contextmanager
def grouped_convs_as_convolutions() -> Iterator[None]:
  """While tracing inside it, grouped convolutions stay `conv_general_dilated` ops (so that
  `flops.multiply_adds` sees and counts them as the papers do)."""
  global _fast_grouped_convs
  previous, _fast_grouped_convs = _fast_grouped_convs, False
  try:
    yield
  finally:
    _fast_grouped_convs = previous


def _grouped_conv_as_taps(lhs: jax.Array, rhs: jax.Array, strides: tuple[int, int],
                          padding: Any, groups: int) -> jax.Array:
  """lhs [B, H, W, G c] (*) rhs [kh, kw, c, G o] with G groups, as kh x kw x c strided taps,
  each a broadcast multiply-add: [B, H', W', G, 1] x [G, o] -> [B, H', W', G, o]."""
  kh, kw = rhs.shape[:2]
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), strides, padding)
  padding = tuple(tuple(int(v) for v in p) for p in padding)
  return _taps_conv(lhs, rhs, strides, padding, groups)


def _taps_forward(lhs, rhs, strides, padding, groups):
  kh, kw, c_in, c_out = rhs.shape
  sh, sw = strides
  x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
  b, out_h, out_w = x.shape[0], (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
  out_dtype = jnp.result_type(lhs, rhs)
  acc_dtype = jnp.promote_types(out_dtype, jnp.float32)
  w = rhs.astype(acc_dtype).reshape(kh, kw, c_in, groups, c_out // groups)
  y = None
  for i in range(kh):
    for j in range(kw):
      tap = jax.lax.slice(x, (0, i, j, 0),
                          (b, i + (out_h - 1) * sh + 1, j + (out_w - 1) * sw + 1, x.shape[3]),
                          (1, sh, sw, 1))
      tap = tap.astype(acc_dtype).reshape(b, out_h, out_w, groups, c_in)
      for c in range(c_in):
        term = tap[..., c:c + 1] * w[i, j, c]
        y = term if y is None else y + term
  return y.reshape(b, out_h, out_w, c_out).astype(out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _taps_conv(lhs, rhs, strides, padding, groups):
  return _taps_forward(lhs, rhs, strides, padding, groups)


def _taps_conv_fwd(lhs, rhs, strides, padding, groups):
  return _taps_forward(lhs, rhs, strides, padding, groups), (lhs, rhs)


def _taps_conv_bwd(strides, padding, groups, residuals, dy):
  # The input gradient is autodiff's (padded adjoints of the taps, one fused loop). The kernel
  # gradient is a reduction per tap over the whole batch; done an image at a time, the
  # image's input and output gradient stay in cache across the kh x kw taps, which made it
  # 3-4x faster than batch-wide reductions that each re-read both from memory.
  lhs, rhs = residuals
  _, input_vjp = jax.vjp(lambda x: _taps_forward(x, rhs, strides, padding, groups), lhs)
  (d_lhs,) = input_vjp(dy)

  def kernel_grad(image_and_dy):
    image, dy_image = image_and_dy
    _, kernel_vjp = jax.vjp(lambda w: _taps_forward(image[None], w, strides, padding, groups),
                            rhs)
    return kernel_vjp(dy_image[None])[0].astype(jnp.promote_types(rhs.dtype, jnp.float32))

  d_rhs = jnp.sum(jax.lax.map(kernel_grad, (lhs, dy)), axis=0).astype(rhs.dtype)
  return d_lhs, d_rhs


_taps_conv.defvjp(_taps_conv_fwd, _taps_conv_bwd)


# `flax.linen.Conv` with the pointwise and grouped fast paths; same parameters and names.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def max_pool(x: jax.Array, window: tuple[int, int] = (3, 3), strides: tuple[int, int] = (2, 2),
             padding: str | Sequence[tuple[int, int]] = ((1, 1), (1, 1))) -> jax.Array:
  """Max pooling of [B, H, W, C], padded with -inf. Same values as `flax.linen.max_pool`.

  Computed as `jnp.maximum` folded over one strided slice per window tap, so
  the gradient is a chain of fused elementwise selects. XLA:CPU lowers the
  gradient of flax's reduce_window max pool to select_and_scatter, which was
  about 5x slower than this form and about 4x slower than PyTorch's max-pool
  backward (`benchmarks/ops_bench.py`).

  The only difference from `flax.linen.max_pool` is the gradient at ties.
  There the gradient is split between the tied taps (`jnp.maximum`) instead
  of all going to one of them. Both are valid subgradients, and ties on
  non-zero activations are rare (2 of 4.7M window outputs for random normal
  inputs). Ties among ReLU zeros get no gradient either way, because ReLU's
  gradient at 0 is 0.
  """
  if padding == "VALID":
    padding = ((0, 0), (0, 0))
  elif isinstance(padding, str):
    raise ValueError(f"max_pool padding must be 'VALID' or ((lo, hi), (lo, hi)), got {padding!r}")
  (kh, kw), (sh, sw) = window, strides
  x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)),
              constant_values=-jnp.inf)
  b, h, w, c = x.shape
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  if ho < 1 or wo < 1:
    raise ValueError(f"a {kh}x{kw} pool got a {h}x{w} (padded) map")
  out = None
  for i in range(kh):
    for j in range(kw):
      tap = jax.lax.slice(x, (0, i, j, 0), (b, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                          (1, sh, sw, 1))
      out = tap if out is None else jnp.maximum(out, tap)
  return out


def normalized_embedding(features: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The nets' output: `(embedding, features)` from the last layer's `features` [B, D].

  embedding: [B, D] float32, `features` L2-normalised (what evaluation and
  triplet losses use). features: [B, D] in the net's dtype, unchanged. Both
  are returned because classification heads need the raw ones: A-Softmax
  scales its logits by ||x||, and davidsandberg's softmax sits on the
  pre-normalisation bottleneck.
  """
  return l2_normalize(features), features


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
    # lax.pow with a scalar exponent: jnp.power's broadcast trips jax2onnx on a symbolic batch.
    scale = jax.lax.pow(self.k + (self.alpha / self.size) * window_sum,
                        jnp.float32(-self.beta))
    return (x.astype(jnp.float32) * scale).astype(x.dtype)


class L2Pool(nn.Module):
  """L2 ("p-norm", p=2) pooling of FaceNet's Inception modules.

  y = sqrt(sum_{window} x^2 + eps) per channel, the paper's "instead of the
  spatial max the L2 norm is computed". Windows are zero-padded by `padding`
  pixels each side; zeros add nothing to the sum, so a padded window is the
  L2 norm of its in-image taps (OpenFace instead pools unpadded and zero-pads
  the branch output, centred). `eps` keeps the gradient finite on
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
    # Separable window sum (rows, then columns). XLA:CPU ran the gradient of
    # one 3x3 reduce_window about 5x slower, and of 9 strided slices about
    # 30x slower (`benchmarks/ops_bench.py`).
    rows = jax.lax.reduce_window(sq, 0.0, jax.lax.add, (1, self.window, 1, 1),
                                 (1, self.stride, 1, 1), ((0, 0), (p, p), (0, 0), (0, 0)))
    sums = jax.lax.reduce_window(rows, 0.0, jax.lax.add, (1, 1, self.window, 1),
                                 (1, 1, self.stride, 1), ((0, 0), (0, 0), (p, p), (0, 0)))
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


class PReLU(nn.Module):
  """Parametric ReLU with one slope per channel (Caffe `PReLU`, torch `nn.PReLU(C)`).

  y = max(x, 0) + a_c * min(x, 0). Input and output: [..., C]; the slopes
  `alpha` [C] are float32 params, applied in the input's dtype.
  """
  init_slope: float = 0.25

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    alpha = self.param("alpha", nn.initializers.constant(self.init_slope), (x.shape[-1],),
                       jnp.float32)
    alpha = alpha.astype(x.dtype)
    return jnp.where(x >= 0, x, alpha * x)


def torch_batch_norm(train: bool, dtype: Any, name: str, use_scale: bool = True) -> nn.BatchNorm:
  """BatchNorm with torch's defaults (eps 1e-5, momentum 0.1 = Flax 0.9): arcface_torch's nets.

  Under jit on a batch sharded over the "data" axis the statistics are
  global-batch reductions (XLA inserts the all-reduce): synchronised BN.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      use_scale=use_scale, dtype=dtype, name=name)


def stage_counts(explicit: Sequence[int] | None, depth: int, table: dict[int, tuple[int, ...]],
                 key: str) -> tuple[int, ...]:
  """Blocks per stage of a 4-stage net: `explicit` (`config.model.<key>`) if given, else
  `table[depth]`; a bad value raises naming the key."""
  if explicit is not None:
    if len(explicit) != 4:
      raise ValueError(f"config.model.{key}={explicit!r} must give 4 stages")
    return tuple(int(b) for b in explicit)
  if depth not in table:
    raise ValueError(f"config.model.depth={depth!r}: choose one of {sorted(table)}")
  return table[depth]
