"""Start-up validation of an experiment config: every problem is named by its dotted key.

`validate_config(config, num_devices)` runs before anything is built, so that a
typo or an impossible setting fails in the first seconds instead of hours into
a run: ConfigDict accepts any new key, so `optimizer.learnig_rate` would
silently train at the default rate, a misspelt `eval.flip` would silently
average, and a bad `eval.at_end` protocol would raise only after the last step.

It checks, in stages:
  1. keys: each section's keys against what the code reads (a schema here for
     the top level, `data`, `checkpoint`, `eval` and `divergence`; the
     optimizer's keys; the keys of the chosen loss and of the chosen net's
     constructor), with a difflib "did you mean" hint;
  2. the type and allowed values of every key;
  3. combinations that cannot run (sampling vs loss, P x K vs batch size,
     devices, resize vs crop, ...);
  4. that the net takes `config.data.image_size`: a shape-only trace of its
     init (`jax.eval_shape`, no compilation, well under 2 s for the deepest
     nets).
All the problems of stages 1-2 are reported together in one ConfigError, then
those of stage 3, then stage 4: a stage runs only when the earlier ones passed,
because it relies on the types they checked.
"""

import dataclasses
import difflib
import functools
import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from facejax import models, optimizers
from facejax.data import datasets, image_check, input_pipeline
from facejax.evaluation import lfw_eval
from facejax.losses import classification, objective, triplet


class ConfigError(ValueError):
  """A config that cannot run. `problems`: one message per bad key, each naming it."""

  def __init__(self, problems: Sequence[str]):
    self.problems = tuple(problems)
    if len(self.problems) == 1:
      message = self.problems[0]
    else:
      message = f"{len(self.problems)} problems in the config:\n  " + "\n  ".join(self.problems)
    super().__init__(message)


# Allowed values, from the modules that read them.
OPTIMIZERS, SCHEDULES = optimizers.OPTIMIZERS, optimizers.SCHEDULES
STANDARDIZATIONS = input_pipeline.STANDARDIZATIONS
SOURCES = datasets.SOURCES
DISTANCES, FLIPS = lfw_eval.DISTANCES, lfw_eval.FLIPS
LOSSES = tuple(triplet.TRIPLET_LOSSES) + tuple(classification.CLASSIFICATION_LOSSES)


# ---------------------------------------------------------------------------
# Value kinds and key specs.
# ---------------------------------------------------------------------------


