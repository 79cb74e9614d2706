"""Start-up config validation (facejax/config_checks.py): every shipped config passes, and
every mistake fails naming its dotted key. No data, no compilation: eval_shape only."""

import importlib
import pathlib
import re
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections
import pytest

import configs
from facejax import models
from facejax.config_checks import ConfigError, validate_config

REPO = pathlib.Path(__file__).resolve().parents[1]

# Every config file with its variants (None: the default). Checked against the
# files in configs/ and the "Variants" block of each docstring, so a new config
# or a new documented variant fails here until it is listed (and validated).
VARIANTS = {
    "casia_irv1_softmax": (None, "smoke"),
    "glint360k_r100_pfc": (None, "smoke"),
    "inception_resnet_v1": (None, "center", "smoke", "center_smoke"),
    "inception_resnet_v1_finetune": (None, "smoke"),
    "lfw_iresnet18_arcface": (None, "smoke"),
    "ms1mv3_r50_arcface": (None, "smoke"),
    "nn1": (None, "cpu", "harmonic", "harmonic_control", "smoke"),
    "nn2": (None, "paper", "smoke"),
    "nn3": (None, "paper", "smoke"),
    "nn4": (None, "paper", "smoke"),
    "nn4_small2": (None, "smoke"),
    "nn4_small2_center": (None, "smoke"),
    "nns1": (None, "paper", "smoke"),
    "nns2": (None, "paper", "smoke"),
    "sphereface20": (None, "smoke"),
}


def _config(name: str = "nn1", variant: str | None = "smoke") -> ml_collections.ConfigDict:
  c = importlib.import_module(f"configs.{name}").get_config(variant)
  c.data.data_dir = "/nonexistent/lfw_parent"  # a FieldReference; never read by the checks
  if c.loss.name == "harmonic":
    c.loss.v1_workdir = "/nonexistent/v1"  # the user's, given on the command line
  return c


def test_the_harmonic_config_asks_for_v1s_workdir_by_its_key():
  c = importlib.import_module("configs.nn1").get_config("harmonic")
  _raises(c, "config.loss.v1_workdir=''", "--config.loss.v1_workdir=")


def _set(c: ml_collections.ConfigDict, dotted: str, value) -> None:
  """Sets `dotted` (e.g. "data.random_flip") as `--config.<dotted>=<value>` would.

  The config is locked: ml_collections refuses a key it does not have and a
  value it cannot cast to the key's type, naming the key, as on the command line.
  """
  *parents, key = dotted.split(".")
  for p in parents:
    c = c[p]
  setattr(c, key, value)


def _write(c: ml_collections.ConfigDict, dotted: str, value) -> None:
  """Sets `dotted` as if the config file had written `value`: no type check or cast."""
  *parents, key = dotted.split(".")
  for p in parents:
    c = c[p]
  with c.unlocked():
    if key in c:
      del c[key]
    c[key] = value


def _raises(c, *fragments, num_devices=1) -> ConfigError:
  with pytest.raises(ConfigError) as info:
    validate_config(c, num_devices)
  message = str(info.value)
  for fragment in fragments:
    assert fragment in message, (fragment, message)
  return info.value


def _refused(c, dotted, value, *fragments):
  """`_set` fails in ml_collections, naming the key, or validate_config names it."""
  try:
    _set(c, dotted, value)
  except (AttributeError, KeyError, TypeError) as e:
    for fragment in fragments:
      assert fragment in str(e), (fragment, str(e))
    return
  _raises(c, f"config.{dotted}", *fragments)


def _documented_variants(name: str) -> set[str]:
  doc = importlib.import_module(f"configs.{name}").__doc__
  assert "Variants (" in doc, f"configs/{name}.py: the docstring lists no variants"
  block = doc.split("Variants (", 1)[1].split("\n\n", 1)[0]
  return set(re.findall(r"^  (\(none\)|\w+)  ", block, re.M))


