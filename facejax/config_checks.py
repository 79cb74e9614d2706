"""Start-up checks of an experiment config: what no single constructor can check.

The config is a locked ConfigDict (configs/common.py): a misspelt key or a
value of the wrong type fails when it is set, in ml_collections, naming the
key. The optimizer and the loss head are built by constructors that name an
unknown keyword. What is left is checked here before anything is built, in
stages: (1) counts, sizes, None, the allowed values of keys read only later,
and the kinds of the net's keys (Flax does not check them); (2) the optimizer
and the objective, built dry; (3) combinations that cannot run; (4) that the
net takes `config.data.image_size`, by a shape-only trace of its init. All the
problems of a stage are reported together in one ConfigError; a stage runs
only when the earlier ones passed, because it relies on what they checked.
"""


import jax
import jax.numpy as jnp
import ml_collections

from facejax import models, optimizers
from facejax.data import datasets, image_check, input_pipeline, sampling
from facejax.errors import ConfigError, did_you_mean
from facejax.evaluation import lfw_eval, registry
from facejax.losses import HEADS, make_objective

__all__ = ["ConfigError", "validate_config"]

# Placeholders that None leaves to the environment, a default folder or the user.
_MAY_BE_NONE = frozenset((
    "init_from", "data.data_dir", "data.train_dir", "data.lfw_image_dir", "data.train_people",
    "data.max_identities", "data.tfds_data_dir", "data.check_workers", "checkpoint.max_to_keep",
    "data.random_scale", "data.color_jitter"))

# Counts and sizes with their least value. An image size may be an (H, W) pair.
_COUNTS = {
    "seed": 0,  # numpy's SeedSequence rejects negative seeds
    "num_identities": 1, "images_per_identity": 1, "batch_size": 1, "num_train_steps": 1,
    "log_every_steps": 1, "device_prefetch": 0, "data.min_images_per_identity": 1,
    "data.max_identities": 1, "data.source_crop": 0, "data.image_size": 1,
    "data.resize_size": 1, "data.max_image_pixels": 1, "data.check_workers": 1,
    "checkpoint.every_steps": 1, "checkpoint.max_to_keep": 1,
    "eval.batch_size": 1, "divergence.max_rollbacks": 0, "model.embedding_dim": 1,
}

# Allowed values of keys read only later (per image, at evaluation), from their readers.
_CHOICES = {
    "data.source": datasets.SOURCES, "data.sampling": sampling.SAMPLINGS,
    "data.standardization": input_pipeline.STANDARDIZATIONS,
    "data.bad_images": image_check.BAD_IMAGES, "data.non_rgb": image_check.NON_RGB,
    "data.small_identities": image_check.SMALL_IDENTITIES, "eval.distance": lfw_eval.DISTANCES,
    "eval.flip": lfw_eval.FLIPS, "divergence.action": ("stop", "rollback"),
}


# Other numbers the combinations below read.
_FRACTIONS = ("eval.far_target", "divergence.rollback_lr_factor",
              "divergence.min_embedding_spread")


