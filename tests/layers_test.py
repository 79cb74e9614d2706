"""Pooling layers against `flax.linen.max_pool` / `lax.reduce_window` and brute-force numpy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax.models import layers


def _numpy_pool(x, k, s, pad, fill, reduce):
  """Brute-force pooling of [B, H, W, C] numpy arrays, one window at a time."""
  xp = np.pad(x, ((0, 0), pad[0], pad[1], (0, 0)), constant_values=fill)
  ho = (xp.shape[1] - k) // s + 1
  wo = (xp.shape[2] - k) // s + 1
  out = np.empty((x.shape[0], ho, wo, x.shape[3]), x.dtype)
  for i in range(ho):
    for j in range(wo):
      out[:, i, j, :] = reduce(xp[:, i * s:i * s + k, j * s:j * s + k, :], axis=(1, 2))
  return out


@pytest.mark.parametrize("shape,stride,padding", [
    ((2, 9, 7, 3), 2, ((1, 1), (1, 1))),
    ((2, 9, 9, 4), 2, "VALID"),
    ((1, 6, 8, 2), 1, ((1, 1), (1, 1))),
    ((1, 7, 7, 2), 2, ((0, 1), (1, 0))),
])
def test_max_pool_matches_flax_values_and_grads(shape, stride, padding):
  # Continuous random inputs: no ties, so the subgradient is unique and the
  # slice form must give flax's (select_and_scatter) gradient exactly.
  x = jax.random.normal(jax.random.key(0), shape)

  def ours(x):
    return layers.max_pool(x, (3, 3), (stride, stride), padding)

  def ref(x):
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=padding)

  np.testing.assert_array_equal(ours(x), ref(x))
  pad = ((0, 0), (0, 0)) if padding == "VALID" else padding
  np.testing.assert_array_equal(ours(x), _numpy_pool(np.asarray(x), 3, stride, pad, -np.inf,
                                                     np.max))
  w = jax.random.normal(jax.random.key(1), ref(x).shape)
  g_ours = jax.grad(lambda x: jnp.sum(ours(x) * w))(x)
  g_ref = jax.grad(lambda x: jnp.sum(ref(x) * w))(x)
  np.testing.assert_allclose(g_ours, g_ref, rtol=0, atol=1e-6)


def test_max_pool_tie_gradient_is_split_and_sums_to_one():
  # Two equal maxima in one 2x2 window: half the gradient to each.
  x = jnp.array([[5.0, 5.0], [1.0, 2.0]]).reshape(1, 2, 2, 1)
  g = jax.grad(lambda x: jnp.sum(layers.max_pool(x, (2, 2), (2, 2), "VALID")))(x)
  np.testing.assert_allclose(np.asarray(g).ravel(), [0.5, 0.5, 0.0, 0.0])


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), (2, 0)])
def test_l2_pool_matches_reduce_window(stride, padding):
  x = jax.random.normal(jax.random.key(2), (2, 8, 7, 3))
  pool = layers.L2Pool(window=3, stride=stride, padding=padding)
  ref = np.sqrt(_numpy_pool(np.asarray(x) ** 2, 3, stride, ((padding,) * 2,) * 2, 0.0, np.sum)
                + pool.eps)
  np.testing.assert_allclose(pool.apply({}, x), ref, rtol=1e-5, atol=1e-6)


def test_max_pool_rejects_too_small_map():
  with pytest.raises(ValueError, match="3x3 pool got a 2x2"):
    layers.max_pool(jnp.zeros((1, 2, 2, 1)), (3, 3), (1, 1), "VALID")


@pytest.mark.parametrize("kernel,stride,padding", [
    ((1, 1), 1, "SAME"),          # pointwise: the matmul path
    ((1, 1), 1, ((0, 0), (0, 0))),
    ((1, 1), 2, "SAME"),          # strided pointwise: subsample, then the matmul path
    ((1, 1), 3, "VALID"),
    ((1, 1), 2, ((1, 1), (1, 1))),  # padded pointwise: lax path
    ((3, 3), 1, ((1, 1), (1, 1))),
    ((1, 7), 1, "SAME"),
])
def test_conv_matches_flax_conv_values_and_grads(kernel, stride, padding):
  _check_conv_against_flax(dict(features=4, kernel_size=kernel, strides=stride,
                                padding=padding), (2, 6, 7, 5))


# Grouped with few channels per group: the shifted multiply-add path. MobileFaceNet's
# depthwise 3x3 with pad 1 at strides 1 and 2, its 7x7 GDC head (valid, 7x7 -> 1x1), its
# conv2_dw (2 channels per group in and out), a channel multiplier, "SAME" with odd sizes.
@pytest.mark.parametrize("channels,groups,features,kernel,stride,padding,hw", [
    (6, 6, 6, (3, 3), 1, ((1, 1), (1, 1)), (6, 7)),
    (6, 6, 6, (3, 3), 2, ((1, 1), (1, 1)), (7, 8)),
    (6, 6, 6, (7, 7), 1, "VALID", (7, 7)),
    (8, 4, 8, (3, 3), 1, ((1, 1), (1, 1)), (5, 6)),
    (4, 4, 12, (3, 3), 2, "SAME", (9, 6)),
])
def test_grouped_conv_matches_flax_grouped_conv(channels, groups, features, kernel, stride,
                                                 padding, hw):
  _check_conv_against_flax(dict(features=features, kernel_size=kernel, strides=stride,
                                padding=padding, feature_group_count=groups),
                           (2, *hw, channels))
  x = jnp.zeros((2, *hw, channels))
  hlo = jax.jit(lambda x, k: layers.conv_general_dilated(
      x, k, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=groups)).lower(
          x, jnp.zeros((*kernel, channels // groups, features))).as_text()
  assert "convolution" not in hlo


def _check_conv_against_flax(kwargs, shape):
  x = jax.random.normal(jax.random.key(3), shape)
  ref = nn.Conv(**kwargs)
  ours = layers.Conv(**kwargs)
  variables = ref.init(jax.random.key(4), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.key(4), x)) == jax.tree.map(
      jnp.shape, variables)
  np.testing.assert_allclose(ours.apply(variables, x), ref.apply(variables, x), atol=1e-5)

  def grads(module):
    return jax.grad(lambda v, x: jnp.sum(jnp.sin(module.apply(v, x))), argnums=(0, 1))(
        variables, x)

  for g_ours, g_ref in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(ref))):
    np.testing.assert_allclose(g_ours, g_ref, atol=1e-5)


def test_pointwise_conv_lowers_to_a_dot():
  x = jnp.zeros((2, 6, 6, 5))
  kernel = jnp.zeros((1, 1, 5, 3))
  dims = ("NHWC", "HWIO", "NHWC")
  hlo = jax.jit(lambda x, k: layers.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=dims)).lower(x, kernel).as_text()
  assert "dot_general" in hlo and "convolution" not in hlo
  # lax's default layout (NCHW) is not the pointwise NHWC case: left to lax.
  x_nchw = jnp.zeros((2, 5, 6, 6))
  k_oihw = jnp.zeros((3, 5, 1, 1))
  hlo = jax.jit(lambda x, k: layers.conv_general_dilated(x, k, (1, 1), "SAME")).lower(
      x_nchw, k_oihw).as_text()
  assert "convolution" in hlo


def test_normalized_embedding_returns_unit_rows_and_the_raw_features():
  x = jnp.asarray([[3.0, 4.0], [0.0, -2.0]], jnp.bfloat16)
  embedding, features = layers.normalized_embedding(x)
  # The normalisation is computed in float32, even for a bf16 net.
  assert embedding.dtype == jnp.float32 and features.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(embedding), [[0.6, 0.8], [0.0, -1.0]], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(features), np.asarray(x))