def test_every_config_file_and_documented_variant_is_listed():
  experiments = ({p.stem for p in (REPO / "configs").glob("*.py")}
                 - {"__init__", "common", "insightface"})
  assert experiments == set(VARIANTS) == set(configs.EXPERIMENTS)
  for name, variants in VARIANTS.items():
    assert _documented_variants(name) == {v or "(none)" for v in variants}, name


@pytest.mark.parametrize("name,variant", [(n, v) for n, vs in VARIANTS.items() for v in vs])
def test_shipped_configs_pass(name, variant):
  validate_config(_config(name, variant), 1)


def test_accepted_values():
  c = _config()
  # ints where floats are expected; lists where tuples are; None placeholders.
  _set(c, "optimizer.learning_rate", 1)
  _set(c, "loss.margin", 1)
  _set(c, "model.conv_width", 1)
  c.evals.lfw_dev_test.protocol = "dev_test"  # an alias of "view1"
  c.data.train_dir = None
  c.data.max_identities = None
  # The input-robustness and divergence keys being added.
  c.data.update(bad_images="skip", non_rgb="convert", small_identities="fail",
                max_image_pixels=50_000_000, check_workers=None)
  c.divergence = ml_collections.ConfigDict(dict(
      action="rollback", min_embedding_spread=1e-3, rollback_lr_factor=0.5, max_rollbacks=3))
  validate_config(c, 1)
  validate_config(c.copy_and_resolve_references(), 2)
  validate_config(ml_collections.FrozenConfigDict(c), 1)
  # Classification losses take shuffled batches, whose size need not be P x K.
  c = _config("inception_resnet_v1", "smoke")
  c.batch_size = 10
  validate_config(c, 2)


@pytest.mark.parametrize("dotted,value,hint", [
    ("num_train_step", 5, "num_train_steps"),
    ("data.random_flp", True, "random_flip"),
    ("model.embeding_dim", 32, "embedding_dim"),
    ("loss.margn", 0.2, "margin"),
    ("optimizer.learnig_rate", 0.1, "learning_rate"),
    ("eval.far_targt", 1e-3, "far_target"),
    ("checkpoint.max_to_kep", 3, "max_to_keep"),
    ("divergence.max_rollback", 2, "max_rollbacks"),
])
def test_typo_keys_are_named_with_a_hint(dotted, value, hint):
  # An override (or an experiment's assignment) meets the locked base.
  with pytest.raises(AttributeError) as info:
    _set(_config(), dotted, value)
  key = dotted.split(".")[-1]
  assert f'Key "{key}" does not exist' in str(info.value)
  assert f'Did you mean "{hint}" instead of "{key}"?' in str(info.value)
  # A config file that writes the typo into the net's or the loss's section
  # meets the constructor's keywords at start-up.
  if dotted.split(".")[0] in ("model", "loss"):
    c = _config()
    _write(c, dotted, value)
    _raises(c, f"config.{dotted}: unknown key", f"did you mean {hint!r}?")


def test_keys_of_another_loss_or_net_say_who_reads_them():
  c = _config()
  _write(c, "model.depth", 20)  # a SphereFace key on NN1
  e = _raises(c, "config.model.depth: unknown key for net 'nn1'", "sphereface20")
  assert len(e.problems) == 1
  c = _config()
  _write(c, "loss.features", "features")  # a classification-loss key on a triplet loss
  _raises(c, "config.loss.features: unknown key for loss 'semi_hard'")
  c = _config("nn4_small2", "smoke")
  _write(c, "model.batch_norm", True)
  _raises(c, "config.model.batch_norm", "net 'nn4_small2'")


def test_missing_keys_are_named():
  c = _config()
  with pytest.raises(KeyError, match="locked"):  # the base cannot lose a key by accident
    del c.eval["far_target"]
  with c.unlocked():  # a config file that builds its own sections
    del c.eval["far_target"]
    del c["device_prefetch"]
  _raises(c, "config.eval.far_target: missing", "config.device_prefetch: missing")
  c = _config()
  with c.unlocked():
    del c.loss["margin"]  # the triplet loss needs its margin
  _raises(c, "config.loss.margin: missing", "semi_hard")


