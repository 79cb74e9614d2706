"""The base config every facejax experiment overrides, and the parser of its variant argument.

An experiment states only what differs from `base`:

  def get_config(arg=None):
    variant = common.parse_variant(arg, "configs/nn1.py", ("cpu", "smoke"))
    c = common.base(model=dict(name="nn1", ...), optimizer=common.adagrad(0.05))
    c.data.update(image_size=220, resize_size=240)
    ...
    return c

Data: `--config.data.data_dir=/path/holding/lfw` or the FACEJAX_DATA_DIR
environment variable. `base` returns the config locked: assigning a key it does not have (a typo,
`c.data.random_flp = True`) fails in ml_collections, naming the key and the
closest existing one, and a value of the wrong type fails the same way. The
same holds for `--config.<key>=<value>` overrides on the command line. What no
single key can say (batch vs P x K, devices, the net's input size) is checked
at start-up by `facejax/config_checks.py`; every other value is checked by the
constructor that reads it (optax, the Flax net and head, the input pipeline).
"""

import ml_collections

_NONE_STR = lambda: ml_collections.FieldReference(None, field_type=str)  # noqa: E731
_NONE_INT = lambda: ml_collections.FieldReference(None, field_type=int)  # noqa: E731
_NONE_TUPLE = lambda: ml_collections.FieldReference(None, field_type=tuple)  # noqa: E731


def parse_variant(arg: str | None, where: str, variants: tuple[str, ...]) -> str:
  """`arg` of `--config=<file>.py:<arg>` -> the variant name ("" for the default).

  An unknown variant fails naming the file and the variants it has.
  """
  arg = arg or ""
  if arg not in ("", *variants):
    names = ", ".join(repr(v) for v in ("", *variants))
    raise ValueError(f"{where}: unknown variant {arg!r}; use one of {names}")
  return arg


def optimizer(name: str, learning_rate: float, *, schedule: dict | None = None,
              weight_decay: float = 0.0, grad_clip_norm: float = 0.0, accumulate_steps: int = 1,
              **kwargs) -> ml_collections.ConfigDict:
  """`config.optimizer`: `optax.<name>(learning_rate=<schedule>, **kwargs)`.

  kwargs go to optax unchanged, so optax's own defaults apply to what is not
  stated, and a misspelt keyword fails in optax's constructor, naming it.
  schedule: `name` ("constant" | "cosine" | "step") plus that schedule's keys
    (facejax/optimizers.py SCHEDULES), with `warmup_steps`.
  weight_decay: an L2 term added to the gradient, the classic "weight decay" of
    the seeds' recipes (AdamW takes its decoupled `weight_decay` in kwargs).
  grad_clip_norm: clip the global gradient norm to this; 0 turns it off.
  accumulate_steps: k > 1 averages the gradients of k steps and applies them once
    (`optax.MultiSteps`; arcface_torch's `gradient_acc`), the schedule counting updates.
  """
  return ml_collections.ConfigDict(dict(
      name=name, learning_rate=learning_rate, kwargs=dict(kwargs),
      schedule=dict(schedule or dict(name="constant", warmup_steps=0)),
      weight_decay=weight_decay, grad_clip_norm=grad_clip_norm,
      accumulate_steps=accumulate_steps)).lock()


def loss(name: str, **hparams) -> ml_collections.ConfigDict:
  """`config.loss`: a loss name and its head's keyword arguments (facejax/losses), locked."""
  return ml_collections.ConfigDict(dict(name=name, **hparams)).lock()


