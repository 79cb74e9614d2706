"""Multiply-adds of a net's forward pass, counted the way papers and ptflops count them.

Convolutions count output elements x kernel taps x input channels per group,
whatever the padding; Dense layers (and the 1x1 convs facejax runs as
matmuls) count output elements x contracted size. BatchNorm, activations,
pooling and adds are not counted. XLA's cost analysis differs on two points:
it skips the taps that fall on padding, and it counts every elementwise op,
so it cannot be compared with published figures directly.
"""

import math

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

from facejax.models import layers


def _eqn_macs(eqn) -> int:
  name = eqn.primitive.name
  if name == "conv_general_dilated":
    out = eqn.outvars[0].aval.shape
    rhs = eqn.invars[1].aval.shape
    spec = eqn.params["dimension_numbers"].rhs_spec  # (out, in, *spatial) axes of rhs
    taps = math.prod(rhs[d] for d in spec[2:])
    return math.prod(out) * taps * rhs[spec[1]]
  if name == "dot_general":
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    lhs = eqn.invars[0].aval.shape
    return math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
  return 0


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    total += _eqn_macs(eqn)
    for param in eqn.params.values():
      for sub in (param if isinstance(param, (list, tuple)) else (param,)):
        if isinstance(sub, jax_core.ClosedJaxpr):
          total += _jaxpr_macs(sub.jaxpr)
        elif isinstance(sub, jax_core.Jaxpr):
          total += _jaxpr_macs(sub)
  return total


def multiply_adds(model, image_shape: tuple[int, int, int]) -> int:
  """Multiply-adds of `model.apply(variables, images)` for one image of `image_shape` (H, W, C).

  Nothing is computed: the forward pass is traced on abstract values.
  """
  images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  # Grouped convolutions run as multiply-adds of shifted taps, invisible here: traced as
  # the convolutions they are.
  with layers.grouped_convs_as_convolutions():
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables, images)
  return _jaxpr_macs(jaxpr.jaxpr)
