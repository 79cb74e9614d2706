"""Model registry: `config.model.name` -> Flax module."""

import dataclasses
import typing
from typing import Any, Callable

import jax.numpy as jnp
import ml_collections

from facejax.errors import ConfigError, did_you_mean, unknown_keys
from facejax.models.layers import (Conv, L2Pool, LocalResponseNorm, MaxoutDense, l2_normalize,
                                   max_pool, normalized_embedding)
from facejax.models.baselines import RawPixels
from facejax.models.nn1 import NN1
from facejax.models.openface import NN4Small2
from facejax.models.inception import FaceNetInception, InceptionModule, NN2, NN3, NN4, NNS1, NNS2
from facejax.models.sphereface import SphereFace, SphereFace20, SphereFace36, SphereFace64
from facejax.models.inception_resnet_v1 import InceptionResNetV1
from facejax.models.iresnet import (IResNet, IResNet18, IResNet34, IResNet50, IResNet100,
                                    IResNet200)
from facejax.models.mobilefacenet import MobileFaceNet, MobileFaceNetLarge

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
    "iresnet18": (IResNet18, (112, 112)),
    "iresnet34": (IResNet34, (112, 112)),
    "iresnet50": (IResNet50, (112, 112)),
    "iresnet100": (IResNet100, (112, 112)),
    "iresnet200": (IResNet200, (112, 112)),
    "mobilefacenet": (MobileFaceNet, (112, 112)),
    "mobilefacenet_large": (MobileFaceNetLarge, (112, 112)),
}

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def config_keys(cls) -> set[str]:
  """The `config.model` keys net `cls` takes: its Flax dataclass fields, less Flax's own."""
  return {f.name for f in dataclasses.fields(cls) if f.init} - {"parent", "name"}


def _wrong_kind(kind, value) -> bool:
  """A value Flax would take silently but the field's annotation rules out."""
  if kind is bool:
    return not isinstance(value, bool)
  if kind is int:
    return isinstance(value, bool) or not isinstance(value, int)
  if kind is float:
    return isinstance(value, bool) or not isinstance(value, (int, float))
  return False


def create_model(model_config: ml_collections.ConfigDict):
  """Builds the net named by `model_config.name` with the other keys as its keyword arguments.

  `model_config.dtype` is a string ("float32" or "bfloat16"). Raises
  ConfigError naming each unknown key (with who takes it) and each value of
  the wrong kind for the field (a bool for a float, say), which a Flax
  module does not check itself.
  """
  kwargs = dict(model_config)
  name = kwargs.pop("name", None)
  if name not in MODELS:
    raise ConfigError(f"config.model.name={name!r} is not one of {tuple(sorted(MODELS))}"
                      + did_you_mean(name, MODELS))
  dtype = kwargs.pop("dtype", "float32")
  if dtype not in _DTYPES:
    raise ConfigError(f"config.model.dtype={dtype!r} is not one of {tuple(_DTYPES)}")
  cls, _ = MODELS[name]
  hints = typing.get_type_hints(cls)
  problems = unknown_keys("config.model", kwargs, config_keys(cls), f"net {name!r}",
                          {n: config_keys(c) for n, (c, _) in MODELS.items()})
  problems += [f"config.model.{k}={v!r} ({type(v).__name__}): must be a {hints[k].__name__}"
               for k, v in kwargs.items() if k in hints and _wrong_kind(hints[k], v)]
  if problems:
    raise ConfigError(problems)
  return cls(dtype=_DTYPES[dtype], **kwargs)


__all__ = [
    "MODELS", "create_model", "NN1", "NN4Small2", "NN2", "NN3", "NN4", "NNS1", "NNS2",
    "FaceNetInception", "InceptionModule", "RawPixels", "SphereFace", "SphereFace20",
    "SphereFace36", "SphereFace64", "InceptionResNetV1", "IResNet", "IResNet18", "IResNet34",
    "IResNet50", "IResNet100", "IResNet200", "MobileFaceNet", "MobileFaceNetLarge", "Conv", "L2Pool", "LocalResponseNorm",
    "MaxoutDense", "l2_normalize", "max_pool", "normalized_embedding",
]
