"""Model registry: `config.model.name` -> Flax module."""

from typing import Any, Callable

import jax.numpy as jnp
import ml_collections

from facejax.models.layers import LocalResponseNorm, MaxoutDense, l2_normalize
from facejax.models.baselines import RawPixels
from facejax.models.nn1 import NN1

# name -> (module class, input size it was designed for (H, W))
MODELS: dict[str, tuple[Callable[..., Any], tuple[int, int]]] = {
    "nn1": (NN1, (220, 220)),
    "raw_pixels": (RawPixels, (0, 0)),
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def create_model(model_config: ml_collections.ConfigDict):
  """Builds the module named by `model_config.name` with the other keys as kwargs.

  `model_config.dtype` is a string ("float32" or "bfloat16").
  """
  kwargs = dict(model_config)
  name = kwargs.pop("name")
  if name not in MODELS:
    raise ValueError(
        f"config.model.name={name!r} is not a known net; choose one of {sorted(MODELS)}")
  dtype = kwargs.pop("dtype", "float32")
  if dtype not in _DTYPES:
    raise ValueError(f"config.model.dtype={dtype!r}: choose one of {sorted(_DTYPES)}")
  cls, _ = MODELS[name]
  try:
    return cls(dtype=_DTYPES[dtype], **kwargs)
  except TypeError as e:
    raise ValueError(f"config.model has a key that {name} does not take: {e}") from e


__all__ = ["MODELS", "create_model", "NN1", "RawPixels", "LocalResponseNorm", "MaxoutDense", "l2_normalize"]
