"""Inception-ResNet-v1 against NETS.md §4 / OpenVINO figures, plus training invariants.

Counting and FLOPs use the full net through jax.eval_shape / lowering only;
everything that executes uses a 75x75 input (the smallest the net takes) and
one scaled block per stage (`block_repeats=(1, 1, 1)`), which keeps every
layer type while compiling in seconds on 2 CPU cores.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from facejax.losses import batch_all_triplet_loss
from facejax.models import InceptionResNetV1, create_model
from facejax.models.inception_resnet_v1 import ResidualBlock


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _shapes(model, size=160):
  return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, size, size, 3)))


# Per-layer arithmetic (weights; "b" = BN betas; "bias" = up-projection biases).
_STEM = 864 + 9_216 + 18_432 + 5_120 + 138_240 + 442_368  # 3x3x3x32 ... 3x3x192x256 = 614,240
_STEM_B = 32 + 32 + 64 + 80 + 192 + 256  # 656
_B35 = 3 * 8_192 + 3 * 9_216 + 96 * 256  # 1x1 256->32 x3, 3x3 32->32 x3, up 96->256 = 76,800
_B35_B, _B35_BIAS = 6 * 32, 256
_RED_A = 9 * 256 * 384 + 256 * 192 + 9 * 192 * 192 + 9 * 192 * 256  # 1,708,032
_RED_A_B = 384 + 192 + 192 + 256  # 1,024
_B17 = 2 * 896 * 128 + 2 * 7 * 128 * 128 + 256 * 896  # 688,128
_B17_B, _B17_BIAS = 4 * 128, 896
_RED_B = 3 * 896 * 256 + 9 * 256 * 384 + 3 * 9 * 256 * 256  # 3,342,336
_RED_B_B = 3 * 256 + 384 + 256 + 256 + 256  # 1,920
_B8 = 2 * 1792 * 192 + 2 * 3 * 192 * 192 + 384 * 1792  # 1,597,440
_B8_B, _B8_BIAS = 4 * 192, 1792


def _expected_params(e):
  weights = _STEM + 5 * _B35 + _RED_A + 10 * _B17 + _RED_B + 6 * _B8 + 1792 * e
  betas = _STEM_B + 5 * _B35_B + _RED_A_B + 10 * _B17_B + _RED_B_B + 6 * _B8_B + e
  biases = 5 * _B35_BIAS + 10 * _B17_BIAS + 6 * _B8_BIAS
  return weights + betas + biases


def test_param_count_matches_openvino():
  # Counted: every leaf of the "params" collection = conv/dense kernels (no
  # conv biases: BN follows), BN betas (no gammas: TF scale=False) incl. the
  # bottleneck BN, and the 21 up-projection biases. Not counted: BN moving
  # mean/variance ("batch_stats", 2 x 14,800 floats), as in NETS.md [calc].
  shapes = _shapes(InceptionResNetV1(embedding_dim=512))
  n = _count(shapes["params"])
  assert _STEM == 614_240 and _B8 + _B8_B + _B8_BIAS == 1_600_000
  assert n == _expected_params(512) == 23_432_032 + 20_992 + 14_800 == 23_467_824
  assert abs(n - 23.469e6) / 23.469e6 < 0.001  # OpenVINO facenet-20180408-102900
  assert _count(shapes["batch_stats"]) == 2 * 14_800
  n128 = _count(_shapes(InceptionResNetV1(embedding_dim=128))["params"])
  assert n128 == _expected_params(128) == 22_779_312


def test_bn_has_offset_only_and_convs_have_no_bias():
  params = _shapes(InceptionResNetV1())["params"]
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  names = {tuple(getattr(k, "key", k) for k in path): leaf.shape for path, leaf in flat}
  for path in names:
    if path[-2] in ("bn", "bottleneck_bn"):
      assert path[-1] == "bias", path
    elif path[-2] == "conv":
      assert path[-1] == "kernel", path
  assert names[("bottleneck", "kernel")] == (1792, 512)
  assert ("bottleneck", "bias") not in names
  assert names[("block17_1", "branch1_1", "conv", "kernel")] == (1, 7, 128, 128)
  assert names[("block8_6", "up", "bias")] == (1792,)


def test_feature_map_sizes_follow_the_table():
  model = InceptionResNetV1()
  variables = _shapes(model)
  x = jnp.zeros((1, 160, 160, 3))
  _, state = jax.eval_shape(functools.partial(model.apply, capture_intermediates=True,
                                              mutable=["intermediates"]), variables, x)
  inter = state["intermediates"]
  expect = {"conv2d_1a": (79, 79, 32), "conv2d_2a": (77, 77, 32), "conv2d_2b": (77, 77, 64),
            "conv2d_3b": (38, 38, 80), "conv2d_4a": (36, 36, 192), "conv2d_4b": (17, 17, 256),
            "block35_5": (17, 17, 256), "block17_1": (8, 8, 896), "block17_10": (8, 8, 896),
            "block8_1": (3, 3, 1792), "block8_6": (3, 3, 1792)}
  for name, shape in expect.items():
    assert inter[name]["__call__"][0].shape[1:] == shape, name


def test_smallest_input_is_75():
  model = InceptionResNetV1(embedding_dim=128)
  _, state = jax.eval_shape(functools.partial(model.apply, capture_intermediates=True,
                                              mutable=["intermediates"]),
                            _shapes(model, 75), jnp.zeros((2, 75, 75, 3)))
  assert state["intermediates"]["block8_6"]["__call__"][0].shape == (2, 1, 1, 1792)
  with pytest.raises(ValueError, match="at least 75x75"):
    _shapes(model, 74)


def _analytic_macs():
  """Dense multiply-adds at 160x160, E=512: sum of k_h*k_w*c_in*c_out*H_out*W_out."""
  stem = (864 * 79**2 + 9_216 * 77**2 + 18_432 * 77**2 + 5_120 * 38**2 + 138_240 * 36**2
          + 442_368 * 17**2)
  red_a = 9 * 256 * 384 * 8**2 + 256 * 192 * 17**2 + 9 * 192 * 192 * 17**2 + 9 * 192 * 256 * 8**2
  red_b = (3 * 896 * 256 * 8**2 + 9 * 256 * 256 * 8**2
           + (9 * 256 * 384 + 2 * 9 * 256 * 256) * 3**2)
  blocks = 5 * _B35 * 17**2 + 10 * _B17 * 8**2 + 6 * _B8 * 3**2
  return stem + red_a + red_b + blocks + 1792 * 512


def test_flops_match_published():
  model = InceptionResNetV1()
  x = jnp.zeros((1, 160, 160, 3), jnp.float32)
  cost = jax.jit(model.apply).lower(_shapes(model), x).cost_analysis()
  xla_macs = cost["flops"] / 2
  assert _analytic_macs() == 1_417_662_304  # NETS.md [calc] 1.418 G
  assert abs(2 * _analytic_macs() - 2.846e9) / 2.846e9 < 0.01  # OpenVINO GFlops = 2/MAC
  # XLA skips taps on SAME zero padding (large share for 3x3 / 1x3 convs on
  # 3x3 maps), so it lands ~3% under the dense count.
  assert abs(xla_macs - 1.418e9) / 1.418e9 < 0.10, xla_macs
  assert xla_macs < _analytic_macs()


def test_residual_block_scales_up_projection_and_applies_relu():
  spec = (((4, (1, 1)),), ((4, (1, 1)), (4, (3, 3))))
  x = jnp.linspace(-2.0, 2.0, 2 * 3 * 3 * 6).reshape(2, 3, 3, 6)
  for relu in (True, False):
    block = ResidualBlock(spec, scale=0.5, relu=relu)
    v = block.init(jax.random.key(0), x, False)
    # With a zero up-projection kernel the branches drop out: out = act(x + 0.5 * bias).
    v["params"]["up"]["kernel"] = jnp.zeros_like(v["params"]["up"]["kernel"])
    v["params"]["up"]["bias"] = jnp.arange(6.0)
    y = block.apply(v, x, False)
    ref = x + 0.5 * jnp.arange(6.0)
    np.testing.assert_allclose(y, jax.nn.relu(ref) if relu else ref, rtol=1e-6)


@pytest.fixture(scope="module")
def small():
  """A 1-block-per-stage net at 75x75, its variables and jitted functions."""
  model = InceptionResNetV1(embedding_dim=128, block_repeats=(1, 1, 1), dropout_rate=0.2)
  # The "rbg" PRNG compiles the init about twice as fast as threefry on CPU.
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), jnp.zeros((1, 75, 75, 3)))
  # Both return the embedding only (the nets' first output).
  fwd_eval = jax.jit(lambda v, x: model.apply(v, x, train=False)[0])

  def train_embed(v, x, r):
    (e, _), updates = model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": r})
    return e, updates
  fwd_train = jax.jit(train_embed)
  return model, variables, fwd_eval, fwd_train


def _batch():
  # 4 identities x 2 noise images; each identity shares a base pattern.
  rng = np.random.default_rng(0)
  base = rng.normal(size=(4, 1, 75, 75, 3))
  x = (base + 0.5 * rng.normal(size=(4, 2, 75, 75, 3))).reshape(8, 75, 75, 3)
  return jnp.asarray(x, jnp.float32), jnp.repeat(jnp.arange(4), 2), jnp.ones(8, bool)


def test_embeddings_are_unit_norm_and_shaped(small):
  _, variables, fwd_eval, _ = small
  x, _, _ = _batch()
  e = fwd_eval(variables, x)
  assert e.shape == (8, 128) and e.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(np.asarray(e), axis=1), 1.0, atol=1e-5)


def test_batch_stats_update_in_train_mode_and_eval_uses_them(small):
  _, variables, fwd_eval, fwd_train = small
  x, _, _ = _batch()
  e_train, updates = fwd_train(variables, x, jax.random.key(1))
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree.leaves(changed))
  np.testing.assert_allclose(np.linalg.norm(np.asarray(e_train), axis=1), 1.0, atol=1e-5)
  e_eval = fwd_eval(variables, x)
  assert not np.allclose(np.asarray(e_train), np.asarray(e_eval), atol=1e-4)
  # Eval normalises with the running averages: an image's embedding does not
  # depend on the rest of the batch, and it changes with the averages.
  mixed = jnp.concatenate([x[:4], -x[4:]])
  np.testing.assert_allclose(fwd_eval(variables, mixed)[:4], e_eval[:4], atol=1e-5)
  e_eval_new = fwd_eval({**variables, "batch_stats": updates["batch_stats"]}, x)
  assert not np.allclose(np.asarray(e_eval_new), np.asarray(e_eval), atol=1e-4)
  # Dropout is off in eval mode: deterministic without a dropout rng.
  np.testing.assert_array_equal(fwd_eval(variables, x), e_eval)


def test_training_steps_lower_the_loss_on_a_fixed_batch(small):
  model, variables, _, _ = small
  x, labels, mask = _batch()
  tx = optax.adam(1e-3)
  dropout_rng = jax.random.key(3)  # same mask every step: the loss is a function of params

  @jax.jit
  def step(params, batch_stats, opt_state):
    def loss_fn(p):
      (e, _), upd = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                mutable=["batch_stats"], rngs={"dropout": dropout_rng})
      return batch_all_triplet_loss(e, labels, mask, margin=0.2)[0], upd["batch_stats"]
    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  losses = []
  for _ in range(6):
    params, stats, opt_state, loss = step(params, stats, opt_state)
    losses.append(float(loss))
  # losses[0] is the loss before any update, losses[-1] after 5 updates.
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.8 * losses[0], losses


def test_registry_builds_it():
  m = create_model(ml_collections.ConfigDict(dict(
      name="inception_resnet_v1", embedding_dim=128, dropout_rate=0.6, dtype="bfloat16")))
  assert isinstance(m, InceptionResNetV1)
  assert (m.embedding_dim, m.dropout_rate, m.dtype) == (128, 0.6, jnp.bfloat16)
