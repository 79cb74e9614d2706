"""Shared body of the FaceNet Inception experiment configs (configs/nn2.py ... nns2.py).

Those five experiments differ only in the net and its input geometry; each
config file keeps its own docstring (command, source, expected runtime and
result) and calls `facenet_inception_config` with its sizes.
"""

import ml_collections


def bad_input_policies() -> dict:
  """`config.data` keys for bad input (facejax/data/image_check.py), shared by every config.

  bad_images: corrupt, truncated, zero-byte, too large or non-image files: "skip"
    (counted in the log and <workdir>/data_report.json) or "fail" (names the file).
  non_rgb: grayscale, CMYK, RGBA, palette images: "convert" to RGB as PIL does,
    "skip" or "fail".
  small_identities: identities with fewer than min_images_per_identity usable
    images (no positive pair): "skip" (counted) or "fail".
  """
  return dict(bad_images="skip", non_rgb="convert", small_identities="skip",
              max_image_pixels=40_000_000,
              check_workers=ml_collections.FieldReference(None, field_type=int))


def divergence_guard() -> ml_collections.ConfigDict:
  """`config.divergence` (facejax/train.py DivergenceGuard): NaN/inf loss or collapse.

  action "stop" raises naming the step and the last good checkpoint;
  "rollback" restores the newest good checkpoint and multiplies the learning
  rate by rollback_lr_factor, at most max_rollbacks times.
  """
  return ml_collections.ConfigDict(dict(action="stop", min_embedding_spread=1e-4,
                                        rollback_lr_factor=0.5, max_rollbacks=3))


def facenet_inception_config(net: str, arg: str | None, *, image_size, resize_size,
                             source_crop: int = 150, random_crop: bool = True,
                             smoke_image_size=32, smoke_resize_size=36) -> ml_collections.ConfigDict:
  """Semi-hard triplets on LFW DevTrain people with the paper's AdaGrad 0.05.

  Variants: None (BatchNorm on, see facejax/models/nn1.py for why), "paper"
  (no BatchNorm, as the paper), "smoke" (width 0.125, 2 steps, DevTest eval).
  """
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      name=net, embedding_dim=128, width=1.0, batch_norm=True, dtype="float32"))

  c.data = ml_collections.ConfigDict(dict(
      data_dir=ml_collections.FieldReference(None, field_type=str),  # else FACEJAX_DATA_DIR
      train_dir=ml_collections.FieldReference(None, field_type=str),  # default: <lfw root>/lfw
      # Evaluation images: an aligned copy of <lfw root>/lfw (facejax.data.align); default lfw/.
      lfw_image_dir=ml_collections.FieldReference(None, field_type=str),
      train_people="peopleDevTrain.txt",
      min_images_per_identity=2,
      max_identities=ml_collections.FieldReference(None, field_type=int),
      source="folder",  # or "tfds"
      tfds_data_dir=ml_collections.FieldReference(None, field_type=str),
      source_crop=source_crop,
      image_size=image_size,
      resize_size=resize_size,
      standardization="fixed",
      **bad_input_policies(),
      random_flip=True,
      random_crop=random_crop,
  ))

  c.num_identities = 45
  c.images_per_identity = 4
  c.batch_size = c.num_identities * c.images_per_identity

  c.loss = ml_collections.ConfigDict(dict(name="semi_hard", margin=0.2))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adagrad", learning_rate=0.05, schedule="constant", warmup_steps=0,
      initial_accumulator_value=0.1, eps=1e-7, weight_decay=0.0, grad_clip_norm=0.0,
      momentum=0.9, b1=0.9, b2=0.999, boundaries=(), decay_factor=0.1, final_lr_fraction=0.0))
  c.device_prefetch = 2  # batches kept on device ahead of the step
  c.num_train_steps = 20_000
  c.log_every_steps = 50

  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, max_to_keep=3, async_save=True))
  c.divergence = divergence_guard()
  c.eval = ml_collections.ConfigDict(dict(
      every_steps=2000, during_training=("dev_test",), at_end=("dev_test", "view2"),
      batch_size=128, distance="euclidean", flip="none", subtract_mean=False, far_target=1e-3))

  if arg == "paper":
    c.model.batch_norm = False
  elif arg == "smoke":
    c.model.update(width=0.125, embedding_dim=32)
    c.data.update(image_size=smoke_image_size, resize_size=smoke_resize_size)
    c.data.max_identities = 20
    c.num_identities, c.images_per_identity = 4, 2
    c.num_train_steps = 2
    c.log_every_steps = 1
    c.checkpoint.every_steps = 2
    c.eval.update(every_steps=0, at_end=("dev_test",), batch_size=64)
  elif arg:
    raise ValueError(f"configs/{net}.py: unknown variant {arg!r}; use '', 'paper' or 'smoke'")
  c.batch_size = c.num_identities * c.images_per_identity
  return c