def base(*, model: dict, optimizer: ml_collections.ConfigDict,  # pylint: disable=redefined-outer-name
         loss: dict | None = None, image_size: int | tuple[int, int] = 160,
         resize_size: int | tuple[int, int] | None = None) -> ml_collections.ConfigDict:
  """The locked base config: LFW DevTrain people, P x K batches, View 1 DevTest + View 2 eval.

  `model` is the net's section: `name` plus the keyword arguments of its Flax
  module (facejax/models), which names any key it does not take. `loss`
  defaults to FaceNet's semi-hard triplets with margin 0.2. `image_size` and
  `resize_size` (default: image_size) are an int or an (H, W) pair; the kind
  chosen here is the kind an override must keep.
  """
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = ml_collections.ConfigDict(model)
  c.data = ml_collections.ConfigDict(dict(
      data_dir=_NONE_STR(),  # the folder holding lfw/; else FACEJAX_DATA_DIR
      train_dir=_NONE_STR(),  # training identity folders; default <lfw root>/lfw
      # Evaluation images: an aligned copy of <lfw root>/lfw (facejax.data.align); default lfw/.
      lfw_image_dir=_NONE_STR(),
      train_people="peopleDevTrain.txt",  # None: every identity of train_dir
      min_images_per_identity=2,
      max_identities=_NONE_INT(),
      sampling="pk",  # "pk": P identities x K images (triplets) | "shuffle": plain batches
      source="folder",  # or "tfds"
      tfds_data_dir=_NONE_STR(),
      # LFW originals are 250x250 with the face in the middle ~110 px: a fixed
      # centre crop (FaceNet's "centre crop" setting), a resize, then a crop.
      source_crop=150,
      image_size=image_size,
      resize_size=image_size if resize_size is None else resize_size,
      standardization="fixed",  # (x - 127.5) / 128 | "prewhiten"
      random_flip=True,
      random_crop=False,
      # Off by default (input_pipeline.Preprocessing): zoom range, e.g. (0.9, 1.1); rotation
      # in degrees, e.g. 10 (davidsandberg's --random_rotate); (brightness, contrast,
      # saturation), e.g. (0.2, 0.2, 0.2).
      random_scale=_NONE_TUPLE(),
      random_rotate=0.0,
      color_jitter=_NONE_TUPLE(),
      # Bad input (facejax/data/image_check.py). bad_images: corrupt,
      # truncated, zero-byte, too large or non-image files, "skip" (counted in
      # the log and <workdir>/data_report.json) or "fail" (names the file).
      # non_rgb: grayscale, CMYK, RGBA, palette images, "convert" to RGB as
      # Pillow does, "skip" or "fail". small_identities: identities with fewer
      # than min_images_per_identity usable images, "skip" or "fail".
      bad_images="skip",
      non_rgb="convert",
      small_identities="skip",
      max_image_pixels=40_000_000,
      check_workers=_NONE_INT(),  # screening threads; None: Python's default
  ))
  # P people x K faces per batch (FaceNet: ~40 faces per identity, ~1,800 per
  # batch; LFW DevTrain people have few images, so K is small).
  c.num_identities = 45
  c.images_per_identity = 4
  # Follows P x K unless an experiment with data.sampling="shuffle" sets it.
  c.batch_size = c.get_ref("num_identities") * c.get_ref("images_per_identity")
  c.loss = ml_collections.ConfigDict(loss or dict(name="semi_hard", margin=0.2))
  c.optimizer = optimizer
  c.device_prefetch = 2  # batches kept on device ahead of the step
  # > 0: keep an exponential moving average of the weights (TF's rule with num_updates,
  # davidsandberg's 0.9999) and evaluate and export it; 0: off.
  c.ema_decay = 0.0
  c.num_train_steps = 20_000
  c.log_every_steps = 50
  # A workdir whose newest checkpoint initialises the net of a fresh run
  # (e.g. weights imported by facejax.convert); None: random init.
  c.init_from = _NONE_STR()
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, max_to_keep=3, async_save=True))
  # NaN/inf loss or collapsed embeddings (facejax/train.py DivergenceGuard):
  # "stop" names the step and the last good checkpoint; "rollback" restores
  # the newest good checkpoint with the learning rate x rollback_lr_factor.
  c.divergence = ml_collections.ConfigDict(dict(
      action="stop", min_embedding_spread=1e-4, rollback_lr_factor=0.5, max_rollbacks=3))
  # How evaluations embed and score unless an evaluator says otherwise.
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=128, distance="euclidean", flip="none", subtract_mean=False, far_target=1e-3))
  # Evaluators (facejax/evaluation/registry.py): name -> type, schedule, keyword arguments.
  # LFW View 1 by its protocol (threshold from DevTrain, scored on DevTest: people not
  # trained on) during training; View 2 as well at the end.
  c.evals = ml_collections.ConfigDict(dict(
      lfw_view1=dict(type="lfw", protocol="view1", every_steps=2000, at_end=True),
      lfw_view2=dict(type="lfw", protocol="view2", every_steps=0, at_end=True)))
  # An experiment adds an evaluator by name under `with c.unlocked():`; each evaluator's
  # constructor names any key it does not take.
  c.lock()
  return c