def _leaves(section, prefix=""):
  for key, value in section.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def _is_count(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _check_values(config: ml_collections.ConfigDict) -> list[str]:
  present = dict(_leaves(config))
  problems = [f"config.{k}: missing" for k in (*_COUNTS, *_CHOICES, *_FRACTIONS)
              if k not in present]
  if problems:
    return problems
  for key, value in present.items():
    # A net's or an evaluator's None is its constructor's default, checked there.
    if value is None and key not in _MAY_BE_NONE and not key.startswith(("model.", "evals.")):
      problems.append(f"config.{key}=None: must be set (None is not allowed here)")
    elif key in _COUNTS and value is not None:
      sizes = value if isinstance(value, (tuple, list)) and key.endswith("_size") else (value,)
      if not (all(map(_is_count, sizes)) and len(sizes) in (1, 2)):
        problems.append(f"config.{key}={value!r} ({type(value).__name__}): must be an int"
                        + (" or an (H, W) pair of ints" if key.endswith("_size") else ""))
      elif min(sizes) < _COUNTS[key]:
        problems.append(f"config.{key}={value!r}: must be >= {_COUNTS[key]}")
    if key in _CHOICES:
      for v in (value if isinstance(value, (tuple, list)) else (value,)):
        if v not in _CHOICES[key]:
          problems.append(f"config.{key}={value!r}: {v!r} is not one of {_CHOICES[key]}"
                          + did_you_mean(v, _CHOICES[key]))
          break
  return problems


def _check_constructors(config: ml_collections.ConfigDict, num_devices: int = 1) -> list[str]:
  """Builds the net, the optimizer and the objective dry; each names its own bad key."""
  problems = []
  for build in (lambda: models.create_model(config.model),
                lambda: optimizers.create_optimizer(config.optimizer, config.num_train_steps),
                lambda: make_objective(config.loss, num_classes=2,
                                       feature_dim=config.model.get("embedding_dim", 8),
                                       num_shards=num_devices),
                lambda: registry.build_all(config),
                lambda: _augmentations(config.data)):
    try:
      build()
    except ConfigError as e:
      problems += e.problems
  return problems


def _augmentations(data: ml_collections.ConfigDict) -> None:
  """The training augmentation ranges; each problem names its key."""
  problems = input_pipeline.augmentation_problems(
      data.get("random_scale"), float(data.get("random_rotate") or 0.0), data.get("color_jitter"))
  if problems:
    raise ConfigError(problems)


def _combinations(config: ml_collections.ConfigDict, num_devices: int) -> list[str]:
  problems = []
  data = config.data
  head = HEADS.get(config.loss.name)
  is_triplet = head is not None and head.needs_pk_batches
  if is_triplet and data.sampling != "pk":
    problems.append(f"config.data.sampling={data.sampling!r} with the triplet loss "
                    f"config.loss.name={config.loss.name!r}: triplets need P x K batches ('pk')")
  pk = config.num_identities * config.images_per_identity
  if data.sampling == "pk" and config.batch_size != pk:
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
  if (data.sampling == "pk" and data.max_identities is not None
      and config.num_identities > data.max_identities):
    problems.append(f"config.num_identities={config.num_identities} > "
                    f"config.data.max_identities={data.max_identities}: a P x K batch needs "
                    "that many distinct identities")
  # The image is resized to resize_size, then cropped (never padded) to image_size.
  if any(r < i for r, i in zip(datasets.hw(data.resize_size), datasets.hw(data.image_size))):
    problems.append(f"config.data.resize_size={data.resize_size!r} is smaller than "
                    f"config.data.image_size={data.image_size!r}")
  if data.source == "tfds" and not data.tfds_data_dir:
    problems.append("config.data.tfds_data_dir must be set with config.data.source='tfds'")
  if not 0.0 < config.eval.far_target < 1.0:
    problems.append(f"config.eval.far_target={config.eval.far_target!r} must be in (0, 1)")
  if config.divergence.rollback_lr_factor <= 0:
    problems.append(f"config.divergence.rollback_lr_factor={config.divergence.rollback_lr_factor!r}"
                    " must be > 0")
  return problems


def _check_image_size(config: ml_collections.ConfigDict) -> list[str]:
  """The net's embedding for one [1, H, W, 3] image, from a shape-only trace of its init."""
  name, design = config.model.name, models.MODELS[config.model.name][1]
  model = models.create_model(config.model)

  def embedding_shape(hw):
    def init(x):  # the key is made inside the trace so that nothing touches the device
      return model.init_with_output(jax.random.key(0), x, train=False)[0][0]
    try:
      return jax.eval_shape(init, jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)).shape, ""
    except Exception as e:  # pylint: disable=broad-except -- any failure means "cannot take it"
      return None, f"{type(e).__name__}: {e}"

  hw, size = datasets.hw(config.data.image_size), config.data.image_size
  design_str = "x".join(map(str, design))
  shape, error = embedding_shape(hw)
  if shape is None:
    # A net that fails at its own design size too is misconfigured in config.model.
    if hw == tuple(design) or embedding_shape(design)[0] is None:
      return [f"config.model ({name!r}) cannot be built, even at its design size "
              f"{design_str}: {error}"]
    return [f"config.data.image_size={size!r} does not fit net {name!r} (designed for "
            f"{design_str}): {error}"]
  dim = config.model.get("embedding_dim", getattr(model, "embedding_dim", None))
  if len(shape) != 2 or shape[0] != 1 or (dim is not None and shape[1] != dim):
    return [f"config.data.image_size={size!r}: net {name!r} (designed for {design_str}) "
            f"gives embeddings of shape {list(shape)}, not {[1, dim or 'D']}"]
  return []


def validate_config(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError naming every bad key of `config` for a mesh of `num_devices`."""
  for stage in (_check_values, lambda c: _check_constructors(c, num_devices),
                lambda c: _combinations(c, num_devices), _check_image_size):
    problems = stage(config)
    if problems:
      raise ConfigError(problems)
