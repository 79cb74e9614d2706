"""Angular-margin classification losses: A-Softmax (SphereFace), CosFace, ArcFace, combined.

All of them work on ``cos(theta_j) = x_hat . w_hat_j``: the feature row and each kernel column are
L2-normalised here, in at least float32, and the cosine is clipped to [-1, 1]. Only the target
logit ``j = y`` gets a margin. Conventions (``mask``, padded rows, dtypes, metrics) are those of
:mod:`facejax.losses.classification`. Written from the papers' formulas: A-Softmax
``|x| psi(theta_y)`` with ``psi(theta) = (-1)^k cos(m theta) - 2k`` on ``[k pi/m, (k+1) pi/m]``,
blended with the plain logit by ``lambda`` (SphereFace, Liu et al. 2017); CosFace
``s (cos theta_y - m)`` (Wang et al. 2018); ArcFace ``s cos(theta_y + m)`` (Deng et al. 2019);
and the combined ``s (cos(m1 theta_y + m2) - m3)``.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp

from facejax.losses._masked import (
    SQ_NORM_EPS,
    Metrics,
    Params,
    base_metrics,
    cross_entropy_loss,
    masked_mean,
    one_hot,
    pick,
    prepare,
    stop,
    upcast,
)

__all__ = [
    "a_softmax_lambda",
    "a_softmax_logits",
    "cosface_logits",
    "arcface_logits",
    "combined_margin_logits",
    "angular_margin_loss",
]


def _cosine(features, kernel):
  """``cos [B, C]`` between rows and kernel columns (clipped to [-1, 1]) and ``norm [B]``."""
  kernel = jnp.asarray(kernel).astype(features.dtype)
  sq_norm = jnp.sum(features * features, axis=-1)
  x_hat = features * jax.lax.rsqrt(jnp.maximum(sq_norm, SQ_NORM_EPS))[:, None]
  col_sq_norm = jnp.sum(kernel * kernel, axis=0)
  w_hat = kernel * jax.lax.rsqrt(jnp.maximum(col_sq_norm, SQ_NORM_EPS))[None, :]
  # Rounding can push |cos| slightly past 1, where arccos/sqrt(1 - cos^2) would give NaN.
  cos = jnp.clip(x_hat @ w_hat, -1.0, 1.0)
  return cos, jnp.sqrt(jnp.maximum(sq_norm, SQ_NORM_EPS))


def _psi(cos, margin_m: int):
  """SphereFace's ``psi(theta) = (-1)^k cos(m theta) - 2k`` on ``theta in [k pi/m, (k+1) pi/m]``.

  ``cos(m theta)`` comes from the Chebyshev polynomial T_m(cos theta), as in SphereFace's
  released code, instead of ``cos(m * arccos(c))``: d/dc arccos(c) = -1/sqrt(1 - c^2) is infinite
  at c = +-1, so the arccos route gives inf/NaN gradients for features aligned with a column,
  while the polynomial is smooth. arccos is only used for the integer ``k``, which is piecewise
  constant and needs no gradient (hence the stop_gradient, which also keeps arccos out of the
  backward pass). psi is continuous at the interval boundaries, so rounding in ``k`` there is
  harmless; ``k`` is clipped to ``m - 1`` since theta = pi would otherwise give k = m.
  """
  chebyshev = {
      1: lambda c: c,
      2: lambda c: 2.0 * c**2 - 1.0,
      3: lambda c: 4.0 * c**3 - 3.0 * c,
      4: lambda c: 8.0 * c**4 - 8.0 * c**2 + 1.0,
  }
  if margin_m not in chebyshev:
    raise ValueError(f"A-Softmax margin_m must be an int in 1..4, got {margin_m!r}.")
  theta = jnp.arccos(jax.lax.stop_gradient(cos))
  k = jnp.clip(jnp.floor(margin_m * theta / jnp.pi), 0, margin_m - 1)
  sign = 1.0 - 2.0 * jnp.mod(k, 2.0)  # (-1)^k for a non-negative integer-valued float.
  return sign * chebyshev[margin_m](cos) - 2.0 * k


def _a_softmax(cos, norm, labels, margin_m, lambda_):
  target_mask = one_hot(labels, cos.shape[-1])
  cos_y = pick(cos, target_mask)
  target = (lambda_ * cos_y + _psi(cos_y, margin_m)) / (1.0 + lambda_)
  return norm[:, None] * jnp.where(target_mask, target[:, None], cos)


def _cosface(cos, labels, scale, margin):
  target_mask = one_hot(labels, cos.shape[-1])
  return scale * jnp.where(target_mask, cos - margin, cos)


def _arcface(cos, labels, scale, margin, easy_margin):
  target_mask = one_hot(labels, cos.shape[-1])
  cos_y = pick(cos, target_mask)
  # sin(theta) >= 0 on [0, pi]; the floor keeps d/dc sqrt(1 - c^2) finite at c = +-1.
  sin_y = jnp.sqrt(jnp.clip(1.0 - cos_y**2, SQ_NORM_EPS, 1.0))
  cos_y_m = cos_y * jnp.cos(margin) - sin_y * jnp.sin(margin)  # cos(theta + m).
  if easy_margin:
    target = jnp.where(cos_y > 0.0, cos_y_m, cos_y)
  else:
    # cos(theta + m) stops decreasing once theta + m > pi, i.e. cos(theta) < cos(pi - m): the
    # margin would then *reward* moving away from the class. InsightFace switches to the
    # monotone CosFace-like penalty cos(theta) - m sin(pi - m) there; we do the same.
    threshold = jnp.cos(jnp.pi - margin)
    target = jnp.where(cos_y > threshold, cos_y_m, cos_y - jnp.sin(jnp.pi - margin) * margin)
  return scale * jnp.where(target_mask, target[:, None], cos)


def _combined(cos, labels, scale, m1, m2, m3):
  target_mask = one_hot(labels, cos.shape[-1])
  cos_y = pick(cos, target_mask)
  # Clipped away from +-1 so that d/dc arccos(c) = -1/sqrt(1 - c^2) stays finite.
  theta = jnp.arccos(jnp.clip(cos_y, -1.0 + 1e-7, 1.0 - 1e-7))
  # No fallback for m1 * theta + m2 > pi (unlike arcface_logits): the target logit is the literal
  # formula everywhere, non-monotone past theta = (pi - m2) / m1, which with the usual margins
  # (m1 = 1, m2 <= 0.5) is only reached by features almost opposite to their class column.
  target = jnp.cos(m1 * theta + m2) - m3
  return scale * jnp.where(target_mask, target[:, None], cos)


def a_softmax_lambda(step, base=1000.0, gamma=0.12, power=1.0, lambda_min=5.0) -> jax.Array:
  """SphereFace's annealed blend weight ``max(lambda_min, base * (1 + gamma * step)^-power)``.

  Args:
    step: scalar iteration number (Python int or traced array).

  Returns:
    Scalar float32 ``lambda`` (float64 under x64 with a float64 ``step``).
  """
  step = upcast(step)
  return jnp.maximum(lambda_min, base * (1.0 + gamma * step) ** (-power))


def a_softmax_logits(features, labels, head: Params, margin_m: int = 4, lambda_=0.0):
  """A-Softmax (SphereFace) logits ``[B, C]``.

  Non-target logits are ``||x|| cos(theta_j)``; the target one is the blend
  ``(lambda ||x|| cos(theta_y) + ||x|| psi(theta_y)) / (1 + lambda)`` (``lambda = 0`` is pure
  A-Softmax; see :func:`a_softmax_lambda` for the training schedule and :func:`_psi`).

  Args:
    features: ``[B, D]`` float, not normalised (``||x||`` scales the logits).
    labels: ``[B]`` int32.
    head: ``{"kernel": [D, C]}``; columns are normalised here, any bias is ignored.
    margin_m: static int in 1..4 (``m = 1`` is the normalised-weight softmax).
    lambda_: scalar blend weight (may be traced).
  """
  features = upcast(features)
  cos, norm = _cosine(features, head["kernel"])
  return _a_softmax(cos, norm, jnp.asarray(labels), margin_m, lambda_)


def cosface_logits(features, labels, head: Params, scale=64.0, margin=0.35):
  """CosFace / AM-Softmax logits ``[B, C]``: ``s * (cos(theta_j) - m * 1[j = y])``."""
  cos, _ = _cosine(upcast(features), head["kernel"])
  return _cosface(cos, jnp.asarray(labels), scale, margin)


def arcface_logits(features, labels, head: Params, scale=64.0, margin=0.5, easy_margin=False):
  """ArcFace logits ``[B, C]``: target ``s * cos(theta_y + m)``, others ``s * cos(theta_j)``.

  ``cos(theta + m)`` is expanded as ``cos(theta) cos(m) - sin(theta) sin(m)`` so no arccos (and
  no infinite gradient) is involved. Past ``theta_y + m > pi`` the target is
  ``s * (cos(theta_y) - m sin(pi - m))`` (InsightFace's fallback); with ``easy_margin`` (static
  bool) the margin is applied only where ``cos(theta_y) > 0``.
  """
  cos, _ = _cosine(upcast(features), head["kernel"])
  return _arcface(cos, jnp.asarray(labels), scale, margin, easy_margin)


def combined_margin_logits(features, labels, head: Params, scale=64.0, m1=1.0, m2=0.5, m3=0.0):
  """Combined-margin logits ``[B, C]``: target ``s * (cos(m1 theta_y + m2) - m3)``.

  ``m1 = 1, m2 = 0, m3 = m`` is CosFace; ``m1 = 1, m2 = m, m3 = 0`` is ArcFace wherever
  ``theta_y + m <= pi`` (no fallback is applied here; see :func:`arcface_logits`).
  """
  cos, _ = _cosine(upcast(features), head["kernel"])
  return _combined(cos, jnp.asarray(labels), scale, m1, m2, m3)


def _keyword_defaults(fn) -> dict[str, object]:
  """Hyper-parameter defaults read from a public signature, so they live in one place."""
  skip = {"features", "labels", "head", "step"}
  return {name: p.default for name, p in inspect.signature(fn).parameters.items()
          if p.default is not inspect.Parameter.empty and name not in skip}


_MARGIN_DEFAULTS = {
    "a_softmax": {**_keyword_defaults(a_softmax_logits), **_keyword_defaults(a_softmax_lambda)},
    "cosface": _keyword_defaults(cosface_logits),
    "arcface": _keyword_defaults(arcface_logits),
    "combined": _keyword_defaults(combined_margin_logits),
}


def angular_margin_loss(
    features, labels, mask, head: Params, *, kind: str, step=0, **hparams
) -> tuple[jax.Array, Metrics]:
  """Cross-entropy of angular-margin logits, averaged over valid rows.

  Args:
    features: ``[B, D]`` float.
    labels: ``[B]`` int32.
    mask: ``[B]`` bool, False for padded rows.
    head: ``{"kernel": [D, C]}``.
    kind: static, one of ``"a_softmax"``, ``"cosface"``, ``"arcface"``, ``"combined"``.
    step: training step (may be traced); only A-Softmax uses it, for its lambda schedule.
    **hparams: keyword arguments of the matching ``*_logits`` function (and, for A-Softmax, of
      :func:`a_softmax_lambda`). For A-Softmax ``lambda_`` is taken from the schedule at ``step``
      unless given explicitly. Unknown names raise, so a config typo cannot silently fall back
      to a default.

  Returns:
    ``(loss, metrics)``: float32 ``accuracy`` (argmax of the margin-free cosines over valid
    rows), ``mean_target_cos``, int32 ``num_valid``, and for A-Softmax ``lambda``.
  """
  if kind not in _MARGIN_DEFAULTS:
    raise ValueError(f"Unknown angular margin kind {kind!r}; valid: {sorted(_MARGIN_DEFAULTS)}.")
  unknown = sorted(set(hparams) - set(_MARGIN_DEFAULTS[kind]))
  if unknown:
    raise TypeError(f"Unknown hyper-parameters for {kind!r}: {unknown}; "
                    f"valid: {sorted(_MARGIN_DEFAULTS[kind])}.")
  hp = {**_MARGIN_DEFAULTS[kind], **hparams}
  features, labels, mask = prepare(features, labels, mask)
  cos, norm = _cosine(features, head["kernel"])
  extra = {}
  if kind == "a_softmax":
    lambda_ = hparams.get("lambda_")
    if lambda_ is None:
      lambda_ = a_softmax_lambda(step, hp["base"], hp["gamma"], hp["power"], hp["lambda_min"])
    lambda_ = jnp.asarray(lambda_, features.dtype)
    logits = _a_softmax(cos, norm, labels, hp["margin_m"], lambda_)
    extra["lambda"] = lambda_.astype(jnp.float32)
  elif kind == "cosface":
    logits = _cosface(cos, labels, hp["scale"], hp["margin"])
  elif kind == "arcface":
    logits = _arcface(cos, labels, hp["scale"], hp["margin"], hp["easy_margin"])
  else:
    logits = _combined(cos, labels, hp["scale"], hp["m1"], hp["m2"], hp["m3"])

  loss = cross_entropy_loss(logits, labels, mask)
  metrics = base_metrics(cos, labels, mask)
  target_cos = pick(cos, one_hot(labels, cos.shape[-1]))
  metrics["mean_target_cos"] = masked_mean(target_cos, mask).astype(jnp.float32)
  return loss, stop({**metrics, **extra})