def smoke(c: ml_collections.ConfigDict, *, batch_size: int | None = None) -> None:
  """The pipeline-check variant: 20 identities, 4 x 2 batches, 2 steps, DevTest at the end."""
  c.data.max_identities = 20
  c.num_identities, c.images_per_identity = 4, 2
  if batch_size:
    c.batch_size = batch_size
  c.num_train_steps = 2
  c.log_every_steps = 1
  c.checkpoint.every_steps = 2
  c.eval.batch_size = 64
  smoke_evals(c)


def smoke_evals(c: ml_collections.ConfigDict) -> None:
  """A pipeline check's evaluation: LFW DevTest alone, scored in 10 folds of its own (the
  View 1 protocol would embed the 4,000 DevTrain images too), at the end only."""
  c.evals = ml_collections.ConfigDict(dict(
      lfw_dev_test=dict(type="lfw", protocol="dev_test_10fold", every_steps=0, at_end=True)))
  c.evals.lock()


def facenet_inception(net: str, arg: str | None, *, image_size, resize_size, source_crop: int = 150,
                      random_crop: bool = True, smoke_image_size=32,
                      smoke_resize_size=36) -> ml_collections.ConfigDict:
  """The FaceNet Inception experiments (configs/nn2.py ... nns2.py), which differ only in the net
  and its input.

  Recipe (FaceNet paper, Schroff et al. 2015, section 3.3 and 4): 128-D
  embedding, triplet margin 0.2, online semi-hard negatives within
  identity-balanced P x K batches, AdaGrad lr 0.05 (constant), 20,000 steps.
  VAL figures are the paper's Table 3, on its hold-out set after training on
  100M+ faces; LFW DevTrain has ~9.5k unaligned faces. Deviations:
    * BatchNorm between every conv and its ReLU (`model.batch_norm=True`; the
      paper has none). FaceNet nets trained from scratch on LFW alone collapse
      without it (all embeddings equal, loss stuck at the margin: watch
      `embedding_spread`). The `paper` variant turns it off.
    * Batches of 45 people x 4 faces (FaceNet: ~1,800 faces, ~40 per person):
      LFW DevTrain people have few images (median 2-3; missing slots are masked).

  Variants: "" (BatchNorm on: see facejax/models/nn1.py for why), "paper" (no
  BatchNorm, as the paper), "smoke" (width 0.125 at `smoke_image_size`; 2
  steps of 4 people x 2 images from 20 identities, a checkpoint, then the LFW
  DevTest evaluation: a pipeline check only, its accuracy means nothing).
  """
  c = base(model=dict(name=net, embedding_dim=128, width=1.0, batch_norm=True, dtype="float32"),
           optimizer=optimizer("adagrad", 0.05, initial_accumulator_value=0.1, eps=1e-7),
           image_size=image_size, resize_size=resize_size)
  variant = parse_variant(arg, f"configs/{net}.py", ("paper", "smoke"))
  c.data.update(source_crop=source_crop, random_crop=random_crop)
  if variant == "paper":
    c.model.batch_norm = False
  elif variant == "smoke":
    c.model.update(width=0.125, embedding_dim=32)
    c.data.update(image_size=smoke_image_size, resize_size=smoke_resize_size)
    smoke(c)
  return c