def _is_int(v) -> bool:
  # bool is an int subclass, but `random_flip=True` as a step count is a bug.
  return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _is_float(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


@dataclasses.dataclass(frozen=True)
class _Kind:
  desc: str  # completes "must be ..."
  test: Callable[[Any], bool]
  items: "_Kind | None" = None  # element kind of a sequence, for per-element checks


def _seq(item: "_Kind") -> _Kind:
  return _Kind(f"a tuple (or list), each element {item.desc}",
               lambda v: isinstance(v, (tuple, list)) and all(item.test(x) for x in v), item)


INT = _Kind("an int", _is_int)
FLOAT = _Kind("a float (an int is fine)", _is_float)
BOOL = _Kind("a bool", lambda v: isinstance(v, (bool, np.bool_)))
STR = _Kind("a str", lambda v: isinstance(v, str))
ANY = _Kind("anything", lambda v: True)
SECTION = _Kind("a section (ConfigDict)", lambda v: isinstance(v, ml_collections.ConfigDict))
# An int or (H, W), as datasets.hw reads it.
SIZE = _Kind("an int or an (H, W) pair of ints",
             lambda v: _is_int(v) or (isinstance(v, (tuple, list)) and len(v) == 2
                                      and all(_is_int(x) for x in v)), INT)


@dataclasses.dataclass(frozen=True)
class _Key:
  kind: _Kind
  required: bool = True  # read as `section.key`, so a missing key crashes
  none_ok: bool = False  # None (e.g. a FieldReference(None, field_type=str) placeholder)
  choices: tuple | None = None  # allowed values (of each element, for a sequence)
  minimum: float | None = None  # inclusive lower bound (of each element)


def _req(kind, **kw) -> _Key:
  return _Key(kind, required=True, **kw)


def _opt(kind, **kw) -> _Key:
  return _Key(kind, required=False, **kw)


# Keys the trainer reads as `config.<key>` (train.py), hence required.
_TOP = {
    "seed": _req(INT, minimum=0),  # numpy's SeedSequence rejects negative seeds
    "model": _req(SECTION),
    "data": _req(SECTION),
    "loss": _req(SECTION),
    "optimizer": _req(SECTION),
    "checkpoint": _req(SECTION),
    "eval": _req(SECTION),
    "divergence": _opt(SECTION),
    # A workdir whose newest checkpoint initialises the net of a fresh run
    # (e.g. weights imported by facejax.convert); None: random init.
    "init_from": _opt(STR, none_ok=True),
    "num_identities": _req(INT, minimum=1),
    "images_per_identity": _req(INT, minimum=1),
    "batch_size": _req(INT, minimum=1),
    "num_train_steps": _req(INT, minimum=1),
    "log_every_steps": _req(INT, minimum=1),  # a modulus
    "device_prefetch": _req(INT, minimum=0),
}

# datasets.py (preprocessing, build_train_source, lfw_root) and train.py; the
# keys read with `data.get` are optional.
_DATA = {
    "data_dir": _opt(STR, none_ok=True),  # None: FACEJAX_DATA_DIR
    "train_dir": _opt(STR, none_ok=True),  # None: <lfw root>/lfw
    "train_people": _opt(STR, none_ok=True),  # None: every identity
    "lfw_image_dir": _opt(STR, none_ok=True),  # None: <lfw root>/lfw (else an aligned copy)
    "min_images_per_identity": _req(INT, minimum=1),
    "max_identities": _opt(INT, none_ok=True, minimum=1),
    "source": _req(STR, choices=SOURCES),
    "tfds_data_dir": _opt(STR, none_ok=True),  # needed with source="tfds", see _combinations
    "source_crop": _req(INT, minimum=0),  # 0: keep the whole image
    "image_size": _req(SIZE, minimum=1),
    "resize_size": _req(SIZE, minimum=1),
    "standardization": _req(STR, choices=STANDARDIZATIONS),
    "random_flip": _req(BOOL),
    "random_crop": _req(BOOL),
    "sampling": _opt(STR, choices=input_pipeline.SAMPLINGS),  # default "pk"
    # Image screening policies (data/image_check.py).
    "bad_images": _opt(STR, choices=image_check.BAD_IMAGES),
    "non_rgb": _opt(STR, choices=image_check.NON_RGB),
    "small_identities": _opt(STR, choices=image_check.SMALL_IDENTITIES),
    "max_image_pixels": _opt(INT, minimum=1),
    # A thread-pool size: None lets Python choose, 0 makes ThreadPoolExecutor raise.
    "check_workers": _opt(INT, none_ok=True, minimum=1),
}

_CHECKPOINT = {
    "every_steps": _req(INT, minimum=1),  # a modulus
    "max_to_keep": _req(INT, none_ok=True, minimum=1),  # None: Orbax keeps all
    "async_save": _opt(BOOL),
}

# lfw_eval.evaluate_lfw reads them all as attributes (`ev.distance`, ...), and
# train.py reads every_steps / during_training / at_end.
_EVAL = {
    "every_steps": _req(INT, minimum=0),  # 0: only at the end
    "during_training": _req(_seq(STR), choices=lfw_eval.PROTOCOLS),
    "at_end": _req(_seq(STR), choices=lfw_eval.PROTOCOLS),
    "batch_size": _req(INT, minimum=1),
    "distance": _req(STR, choices=DISTANCES),
    "flip": _req(STR, choices=FLIPS),
    "subtract_mean": _req(BOOL),
    "far_target": _req(FLOAT),  # in (0, 1), see _combinations
}

_DIVERGENCE = {
    "action": _opt(STR, choices=("stop", "rollback")),
    "min_embedding_spread": _opt(FLOAT, minimum=0),
    "rollback_lr_factor": _opt(FLOAT),  # > 0, see _combinations
    "max_rollbacks": _opt(INT, minimum=0),
}

# optimizers.py reads every key but name/learning_rate with `cfg.get`; the keys
# of another optimizer are harmless (the recipes carry them all), so they are
# allowed whatever the name.
_OPTIMIZER = {
    "name": _req(STR, choices=OPTIMIZERS),
    "learning_rate": _req(FLOAT, minimum=0),
    "schedule": _opt(STR, choices=SCHEDULES),
    "warmup_steps": _opt(INT, minimum=0),
    "final_lr_fraction": _opt(FLOAT, minimum=0),
    "decay_factor": _opt(FLOAT, minimum=0),
    "boundaries": _opt(_seq(INT), minimum=1),
    "weight_decay": _opt(FLOAT, minimum=0),
    "initial_accumulator_value": _opt(FLOAT, minimum=0),
    "eps": _opt(FLOAT, minimum=0),
    "b1": _opt(FLOAT, minimum=0),
    "b2": _opt(FLOAT, minimum=0),
    "momentum": _opt(FLOAT, none_ok=True, minimum=0),  # None: optax.sgd without momentum
    "nesterov": _opt(BOOL),
    "grad_clip_norm": _opt(FLOAT, none_ok=True, minimum=0),  # 0 or None: no clipping
}

# Kinds of the classification hyper-parameters that are not floats.
_LOSS_HPARAM_SPECS = {"margin_m": _opt(INT, choices=(1, 2, 3, 4)), "easy_margin": _opt(BOOL)}

_SECTIONS = {"data": _DATA, "checkpoint": _CHECKPOINT, "eval": _EVAL, "divergence": _DIVERGENCE,
             "optimizer": _OPTIMIZER}


_LOSS_NAME = _req(STR, choices=LOSSES)


def _loss_schema(name: str) -> dict[str, _Key]:
  """config.loss keys of loss `name` (a known one)."""
  schema = {"name": _LOSS_NAME}
  if name in triplet.TRIPLET_LOSSES:
    schema["margin"] = _req(FLOAT, minimum=0)  # make_objective reads `loss_config.margin`
    return schema
  schema["features"] = _opt(STR, choices=objective.FEATURE_SOURCES)
  for key in objective._HPARAMS[name]:  # pylint: disable=protected-access
    schema[key] = _LOSS_HPARAM_SPECS.get(key, _opt(FLOAT))
  return schema


def _kind_of_default(value) -> _Kind | None:
  """The kind of a constructor default, or None when the default says nothing simple."""
  for kind, types in ((BOOL, bool), (INT, int), (FLOAT, float), (STR, str)):
    if type(value) is types:  # pylint: disable=unidiomatic-typecheck
      return kind
  if isinstance(value, tuple):
    kinds = {_kind_of_default(x) for x in value}
    item = kinds.pop() if len(kinds) == 1 else None
    return _seq(item or ANY)
  return None


@functools.lru_cache(maxsize=None)
def _model_schema(name: str) -> dict[str, _Key]:
  """config.model keys of net `name`: the Flax module's constructor fields.

  Flax Linen modules are dataclasses; `parent` and `name` are Flax's own.
  `dtype` is a string in the config (create_model maps it).
  """
  cls, _ = models.MODELS[name]
  dtypes = tuple(sorted(models._DTYPES))  # pylint: disable=protected-access
  # The name is checked against MODELS before its schema is asked for.
  schema = {"name": _req(STR), "dtype": _opt(STR, choices=dtypes)}
  for field in dataclasses.fields(cls):
    if field.name in ("parent", "name", "dtype"):
      continue
    has_default = (field.default is not dataclasses.MISSING
                   or field.default_factory is not dataclasses.MISSING)
    default = field.default if field.default is not dataclasses.MISSING else None
    # No simple default (None, a factory, no default): the type is not checked.
    kind = _kind_of_default(default) or ANY
    minimum = 1 if field.name == "embedding_dim" else None
    schema[field.name] = _Key(kind, required=not has_default, none_ok=kind is ANY,
                              minimum=minimum)
  return schema


# ---------------------------------------------------------------------------
# Stages 1-2: keys, types, values.
# ---------------------------------------------------------------------------


def _hint(word: str, options) -> str:
  close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
  return f"; did you mean {close[0]!r}?" if close else ""


def _check_value(path: str, value, spec: _Key) -> list[str]:
  if value is None:
    if spec.none_ok:
      return []
    return [f"{path}=None: must be {spec.kind.desc} (None is not allowed here)"]
  if not spec.kind.test(value):
    return [f"{path}={value!r} ({type(value).__name__}): must be {spec.kind.desc}"]
  values = value if spec.kind.items is not None and not _is_int(value) else (value,)
  problems = []
  if spec.choices is not None:
    bad = [v for v in values if v not in spec.choices]
    if bad:
      problems.append(f"{path}={value!r}: {bad[0]!r} is not one of {spec.choices}"
                      + _hint(bad[0], spec.choices))
  if spec.minimum is not None and any(v < spec.minimum for v in values):
    problems.append(f"{path}={value!r}: must be >= {spec.minimum}")
  return problems


def _check_section(path: str, section: ml_collections.ConfigDict, schema: dict[str, _Key],
                   what: str = "", elsewhere: dict[str, str] | None = None) -> list[str]:
  """Unknown, missing and ill-typed keys of `section`.

  `what` says whose keys these are (e.g. "net 'nn1'"); `elsewhere` maps a key
  that another variant of the section takes to who takes it, for the hint.
  """
  problems = []
  for key in section.keys():
    key_path = f"{path}.{key}"
    if key not in schema:
      msg = f"{key_path}: unknown key{' for ' + what if what else ''}"
      hint = _hint(key, schema)
      if hint:
        msg += hint
      elif elsewhere and key in elsewhere:
        msg += f" (used only by: {elsewhere[key]})"
      else:
        msg += f" (allowed: {', '.join(sorted(schema))})"
      problems.append(msg)
      continue
    problems += _check_value(key_path, section[key], schema[key])
  for key, spec in schema.items():
    if spec.required and key not in section:
      problems.append(f"{path}.{key}: missing{' for ' + what if what else ''}")
  return problems


def _check_name(path: str, section: ml_collections.ConfigDict, spec: _Key) -> list[str]:
  if "name" not in section:
    return [f"{path}.name: missing"]
  return _check_value(f"{path}.name", section.name, spec)


def _takers(schemas: dict[str, dict[str, _Key]]) -> dict[str, str]:
  """key -> "a, b" of the variants whose schema has it."""
  out = {}
  for variant, schema in schemas.items():
    for key in schema:
      out[key] = f"{out[key]}, {variant}" if key in out else variant
  return out


def _check_keys_and_values(config: ml_collections.ConfigDict) -> list[str]:
  problems = _check_section("config", config, _TOP)
  for name, schema in _SECTIONS.items():
    if isinstance(config.get(name), ml_collections.ConfigDict):
      problems += _check_section(f"config.{name}", config[name], schema)

  loss = config.get("loss")
  if isinstance(loss, ml_collections.ConfigDict):
    name = loss.get("name")
    if isinstance(name, str) and name in LOSSES:
      others = {n: _loss_schema(n) for n in LOSSES if n != name}
      problems += _check_section("config.loss", loss, _loss_schema(name), f"loss {name!r}",
                                 _takers(others))
    else:  # the allowed keys depend on the name: report the name only
      problems += _check_name("config.loss", loss, _LOSS_NAME)

  model = config.get("model")
  if isinstance(model, ml_collections.ConfigDict):
    name = model.get("name")
    if isinstance(name, str) and name in models.MODELS:
      others = {n: _model_schema(n) for n in models.MODELS if n != name}
      problems += _check_section("config.model", model, _model_schema(name), f"net {name!r}",
                                 _takers(others))
    else:  # MODELS read now, not at import, so that nets registered later count
      names = tuple(sorted(models.MODELS))
      problems += _check_name("config.model", model, _req(STR, choices=names))
  return problems


# ---------------------------------------------------------------------------
# Stage 3: combinations.
# ---------------------------------------------------------------------------


def _hw(size) -> tuple[int, int]:
  return (size, size) if _is_int(size) else tuple(size)


def _combinations(config: ml_collections.ConfigDict, num_devices: int) -> list[str]:
  problems = []
  data = config.data
  sampling = data.get("sampling", "pk")
  is_triplet = config.loss.name in triplet.TRIPLET_LOSSES
  if is_triplet and sampling != "pk":
    problems.append(f"config.data.sampling={sampling!r} with the triplet loss "
                    f"config.loss.name={config.loss.name!r}: triplets need P x K batches ('pk')")
  pk = config.num_identities * config.images_per_identity
  if sampling == "pk" and config.batch_size != pk:
    problems.append(f"config.batch_size={config.batch_size} != config.num_identities x "
                    f"config.images_per_identity = {config.num_identities} x "
                    f"{config.images_per_identity} = {pk}")
  if config.batch_size % num_devices:
    problems.append(f"config.batch_size={config.batch_size} is not divisible by the "
                    f"{num_devices} devices of the mesh")
  if is_triplet and config.images_per_identity < 2:
    problems.append(f"config.images_per_identity={config.images_per_identity} must be >= 2 "
                    "to form anchor-positive pairs")
  if is_triplet and data.min_images_per_identity < 2:
    problems.append(f"config.data.min_images_per_identity={data.min_images_per_identity} must "
                    "be >= 2: a single-image identity cannot form a positive pair")
  # The sampler draws P distinct identities per batch.
  max_identities = data.get("max_identities")
  if sampling == "pk" and max_identities is not None and config.num_identities > max_identities:
    problems.append(f"config.num_identities={config.num_identities} > "
                    f"config.data.max_identities={max_identities}: a P x K batch needs "
                    "that many distinct identities")
  # The image is resized to resize_size, then cropped (never padded) to image_size.
  if any(r < i for r, i in zip(_hw(data.resize_size), _hw(data.image_size))):
    problems.append(f"config.data.resize_size={data.resize_size!r} is smaller than "
                    f"config.data.image_size={data.image_size!r}")
  if data.source == "tfds" and not data.get("tfds_data_dir"):
    problems.append("config.data.tfds_data_dir must be set with config.data.source='tfds'")
  if not 0.0 < config.eval.far_target < 1.0:
    problems.append(f"config.eval.far_target={config.eval.far_target!r} must be in (0, 1)")
  boundaries = config.optimizer.get("boundaries", ())
  if any(b >= c for b, c in zip(boundaries, boundaries[1:])):
    problems.append(f"config.optimizer.boundaries={boundaries!r} must be increasing")
  divergence = config.get("divergence") or {}
  factor = divergence.get("rollback_lr_factor")
  if factor is not None and factor <= 0:
    problems.append(f"config.divergence.rollback_lr_factor={factor!r} must be > 0")
  return problems


# ---------------------------------------------------------------------------
# Stage 4: the net takes the image size.
# ---------------------------------------------------------------------------


def _embedding_shape(model, hw: tuple[int, ...]) -> tuple[tuple[int, ...] | None, str]:
  """(shape of the net's output for one [1, H, W, 3] float32 image, "") or (None, the error).

  A shape-only trace (no compilation, no parameter memory). The key is made
  inside the trace so that nothing touches the device.
  """
  def init(x):
    return model.init_with_output(jax.random.key(0), x, train=False)[0]
  try:
    return jax.eval_shape(init, jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)).shape, ""
  except Exception as e:  # pylint: disable=broad-except -- any failure means "cannot take it"
    return None, f"{type(e).__name__}: {e}"


