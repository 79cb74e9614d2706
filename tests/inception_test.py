"""NN2/NN3/NN4/NNS1/NNS2 against the FaceNet paper's figures, plus L2 pooling."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from facejax.losses import triplet
from facejax.models import MODELS, InceptionModule, L2Pool, create_model


def _count(tree):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(tree))


def _full_size_shapes(name, **kwargs):
  cls, (h, w) = MODELS[name]
  model = cls(**kwargs)
  x = jnp.zeros((1, h, w, 3), jnp.float32)
  return model, x, jax.eval_shape(model.init, jax.random.key(0), x)


# Weights + biases per module, by hand from Table 2: e.g. 3a = 1x1 192*64+64
# + reduce 192*96+96 + 3x3 9*96*128+128 + reduce 192*16+16 + 5x5 25*16*32+32
# + proj 192*32+32 = 163,696 (163,328 weights + 368 biases).
_NN2_MODULES = [163_696, 227_776, 397_792, 545_536, 595_216, 654_112, 722_224, 717_408,
                1_588_464, 1_588_464]
# conv1 7*7*3*64+64, inception(2) 64*64+64 and 9*64*192+192, embedding 1024*128+128.
_NN2_STEM_HEAD = 9_472 + 4_160 + 110_784 + 131_200
# NN4: 5a/5b lose their 5x5 branch: 5a = 1024*384+384 + 1024*192+192
# + 9*192*384+384 + 1024*128+128 = 1,385,536; 5b (896 in) = 1,295,424;
# embedding 896*128+128.
_NN4 = (_NN2_STEM_HEAD - 131_200 + sum(_NN2_MODULES[:8]) + 1_385_536 + 1_295_424
        + 114_816)
# NNS1 (our design): conv1 7*7*3*32+32, 32*32+32, 9*32*96+96; modules 3a 3b 3c
# 4a 4e 5a 5b at half NN2 width; fc1 (6*6*512)*1280+1280; embedding 1280*128+128.
_NNS1 = (4_736 + 1_056 + 27_744 + 41_016 + 57_056 + 99_568 + 136_576 + 179_504
         + 2 * 397_432 + 23_594_240 + 163_968)
# NNS2 (our design): conv1 7*7*3*8+8, 8*8+8, 9*8*24+24; modules 3a 3c 4a 4e 5a
# at quarter NN2 width; fc1 (5*4*256)*768+768; embedding 768*128+128.
_NNS2 = (1_184 + 72 + 1_752 + 9_052 + 24_312 + 32_192 + 44_952 + 99_516 + 3_932_928
         + 98_432)

# name: (our exact count, published or derived figure, tolerance)
_PARAMS = {
    "nn2": (_NN2_STEM_HEAD + sum(_NN2_MODULES), 7.5e6, 0.03),  # paper: 7.5M (rounded)
    "nn3": (_NN2_STEM_HEAD + sum(_NN2_MODULES), 7.5e6, 0.03),  # same net, global pool
    "nn4": (_NN4, 6_943_952, 0.0),  # OpenFace nn4 minus BN: 6,959,088 - 2 * 7,568
    "nns1": (_NNS1, 26e6, 0.10),  # paper: 26M, no table published
    "nns2": (_NNS2, 4.3e6, 0.10),  # paper: 4.3M, no table published
}


@pytest.mark.parametrize("name", sorted(_PARAMS))
def test_param_count(name):
  ours, published, tol = _PARAMS[name]
  _, _, shapes = _full_size_shapes(name)
  assert _count(shapes["params"]) == ours
  assert abs(ours - published) / published <= tol, ours


@pytest.mark.parametrize("name,openface", [("nn2", 7_472_144), ("nn4", 6_959_088)])
def test_batch_norm_counts_match_openface(name, openface):
  # OpenFace keeps the conv bias in front of BN; we drop it: one parameter
  # fewer per conv channel (NN2 7,920 channels, NN4 7,568).
  _, _, shapes = _full_size_shapes(name, batch_norm=True)
  channels = _count(shapes["batch_stats"]) // 2
  assert _count(shapes["params"]) + channels == openface


# name: (dense multiply-adds from the layer tables, published figure)
# Dense counts, by hand: NN2 stem 9,408*112^2 + 4,096*56^2 + 110,592*56^2 =
# 477.7M, modules 128.0 + 178.2 + 108.0 + 106.8 + 116.5 + 128.0 + 141.4 + 56.2
# + 77.8 + 77.8 M, FC 0.13M: 1.597G.
_MACS = {
    "nn2": (1_596_530_688, 1.6e9),  # paper Table 2
    "nn4": (288_870_400, 285e6),  # paper §3.3
    "nns1": (220_471_008, 220e6),  # paper Table 3
    "nns2": (20_941_728, 20e6),  # paper Table 3
}


@pytest.mark.parametrize("name", sorted(_MACS))
def test_flops_match_paper(name):
  dense, published = _MACS[name]
  model, x, shapes = _full_size_shapes(name)
  xla_macs = jax.jit(model.apply).lower(shapes, x).cost_analysis()["flops"] / 2
  # XLA skips conv taps on zero padding (many on the 3x3..7x7 maps), so it is
  # a few % under the dense count: NN2 1.538G, NN4 264M, NNS1 212M, NNS2 20.2M.
  assert 0.9 * dense < xla_macs < dense
  assert abs(xla_macs - published) / published < 0.10, xla_macs


# NN3 has no published per-net figure, so its count is checked against one
# made here, layer by layer, from the paper's Table 2 rows (NN3 is NN2 at
# 160x160) and the module rules (3x3 pad 1, 5x5 pad 2, 7x7 pad 3, 3x3/2 max
# pools pad 1, floor sizes; in 3c/4e only the 3x3, the 5x5 and the pool are
# strided), without the model code.
# (name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj, stride)
_TABLE_2 = [("3a", 64, 96, 128, 16, 32, 32, 1), ("3b", 64, 96, 128, 32, 64, 64, 1),
            ("3c", 0, 128, 256, 32, 64, 0, 2), ("4a", 256, 96, 192, 32, 64, 128, 1),
            ("4b", 224, 112, 224, 32, 64, 128, 1), ("4c", 192, 128, 256, 32, 64, 128, 1),
            ("4d", 160, 144, 288, 32, 64, 128, 1), ("4e", 0, 160, 256, 64, 128, 0, 2),
            ("5a", 384, 192, 384, 48, 128, 128, 1), ("5b", 384, 192, 384, 48, 128, 128, 1)]


def _hand_count_macs(size, embedding_dim=128):
  """(dense, in-image) multiply-adds of NN2's layer table on a size x size input.

  Dense counts k*k*cin*cout per output position; in-image counts only the
  taps that land inside the map, not on the zero padding.
  """
  def out(n, k, s):
    return (n + 2 * (k // 2) - k) // s + 1

  def taps(n, k, s):  # in-image taps along one axis, summed over the outputs
    return sum(min(i * s - k // 2 + k, n) - max(i * s - k // 2, 0) for i in range(out(n, k, s)))

  dense = inside = 0

  def conv(n, cin, cout, k, s=1):
    nonlocal dense, inside
    dense += k * k * cin * cout * out(n, k, s) ** 2
    inside += taps(n, k, s) ** 2 * cin * cout
    return out(n, k, s)

  n = out(conv(size, 3, 64, 7, 2), 3, 2)  # conv1 7x7/2, max pool 3x3/2
  conv(n, 64, 64, 1)  # inception(2): 1x1 reduce -> 3x3
  n = out(conv(n, 64, 192, 3), 3, 2)  # max pool 3x3/2
  c = 192
  for _, n1, r3, n3, r5, n5, proj, s in _TABLE_2:
    for cout in (n1, r3, r5):  # the 1x1 convs run at the input resolution
      if cout:
        conv(n, c, cout, 1)
    m = conv(n, r3, n3, 3, s)
    conv(n, r5, n5, 5, s)
    if proj:
      conv(m, c, proj, 1)  # after the stride-1 pool
    c, n = n1 + n3 + n5 + (proj or c), m
  # Global average pool (no multiply-adds of its own) -> FC c -> 128.
  return dense + c * embedding_dim, inside + c * embedding_dim


def test_nn3_macs_match_a_hand_count():
  dense, inside = _hand_count_macs(160)
  # 815M, within the 500M-1.6B the paper gives for its Inception nets (§3.3).
  assert dense == 814_620_672
  model, x, shapes = _full_size_shapes("nn3")
  xla_macs = jax.jit(model.apply).lower(shapes, x).cost_analysis()["flops"] / 2
  # XLA counts the in-image taps plus the elementwise work (bias adds, ReLUs,
  # LRN, pools, the L2 norm) at one flop per element: measured 769.8M against
  # the 764.1M in-image taps, +0.76%. Allow [0, +2%].
  assert inside <= xla_macs <= 1.02 * inside, (xla_macs, inside)


def test_head_fan_in_follows_the_final_map():
  # NN2 global-pools 7x7x1024; NN4's 5a/5b have no 5x5 (896 channels);
  # NNS1 flattens 6x6x512 and NNS2 5x4x256 (140x116 input).
  assert _full_size_shapes("nn2")[2]["params"]["embedding"]["kernel"].shape == (1024, 128)
  assert _full_size_shapes("nn4")[2]["params"]["embedding"]["kernel"].shape == (896, 128)
  assert _full_size_shapes("nns1")[2]["params"]["fc1"]["kernel"].shape == (6 * 6 * 512, 1280)
  assert _full_size_shapes("nns2")[2]["params"]["fc1"]["kernel"].shape == (5 * 4 * 256, 768)


def test_strided_module_matches_table_2_sizes():
  # 3c: 28x28x320 -> 14x14x(256 + 64 + 320 pooled); 4e: -> 7x7x1024.
  m = InceptionModule(0, 128, 256, 32, 64, "max", 0, stride=2)
  x = jnp.zeros((2, 28, 28, 320))
  out = jax.eval_shape(lambda x: m.init_with_output(jax.random.key(0), x)[0], x)
  assert out.shape == (2, 14, 14, 640)
  m = InceptionModule(0, 160, 256, 64, 128, "max", 0, stride=2)
  out = jax.eval_shape(lambda x: m.init_with_output(jax.random.key(0), x)[0],
                       jnp.zeros((2, 14, 14, 640)))
  assert out.shape == (2, 7, 7, 1024)


def _random_variables(model, x, seed=0):
  """He-normal kernels, zero biases, identity BN, drawn in numpy.

  Stands in for `model.init`, whose ~60 threefry draws take XLA a minute to
  compile on a loaded 2-core machine; real init runs in the config smoke test.
  """
  shapes = jax.eval_shape(lambda k: model.init(k, x, train=False), jax.random.key(0))
  rng = np.random.default_rng(seed)

  def fill(path, s):
    leaf = path[-1].key
    if leaf == "kernel":
      return jnp.asarray(rng.normal(size=s.shape) * np.sqrt(2 / np.prod(s.shape[:-1])), s.dtype)
    return (jnp.ones if leaf in ("scale", "var") else jnp.zeros)(s.shape, s.dtype)

  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("name,size", [("nn2", (32, 32)), ("nns1", (32, 32)), ("nns2", (48, 40))])
def test_embeddings_are_unit_norm_and_shaped(name, size):
  model = create_model(ml_collections.ConfigDict(dict(name=name, embedding_dim=16, width=0.25)))
  x = jax.random.normal(jax.random.key(1), (3, *size, 3))
  e, _ = jax.jit(model.apply)(_random_variables(model, x), x)
  assert e.shape == (3, 16) and e.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(np.asarray(e), axis=1), 1.0, atol=1e-5)


def test_l2_pool_matches_numpy_formula_and_has_finite_grads():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
  y = np.asarray(L2Pool(stride=2, padding=1, eps=0.0).apply({}, jnp.asarray(x)))
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  assert y.shape == (2, 3, 2, 3)
  for i in range(3):
    for j in range(2):
      win = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]
      np.testing.assert_allclose(y[:, i, j], np.sqrt((win ** 2).sum(axis=(1, 2))), rtol=1e-5)
  # Post-ReLU maps have all-zero windows, where sqrt alone has an infinite slope.
  g = jax.grad(lambda z: L2Pool().apply({}, z).sum())(jnp.zeros((1, 4, 4, 2)))
  assert np.all(np.isfinite(np.asarray(g)))


def _fixed_batch(size, ids=4, per_id=3):
  # Each identity is a noise "face" plus small per-image noise: learnable.
  rng = np.random.default_rng(0)
  faces = rng.normal(size=(ids, 1, *size, 3))
  images = faces + 0.3 * rng.normal(size=(ids, per_id, *size, 3))
  labels = np.repeat(np.arange(ids), per_id)
  return (jnp.asarray(images.reshape(-1, *size, 3), jnp.float32), jnp.asarray(labels, jnp.int32),
          jnp.ones(ids * per_id, bool))


# NNS2 is the cheapest net to compile; its modules (max and L2 pools, strided
# 3c/4e) are the same code as NN2's.
@pytest.mark.parametrize("bn", [True, False])
def test_training_steps_lower_the_loss(bn):
  model = create_model(ml_collections.ConfigDict(dict(
      name="nns2", embedding_dim=16, width=0.5, batch_norm=bn)))
  images, labels, mask = _fixed_batch((48, 40))
  variables = _random_variables(model, images[:1])
  stats = variables.get("batch_stats", {})

  def loss_fn(params, stats):
    if bn:
      (emb, _), upd = model.apply({"params": params, "batch_stats": stats}, images,
                                  train=True, mutable=["batch_stats"])
      stats = upd["batch_stats"]
    else:
      emb, _ = model.apply({"params": params}, images, train=True)
    return triplet.batch_all_triplet_loss(emb, labels, mask, margin=0.2)[0], stats

  tx = optax.adam(1e-3)

  @jax.jit
  def step(params, stats, opt_state):
    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  params = variables["params"]
  opt_state = tx.init(params)
  losses = []
  for _ in range(6):
    params, stats, opt_state, loss = step(params, stats, opt_state)
    losses.append(float(loss))
  # The loss a further step reports is computed before its update: the loss
  # of the trained params on the same batch, without a second compile.
  after = float(step(params, stats, opt_state)[3])
  assert np.isfinite(losses[0]) and after < losses[0], (losses, after)


def test_batch_norm_stats_change_in_train_mode_and_are_used_in_eval():
  model = create_model(ml_collections.ConfigDict(dict(
      name="nns2", embedding_dim=16, width=0.25, batch_norm=True)))
  x = jax.random.normal(jax.random.key(2), (6, 48, 40, 3))
  variables = _random_variables(model, x)
  assert "bias" not in variables["params"]["conv1"]["conv"]
  (e_train, _), updates = jax.jit(
      lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables, x)
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                         variables["batch_stats"], updates["batch_stats"])
  assert all(jax.tree.leaves(changed))
  e_eval, _ = jax.jit(model.apply)(variables, x)
  # Eval uses the running averages (still mean 0, var 1 here), not the batch
  # statistics: it equals BN-free arithmetic on these params.
  assert not np.allclose(np.asarray(e_train), np.asarray(e_eval))
  moved = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
  assert not np.allclose(np.asarray(e_eval), np.asarray(jax.jit(model.apply)(moved, x)[0]))
