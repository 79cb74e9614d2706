"""Model registry: `config.model.name` -> Flax module."""

from typing import Any, Callable

import jax.numpy as jnp
import ml_collections

from facejax.models.layers import (Conv, L2Pool, LocalResponseNorm, MaxoutDense, l2_normalize,
                                   max_pool, normalized_embedding)
from facejax.models.baselines import RawPixels
from facejax.models.nn1 import NN1
from facejax.models.openface import NN4Small2
from facejax.models.inception import FaceNetInception, InceptionModule, NN2, NN3, NN4, NNS1, NNS2
from facejax.models.sphereface import SphereFace, SphereFace20, SphereFace36, SphereFace64
from facejax.models.inception_resnet_v1 import InceptionResNetV1

# name -> (module class, input size it was designed for (H, W))
MODELS: dict[str, tuple[Callable[..., Any], tuple[int, int]]] = {
    "nn1": (NN1, (220, 220)),
    "nn2": (NN2, (224, 224)),
    "nn3": (NN3, (160, 160)),
    "nn4": (NN4, (96, 96)),
    "nn4_small2": (NN4Small2, (96, 96)),
    "nns1": (NNS1, (165, 165)),
    "nns2": (NNS2, (140, 116)),
    "inception_resnet_v1": (InceptionResNetV1, (160, 160)),
    "raw_pixels": (RawPixels, (0, 0)),
    "sphereface20": (SphereFace20, (112, 96)),
    "sphereface36": (SphereFace36, (112, 96)),
    "sphereface64": (SphereFace64, (112, 96)),
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


__all__ = [
    "MODELS", "create_model", "NN1", "NN4Small2", "NN2", "NN3", "NN4", "NNS1", "NNS2",
    "FaceNetInception", "InceptionModule", "RawPixels", "SphereFace", "SphereFace20",
    "SphereFace36", "SphereFace64", "InceptionResNetV1", "Conv", "L2Pool", "LocalResponseNorm",
    "MaxoutDense", "l2_normalize", "max_pool", "normalized_embedding",
]