@pytest.mark.parametrize("dotted,value", [
    ("num_train_steps", 1e4),
    ("batch_size", "8"),
    ("seed", True),
    ("data.random_flip", "yes"),
    ("data.image_size", 32.0),
    ("data.image_size", (32, 32, 3)),
    ("data.min_images_per_identity", None),
    ("eval.distance", ("cosine",)),
    ("evals.lfw_dev_test.at_end", "yes"),
    ("eval.subtract_mean", 0),
    ("model.batch_norm", 1),  # an int is not a bool
    ("model.conv_width", True),  # nor is a bool a float
    ("model.maxout_features", 64.0),
    ("optimizer.learning_rate", "0.1"),
    ("optimizer.schedule.warmup_steps", 1.5),
    ("loss.margin", None),
    ("checkpoint.async_save", "no"),
    ("data.random_flip", 1),
    ("divergence.max_rollbacks", 2.0),
    ("data.max_image_pixels", None),
])
def test_wrong_types_are_named(dotted, value):
  key = dotted.split(".")[-1]
  c = _config()
  if dotted.startswith("model."):  # the net's keyword arguments, as a config file writes them
    _write(c, dotted, value)
  else:
    try:  # ml_collections refuses what it cannot cast to the key's type, naming the key
      _set(c, dotted, value)
    except (TypeError, AttributeError) as e:
      assert f"'{key}'" in str(e) or f'"{key}"' in str(e), str(e)
      return
  e = _raises(c, f"config.{dotted}=", "must be")
  assert len(e.problems) == 1, e.problems


@pytest.mark.parametrize("dotted,value", [
    ("loss.name", "semi_hardd"),
    ("optimizer.name", "adm"),
    ("optimizer.schedule.name", "cosin"),
    ("data.standardization", "prewhitening"),
    ("data.sampling", "random"),
    ("data.source", "tfrecord"),
    ("model.dtype", "float16"),
    ("model.name", "nn5"),
    ("eval.distance", "l2"),
    ("eval.flip", "mirror"),
    ("evals.lfw_dev_test.protocol", "veiw2"),
    ("evals.lfw_view2.protocol", "view3"),
    ("data.bad_images", "ignore"),
    ("data.non_rgb", "keep"),
    ("data.small_identities", "drop"),
    ("divergence.action", "restart"),
])
def test_bad_enum_values_are_named(dotted, value):
  c = _config()
  _set(c, dotted, value)
  _raises(c, f"config.{dotted}={value!r}", "not one of")


def test_enum_hint_and_classification_loss_keys():
  c = _config()
  c.loss.name = "semi_hardd"
  _raises(c, "did you mean 'semi_hard'?")
  c = _config("inception_resnet_v1", "smoke")  # softmax
  c.loss.features = "logits"
  _write(c, "loss.margin_m", 4)
  _raises(c, "config.loss.features='logits'", "config.loss.margin_m: unknown key")
  c = _config("sphereface20", "smoke")  # a_softmax
  _set(c, "loss.margin_m", 5)
  _raises(c, "config.loss.margin_m=5", "not one of")
  _write(c, "loss.margin_m", 4.0)
  _raises(c, "config.loss.margin_m=4.0", "must be an int")


@pytest.mark.parametrize("dotted,value", [
    ("num_train_steps", 0),
    ("log_every_steps", 0),
    ("seed", -1),
    ("num_identities", 0),
    ("data.image_size", 0),
    ("data.image_size", (32, 0)),
    ("data.source_crop", -1),
    ("checkpoint.every_steps", 0),
    ("eval.batch_size", 0),
    ("evals.lfw_dev_test.every_steps", -1),
    ("optimizer.schedule.warmup_steps", -5),
    ("optimizer.learning_rate", -0.1),
    ("model.embedding_dim", 0),
    ("data.check_workers", 0),
])
def test_non_positive_steps_and_sizes_are_named(dotted, value):
  c = _config("nns2", "smoke") if isinstance(value, tuple) else _config()  # an (H, W) image size
  _set(c, dotted, value)
  _raises(c, f"config.{dotted}={value!r}", "must be", ">= ")


