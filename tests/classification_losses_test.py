"""Tests for facejax.losses.classification (softmax, center loss, angular margins).

The references are written from the formulas in shared/reference/PROTOCOLS.md, in float64
numpy with explicit per-row loops, np.arccos/np.cos for every angle (the code under test uses
Chebyshev polynomials and trig identities instead) and no code shared with the implementation.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from facejax import losses
from facejax.losses import (
    CLASSIFICATION_LOSSES,
    a_softmax_lambda,
    a_softmax_logits,
    angular_margin_loss,
    arcface_logits,
    center_loss_term,
    combined_margin_logits,
    cosface_logits,
    softmax_center_loss,
    softmax_loss,
    update_centers,
)

MARGIN_KINDS = ("a_softmax", "cosface", "arcface", "combined")
HPARAMS = {  # Non-default values, so defaults cannot mask a wiring bug.
    "a_softmax": {"margin_m": 4},
    "cosface": {"scale": 30.0, "margin": 0.4},
    "arcface": {"scale": 30.0, "margin": 0.5},
    "combined": {"scale": 30.0, "m1": 1.1, "m2": 0.3, "m3": 0.2},
}



def ref_ce(logits, labels, mask):
  total, count = 0.0, 0
  for row, y, valid in zip(logits, labels, mask):
    if valid:
      top = row.max()
      total += top + math.log(np.sum(np.exp(row - top))) - row[y]
      count += 1
  return total / max(count, 1)


def ref_accuracy(scores, labels, mask):
  hits = [int(np.argmax(s) == y) for s, y, v in zip(scores, labels, mask) if v]
  return sum(hits) / max(len(hits), 1)


def ref_cos(x, w):
  x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
  return np.clip((x / np.linalg.norm(x, axis=1, keepdims=True))
                 @ (w / np.linalg.norm(w, axis=0, keepdims=True)), -1.0, 1.0)


def ref_psi(theta, m):
  k = min(math.floor(m * theta / math.pi), m - 1)  # theta = pi belongs to the last interval.
  return (-1) ** k * math.cos(m * theta) - 2 * k


def ref_target(kind, cos_y, norm, hp):
  """Margin-applied target logit of one row."""
  theta = math.acos(cos_y)
  if kind == "a_softmax":
    lam = hp["lambda_"]
    return (lam * norm * cos_y + norm * ref_psi(theta, hp["margin_m"])) / (1 + lam)
  if kind == "cosface":
    return hp["scale"] * (cos_y - hp["margin"])
  if kind == "arcface":
    m = hp["margin"]
    if hp.get("easy_margin", False):
      return hp["scale"] * (math.cos(theta + m) if cos_y > 0 else cos_y)
    if theta + m <= math.pi:
      return hp["scale"] * math.cos(theta + m)
    return hp["scale"] * (cos_y - math.sin(math.pi - m) * m)
  return hp["scale"] * (math.cos(hp["m1"] * theta + hp["m2"]) - hp["m3"])


def ref_logits(kind, x, w, labels, hp):
  cos = ref_cos(x, w)
  norms = np.linalg.norm(np.asarray(x, np.float64), axis=1)
  plain = norms[:, None] * cos if kind == "a_softmax" else hp["scale"] * cos
  for i, y in enumerate(labels):
    plain[i, y] = ref_target(kind, cos[i, y], norms[i], hp)
  return plain


def make_batch(seed, batch=12, dim=8, classes=5, nan_pad=True):
  """Features with varied norms, half of them near their class column (so accuracy is neither 0
  nor 1), one row almost opposite its column (ArcFace fallback region), 3 padded rows."""
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(dim, classes)).astype(np.float32)
  labels = rng.integers(0, classes, size=batch).astype(np.int32)
  x = rng.normal(scale=2.0, size=(batch, dim))
  x[::2] = 1.5 * w[:, labels[::2]].T + rng.normal(scale=0.5, size=x[::2].shape)
  x[1] = -w[:, labels[1]] + rng.normal(scale=0.05, size=dim)
  mask = np.ones(batch, bool)
  mask[[3, 8, 11]] = False
  x = x.astype(np.float32)
  if nan_pad:
    x[~mask] = np.nan
    labels[~mask] = [-1, 0, 99]  # Junk labels, including out of range, must not matter.
  return x, labels, mask, w


def _grads_finite_and_zero_on_padding(fn, x, mask, *params):
  grads = jax.grad(fn, argnums=tuple(range(1 + len(params))))(jnp.asarray(x), *params)
  for g in grads:
    assert np.isfinite(np.asarray(g)).all()
  np.testing.assert_array_equal(np.asarray(grads[0])[~mask], 0.0)



def test_init_heads():
  # The heads' own params (facejax.losses.heads), initialised as the trainer does.
  soft = losses.init_head(losses.SoftmaxHead(num_classes=100, feature_dim=64),
                          jax.random.PRNGKey(0))["params"]
  margin = losses.init_head(losses.CosFaceHead(num_classes=100, feature_dim=64),
                            jax.random.PRNGKey(1))["params"]
  assert soft["kernel"].shape == (64, 100) and soft["kernel"].dtype == jnp.float32
  assert soft["bias"].shape == (100,) and float(jnp.abs(soft["bias"]).max()) == 0.0
  assert set(margin) == {"kernel"} and margin["kernel"].shape == (64, 100)
  bound = math.sqrt(6.0 / (64 + 100))  # Glorot uniform.
  assert float(jnp.abs(soft["kernel"]).max()) <= bound
  assert float(jnp.abs(soft["kernel"]).max()) > 0.9 * bound


def test_softmax_loss_matches_numpy_with_nan_padding():
  x, labels, mask, w = make_batch(0)
  bias = np.linspace(-0.5, 0.5, w.shape[1]).astype(np.float32)
  head = {"kernel": jnp.asarray(w), "bias": jnp.asarray(bias)}
  loss, metrics = softmax_loss(x, labels, mask, head, step=7)  # Extra keywords are ignored.
  logits = np.nan_to_num(x.astype(np.float64)) @ w + bias
  assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
  np.testing.assert_allclose(float(loss), ref_ce(logits, labels, mask), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["accuracy"]), ref_accuracy(logits, labels, mask))
  assert 0.0 < float(metrics["accuracy"]) < 1.0
  assert int(metrics["num_valid"]) == 9 and metrics["num_valid"].dtype == jnp.int32
  _grads_finite_and_zero_on_padding(
      lambda f, k, b: softmax_loss(f, labels, mask, {"kernel": k, "bias": b})[0],
      x, mask, head["kernel"], head["bias"])
  bf16, _ = softmax_loss(jnp.asarray(x, jnp.bfloat16), labels, mask, head)
  assert bf16.dtype == jnp.float32


def test_center_loss_matches_numpy_and_centers_get_no_gradient():
  x, labels, mask, _ = make_batch(1)
  centers = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
  loss, metrics = center_loss_term(x, labels, mask, centers, 0.03)
  sq = [np.sum((x[i].astype(np.float64) - centers[labels[i]]) ** 2)
        for i in range(len(labels)) if mask[i]]
  # caffe-face normalisation: (lambda / 2) * sum / (number of valid rows).
  np.testing.assert_allclose(float(loss), 0.5 * 0.03 * sum(sq) / len(sq), rtol=1e-5)
  np.testing.assert_allclose(float(metrics["center_distance"]), np.mean(sq), rtol=1e-5)
  _grads_finite_and_zero_on_padding(
      lambda f, c: center_loss_term(f, labels, mask, c, 0.03)[0], x, mask, jnp.asarray(centers))
  grad_c = jax.grad(lambda c: center_loss_term(np.nan_to_num(x), labels, mask, c, 0.03)[0])(
      jnp.asarray(centers))
  np.testing.assert_array_equal(np.asarray(grad_c), 0.0)


def test_update_centers_hand_worked_example():
  centers = np.array([[0.0, 0.0], [2.0, 2.0], [5.0, 5.0]], np.float32)
  x = np.array([[1, 2], [2, 4], [6, 0], [np.nan, np.nan]], np.float32)
  labels = np.array([0, 0, 1, 2], np.int32)  # Row 3 is padded: class 2 is absent.
  mask = np.array([True, True, True, False])
  # alpha = 0.5.
  # Class 0 (2 rows): sum(c0 - x_i) = (0-1 + 0-2, 0-2 + 0-4) = (-3, -6); delta = (-3, -6) / 3
  #   = (-1, -2); c0 <- (0, 0) - 0.5 * (-1, -2) = (0.5, 1).
  # Class 1 (1 row): c1 - x = (2-6, 2-0) = (-4, 2); delta = (-4, 2) / 2 = (-2, 1);
  #   c1 <- (2, 2) - 0.5 * (-2, 1) = (3, 1.5).
  # Class 2 (absent; its only row is padded): unchanged (5, 5).
  expected = np.array([[0.5, 1.0], [3.0, 1.5], [5.0, 5.0]], np.float32)
  new = update_centers(centers, x, labels, mask, 0.5)
  assert new.shape == (3, 2) and new.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(new), expected, atol=1e-6)


def test_update_centers_matches_numpy_loop():
  x, labels, mask, _ = make_batch(2, batch=20, classes=7)
  centers = np.random.default_rng(2).normal(size=(7, 8)).astype(np.float32)
  expected = centers.astype(np.float64).copy()
  for j in range(7):
    rows = [i for i in range(len(labels)) if mask[i] and labels[i] == j]
    delta = sum((centers[j] - x[i] for i in rows), np.zeros(8)) / (1 + len(rows))
    expected[j] = centers[j] - 0.9 * delta
  new = jax.jit(update_centers)(centers, x, labels, mask, 0.9)
  np.testing.assert_allclose(np.asarray(new), expected, rtol=1e-5, atol=1e-6)


def test_softmax_center_loss_is_sum_with_merged_metrics():
  x, labels, mask, w = make_batch(3)
  head = {"kernel": w, "bias": np.zeros(5, np.float32)}
  centers = np.zeros((5, 8), np.float32)
  loss, metrics = softmax_center_loss(x, labels, mask, head, centers, 0.01)
  sm, sm_metrics = softmax_loss(x, labels, mask, head)
  cl, cl_metrics = center_loss_term(x, labels, mask, centers, 0.01)
  np.testing.assert_allclose(float(loss), float(sm) + float(cl), rtol=1e-6)
  assert set(metrics) == set(sm_metrics) | set(cl_metrics) | {"softmax_loss", "center_loss"}
  for key, part in (("softmax_loss", sm), ("center_loss", cl)):
    np.testing.assert_allclose(float(metrics[key]), float(part), rtol=1e-6)



@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_a_softmax_psi_matches_arccos_reference_and_decreases(m):
  # Unit features at angle theta to class 0's column (scaled: columns are normalised inside), so
  # with lambda = 0 the target logit is exactly psi(theta).
  theta = np.linspace(0.0, np.pi, 721)  # Step pi/720: every k pi / m (m <= 4) is a grid point.
  x = np.stack([np.cos(theta), np.sin(theta)], axis=1).astype(np.float32)
  head = {"kernel": np.array([[3.0, 0.0], [0.0, 1.0]], np.float32)}
  logits = np.asarray(a_softmax_logits(x, np.zeros(len(x), np.int32), head, m, 0.0))
  psi = logits[:, 0]
  np.testing.assert_allclose(psi, [ref_psi(t, m) for t in theta], atol=2e-5)
  np.testing.assert_allclose(logits[:, 1], np.sin(theta), atol=1e-6)  # Non-target: cos only.
  assert (np.diff(psi) < 0).all()  # Strictly decreasing on [0, pi].
  np.testing.assert_allclose(psi[-1], 1 - 2 * m, atol=1e-5)


def test_a_softmax_lambda_schedule():
  for step, expected in [(0, 1000.0), (100, 1000.0 / 13.0), (10000, 5.0)]:
    np.testing.assert_allclose(float(a_softmax_lambda(step)), expected, rtol=1e-6)
  assert 1000.0 / (1 + 0.12 * 10000) < 5.0  # Step 10000 really is clamped at lambda_min.
  np.testing.assert_allclose(float(a_softmax_lambda(50, 500.0, 0.1, 2.0, 1.0)), 500.0 / 36.0,
                             rtol=1e-6)
  traced = jax.jit(a_softmax_lambda)(jnp.asarray(100))
  np.testing.assert_allclose(float(traced), 1000.0 / 13.0, rtol=1e-6)


def test_a_softmax_m1_lambda0_is_normalised_weight_softmax():
  x, labels, _, w = make_batch(4, nan_pad=False)
  logits = a_softmax_logits(x, labels, {"kernel": w}, margin_m=1, lambda_=0.0)
  w_hat = w / np.linalg.norm(w, axis=0, keepdims=True)
  np.testing.assert_allclose(np.asarray(logits), x @ w_hat, rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("kind,hp", [
    ("a_softmax", {"margin_m": 3, "lambda_": 2.5}),
    ("cosface", HPARAMS["cosface"]),
    ("arcface", HPARAMS["arcface"]),
    ("arcface", {"scale": 30.0, "margin": 0.5, "easy_margin": True}),
    ("combined", HPARAMS["combined"]),
])
def test_margin_logits_match_numpy(kind, hp):
  x, labels, _, w = make_batch(5, nan_pad=False)
  cos = ref_cos(x, w)
  # Row 1 sits past theta + m > pi, where ArcFace uses its fallback.
  assert math.acos(cos[1, labels[1]]) + 0.5 > math.pi
  fn = {"a_softmax": a_softmax_logits, "cosface": cosface_logits, "arcface": arcface_logits,
        "combined": combined_margin_logits}[kind]
  logits = fn(x, labels, {"kernel": w}, **hp)
  assert logits.shape == (12, 5) and logits.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(logits), ref_logits(kind, x, w, labels, hp),
                             rtol=1e-4, atol=1e-4)


def test_combined_reproduces_cosface_and_arcface():
  x, labels, _, w = make_batch(6, nan_pad=False)
  x[1] = -x[1]  # Move the row out of the ArcFace fallback region.
  assert all(math.acos(c) + 0.5 < math.pi for c in ref_cos(x, w)[np.arange(12), labels])
  head = {"kernel": w}
  np.testing.assert_allclose(
      np.asarray(combined_margin_logits(x, labels, head, 64.0, 1.0, 0.0, 0.35)),
      np.asarray(cosface_logits(x, labels, head, 64.0, 0.35)), atol=1e-4)
  np.testing.assert_allclose(
      np.asarray(combined_margin_logits(x, labels, head, 64.0, 1.0, 0.5, 0.0)),
      np.asarray(arcface_logits(x, labels, head, 64.0, 0.5)), atol=1e-4)


@pytest.mark.parametrize("kind", MARGIN_KINDS)
def test_angular_margin_loss_matches_numpy_with_nan_padding(kind):
  x, labels, mask, w = make_batch(7)
  loss, metrics = angular_margin_loss(x, labels, mask, {"kernel": w}, kind=kind, step=100,
                                      **HPARAMS[kind])
  hp = dict(HPARAMS[kind], lambda_=1000.0 / 13.0)  # SphereFace schedule at step 100.
  x0 = np.where(mask[:, None], x, 1.0)  # Any finite value: padded rows are skipped below.
  labels0 = np.where(mask, labels, 0)
  np.testing.assert_allclose(float(loss), ref_ce(ref_logits(kind, x0, w, labels0, hp), labels0,
                                                 mask), rtol=1e-4)
  cos = ref_cos(x0, w)
  np.testing.assert_allclose(float(metrics["accuracy"]), ref_accuracy(cos, labels0, mask))
  np.testing.assert_allclose(float(metrics["mean_target_cos"]),
                             np.mean(cos[np.arange(12), labels0][mask]), atol=1e-5)
  assert int(metrics["num_valid"]) == 9
  if kind == "a_softmax":
    np.testing.assert_allclose(float(metrics["lambda"]), 1000.0 / 13.0, rtol=1e-6)
  _grads_finite_and_zero_on_padding(
      lambda f, k: angular_margin_loss(f, labels, mask, {"kernel": k}, kind=kind, step=100,
                                       **HPARAMS[kind])[0], x, mask, jnp.asarray(w))


@pytest.mark.parametrize("kind", ("softmax", "center") + MARGIN_KINDS)
def test_all_padded_batch_gives_zero_loss_and_zero_grads(kind):
  x = jnp.full((4, 8), jnp.nan)
  labels, mask = jnp.zeros(4, jnp.int32), jnp.zeros(4, bool)
  w = jnp.ones((8, 5))
  if kind == "softmax":
    fn = lambda f: softmax_loss(f, labels, mask, {"kernel": w, "bias": jnp.zeros(5)})
  elif kind == "center":
    fn = lambda f: softmax_center_loss(f, labels, mask, {"kernel": w, "bias": jnp.zeros(5)},
                                       jnp.zeros((5, 8)), 0.1)
  else:
    fn = lambda f: angular_margin_loss(f, labels, mask, {"kernel": w}, kind=kind)
  loss, metrics = fn(x)
  assert float(loss) == 0.0
  assert all(np.isfinite(np.asarray(v)) for v in metrics.values())
  np.testing.assert_array_equal(np.asarray(jax.grad(lambda f: fn(f)[0])(x)), 0.0)


@pytest.mark.parametrize("kind", MARGIN_KINDS)
def test_features_on_a_class_axis_give_finite_gradients(kind):
  # cos = +-1 exactly, where d/dc arccos(c) and d/dc sqrt(1 - c^2) are infinite.
  x = jnp.asarray([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-3.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
  labels, mask = jnp.asarray([0, 1, 0, 2]), jnp.ones(4, bool)
  w = jnp.eye(3) * 2.0
  cos = ref_cos(x, w)[np.arange(4), labels]
  assert set(cos.tolist()) == {1.0, -1.0}
  fn = lambda f, k: angular_margin_loss(f, labels, mask, {"kernel": k}, kind=kind)[0]
  for g in jax.grad(fn, argnums=(0, 1))(x, w):
    assert np.isfinite(np.asarray(g)).all()


@pytest.mark.parametrize("kind", ("softmax", "center") + MARGIN_KINDS)
def test_gradients_match_finite_differences(kind):
  rng = np.random.default_rng(8)
  labels = np.array([0, 1, 2, 0, 1, 3], np.int32)
  mask = np.array([True, True, True, True, False, True])
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(size=(6, 4)))
    w = jnp.asarray(rng.normal(size=(4, 4)))
    cos = np.asarray(ref_cos(x, w))
    assert np.abs(cos).max() < 0.95  # Far from +-1, where arccos-style terms are stiff.
    if kind == "softmax":
      fn = lambda f, k: softmax_loss(f, labels, mask, {"kernel": k, "bias": jnp.ones(4)})[0]
      args = (x, w)
    elif kind == "center":  # Only w.r.t. features: the centers get no gradient by design.
      fn = lambda f: center_loss_term(f, labels, mask, w.T, 0.5)[0]
      args = (x,)
    else:
      # Small scale / lambda: a saturated softmax would make the check vacuous.
      hp = {"margin_m": 4, "lambda_": 0.5} if kind == "a_softmax" else dict(HPARAMS[kind],
                                                                             scale=4.0)
      fn = lambda f, k: angular_margin_loss(f, labels, mask, {"kernel": k}, kind=kind, **hp)[0]
      args = (x, w)
    assert fn(*args).dtype == jnp.float64 and float(fn(*args)) > 0
    check_grads(fn, args, order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("kind", ("softmax", "center") + MARGIN_KINDS)
def test_jit_with_traced_step_matches_eager(kind):
  x, labels, mask, w = make_batch(9)
  if kind in ("softmax", "center"):
    head = {"kernel": w, "bias": np.zeros(5, np.float32)}
    fn = lambda step: (softmax_loss(x, labels, mask, head, step=step) if kind == "softmax" else
                       softmax_center_loss(x, labels, mask, head, np.zeros((5, 8)), 0.1))
  else:
    fn = lambda step: angular_margin_loss(x, labels, mask, {"kernel": w}, kind=kind, step=step)
  jitted = jax.jit(fn)
  for step in (0, 100, 10000):  # One compilation: step is traced.
    loss, metrics = jitted(jnp.asarray(step))
    eager_loss, eager_metrics = fn(step)
    np.testing.assert_allclose(float(loss), float(eager_loss), rtol=1e-5)
    for key in eager_metrics:
      np.testing.assert_allclose(float(metrics[key]), float(eager_metrics[key]), rtol=1e-5)
  if kind == "a_softmax":
    np.testing.assert_allclose(float(jitted(jnp.asarray(10000))[1]["lambda"]), 5.0)


def test_registry_exports_and_bad_arguments():
  assert CLASSIFICATION_LOSSES == ("softmax", "center", "a_softmax", "cosface", "arcface",
                                   "combined")
  for name in ("CLASSIFICATION_LOSSES", "update_centers", "angular_margin_loss", "arcface_logits"):
    assert name in losses.__all__
  x, labels, mask, w = make_batch(10)
  with pytest.raises(ValueError, match="sphereface"):
    angular_margin_loss(x, labels, mask, {"kernel": w}, kind="sphereface")
  with pytest.raises(TypeError, match="margn"):
    angular_margin_loss(x, labels, mask, {"kernel": w}, kind="cosface", margn=0.3)
  with pytest.raises(ValueError, match="margin_m"):
    a_softmax_logits(x, labels, {"kernel": w}, margin_m=5)