def _check_image_size(config: ml_collections.ConfigDict) -> list[str]:
  name = config.model.name
  _, design = models.MODELS[name]
  design_str = f"{design[0]}x{design[1]}"
  model = models.create_model(config.model)
  hw = _hw(config.data.image_size)
  size = config.data.image_size
  shape, error = _embedding_shape(model, hw)
  if shape is None:
    # A net that fails at its own design size too is misconfigured in config.model.
    if hw == tuple(design) or (min(design) > 0 and _embedding_shape(model, design)[0] is None):
      return [f"config.model ({name!r}) cannot be built, even at its design size "
              f"{design_str}: {error}"]
    return [f"config.data.image_size={size!r} does not fit net {name!r} (designed for "
            f"{design_str}): {error}"]
  dim = config.model.get("embedding_dim", getattr(model, "embedding_dim", None))
  if len(shape) != 2 or shape[0] != 1 or (dim is not None and shape[1] != dim):
    want = f"[1, {dim}]" if dim is not None else "[1, D]"
    return [f"config.data.image_size={size!r}: net {name!r} (designed for {design_str}) "
            f"gives embeddings of shape {list(shape)}, not {want}"]
  return []


# ---------------------------------------------------------------------------


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError (a ValueError) naming every bad key of `config`; returns None if it can run.

  Args:
    config: the experiment config (FieldReferences are read through).
    num_devices: devices of the data-parallel mesh (`jax.device_count()`).
  """
  if not _is_int(num_devices) or num_devices < 1:
    raise ValueError(f"num_devices={num_devices!r}: must be a positive int")
  for stage in (_check_keys_and_values,
                functools.partial(_combinations, num_devices=num_devices),
                _check_image_size):
    problems = stage(config)
    if problems:
      raise ConfigError(problems)