def test_combinations_moved_from_train_are_named():
  c = _config()
  c.data.sampling = "shuffle"
  _raises(c, "config.data.sampling='shuffle'", "config.loss.name='semi_hard'")
  c = _config()
  c.batch_size += 1
  _raises(c, "config.batch_size=25 != config.num_identities x config.images_per_identity")
  _raises(_config(), "config.batch_size=24", "divisible", num_devices=5)
  c = _config()
  c.images_per_identity, c.batch_size = 1, 8
  _raises(c, "config.images_per_identity=1 must be >= 2")
  c = _config()
  c.data.min_images_per_identity = 1
  _raises(c, "config.data.min_images_per_identity=1 must be >= 2")
  # A classifier is fine with single-image identities and any P x K.
  c = _config("nn4_small2_center", "smoke")
  c.data.min_images_per_identity = 1
  c.images_per_identity = 1
  validate_config(c, 1)


def test_new_combinations_are_named():
  c = _config()
  c.data.update(image_size=32, resize_size=30)
  _raises(c, "config.data.resize_size=30 is smaller than config.data.image_size=32")
  c = _config("nns2", "smoke")
  c.data.resize_size = (48, 39)
  _raises(c, "config.data.resize_size=(48, 39)", "config.data.image_size=(48, 40)")
  c = _config()
  c.num_identities, c.batch_size = 61, 183
  _raises(c, "config.num_identities=61 > config.data.max_identities=60")
  c = _config()
  c.data.source = "tfds"
  _raises(c, "config.data.tfds_data_dir must be set")
  c.data.tfds_data_dir = "/tmp/tfds"
  validate_config(c, 1)
  c = _config()
  c.eval.far_target = 1.5
  _raises(c, "config.eval.far_target=1.5")
  c = _config("sphereface20", "smoke")
  c.optimizer.schedule.boundaries = (300, 200)
  _raises(c, "config.optimizer.schedule.boundaries=(300, 200) must be increasing")
  c = _config()
  c.divergence.rollback_lr_factor = 0.0
  _raises(c, "config.divergence.rollback_lr_factor=0.0 must be > 0")


def test_all_problems_of_a_stage_are_reported_together():
  c = _config()
  c.data.max_image_pixels = None
  _set(c, "seed", True)
  c.eval.flip = "mirror"
  e = _raises(c, "3 problems", "config.data.max_image_pixels", "config.seed", "config.eval.flip")
  assert isinstance(e, ValueError) and len(e.problems) == 3
  # The net's keys are its constructor's, checked together in the next stage.
  c = _config()
  _write(c, "model.embeding_dim", 8)
  _write(c, "model.conv_width", True)
  e = _raises(c, "2 problems", "config.model.embeding_dim", "config.model.conv_width")


@pytest.mark.parametrize("name,variant,size,fits", [
    ("nn4_small2", "smoke", 64, False),  # its 3x3 pools need >= 65
    ("nn4_small2", "smoke", 32, False),
    ("nn4_small2", "smoke", 65, True),
    ("inception_resnet_v1", "smoke", 74, False),  # valid convs and pools need >= 75
    ("inception_resnet_v1", "smoke", 32, False),
    ("inception_resnet_v1", "smoke", 75, True),
    # SAME-padded nets run (degenerately) at any size: nothing to refuse.
    ("nn1", "smoke", 16, True),
    ("sphereface20", "smoke", (16, 16), True),
    ("nns2", "smoke", (16, 12), True),
])
def test_image_size_the_net_cannot_take(name, variant, size, fits):
  c = _config(name, variant)
  c.data.update(image_size=size, resize_size=size)
  if fits:
    validate_config(c, 1)
    return
  design = "x".join(map(str, models.MODELS[name][1]))
  _raises(c, f"config.data.image_size={size!r} does not fit net {name!r}",
          f"designed for {design}")


def test_a_net_that_fails_at_its_design_size_blames_the_model_keys():
  c = _config("nn4_small2", "smoke")
  c.model.pooling_geometry = "v2"  # a str like "def": only the net can refuse it
  _raises(c, "config.model ('nn4_small2') cannot be built", "96x96", "pooling_geometry")


class _OffByOne(nn.Module):
  """A net whose embedding is one wider than its embedding_dim."""
  embedding_dim: int = 8
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = False):
    del train
    features = nn.Dense(self.embedding_dim + 1)(images.reshape((images.shape[0], -1)))
    return features, features  # (embedding, features), as every net


def test_wrong_embedding_shape_is_named(monkeypatch):
  monkeypatch.setitem(models.MODELS, "off_by_one", (_OffByOne, (8, 8)))
  c = _config()
  c.model = ml_collections.ConfigDict(dict(name="off_by_one", embedding_dim=8, dtype="float32"))
  c.data.update(image_size=8, resize_size=8)
  _raises(c, "config.data.image_size=8", "'off_by_one'", "[1, 9], not [1, 8]")


def test_image_size_check_compiles_nothing_for_the_deepest_nets():
  # A shape-only trace: compiling these inits would take tens of seconds on CPU. Counted
  # as XLA compilations (jax.monitoring), not timed.
  from jax import monitoring  # pylint: disable=import-outside-toplevel
  validate_config(_config(), 1)  # first-use helpers compile here
  compiled = []
  recording = [True]
  monitoring.register_event_duration_secs_listener(
      lambda name, secs, **kw: compiled.append(name)
      if recording[0] and "backend_compile" in name else None)
  deepest = [_config("inception_resnet_v1", None), _config("sphereface20", None)]
  deepest[1].model.name = "sphereface64"
  try:
    for c in deepest:
      validate_config(c, 1)
  finally:
    recording[0] = False
  assert not compiled


def test_train_expectations_still_hold():
  # tests/train_test.py::test_config_checks_name_the_key and
  # tests/objective_test.py::test_shuffle_sampling_rejected_for_triplets, which
  # go through train.validate_config once it delegates here.
  smoke = _config()  # unresolved FieldReferences, as the smoke_config fixture
  c = smoke.copy_and_resolve_references()
  c.batch_size = c.batch_size + 1
  with pytest.raises(ValueError, match="config.batch_size"):
    validate_config(c, 1)
  c = smoke.copy_and_resolve_references()
  c.data.min_images_per_identity = 1
  with pytest.raises(ValueError, match="config.data.min_images_per_identity"):
    validate_config(c, 1)
  with pytest.raises(ValueError, match="divisible"):
    validate_config(smoke, 5)
  c = smoke.copy_and_resolve_references()
  c.data.sampling = "shuffle"
  with pytest.raises(ValueError, match="config.data.sampling='shuffle'"):
    validate_config(c, 1)


def test_every_check_reads_keys_of_the_base():
  # The checks name keys by their dotted path: each must exist in every experiment.
  from facejax import config_checks  # pylint: disable=import-outside-toplevel
  for name in configs.EXPERIMENTS:
    flat = {k for k, _ in config_checks._leaves(_config(name, None))}  # pylint: disable=protected-access
    checked = set(config_checks._COUNTS) | set(config_checks._CHOICES)  # pylint: disable=protected-access
    assert checked <= flat, (name, checked - flat)


def test_augmentation_ranges_are_checked_naming_the_key():
  c = _config().copy_and_resolve_references()
  c.data.random_scale = (1.2, 0.8)
  c.data.random_rotate = 200.0
  c.data.color_jitter = (0.1, 1.5, 0.0)
  with pytest.raises(ConfigError) as e:
    validate_config(c, 1)
  text = str(e.value)
  for key in ("config.data.random_scale=(1.2, 0.8)", "config.data.random_rotate=200.0",
              "config.data.color_jitter=(0.1, 1.5, 0.0)"):
    assert key in text
