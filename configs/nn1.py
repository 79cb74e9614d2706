r"""FaceNet NN1 with online semi-hard triplet mining on LFW DevTrain people.

Paper defaults (Schroff et al. 2015): 220x220 input, 128-D embedding, margin
0.2, AdaGrad lr 0.05, identity-balanced P x K batches. Trains on the people of
`peopleDevTrain.txt` (4,038 people; the 1,184 with >= 2 images are usable for
triplets) and evaluates on View 1 DevTest pairs (disjoint people) during
training and on View 2 (10-fold) at the end.

Variants (`--config=configs/nn1.py:<arg>`):
  (none)  paper NN1 (140M params, 1.6 G multiply-adds/image; a training
          step costs 9.15 GFLOP/image by XLA's count). Runtime: measured
          2.5 images/s on 2 CPU cores, i.e. ~72 s/step at batch 180 and
          ~17 days for 20k steps: run it on an accelerator. On one H100-class
          GPU at an assumed 30% of bf16 peak this is an estimate of ~0.03
          s/step (not measured here). Expected result when trained on LFW
          alone (6,671 images): far below the paper's 99.63% (100M+ images).
  cpu     reduced NN1 for a real CPU run (96x96 input, conv width 0.5,
          maxout 1024, BatchNorm, Adam 1e-3 cosine, 32x4 batches, 1,500
          steps): the run reported in the README. ~35-60 min on 2 CPU cores
          (1.2-1.5 s/step alone). Measured result: DevTest accuracy 0.830
          (raw pixels 0.584, untrained 0.608), AUC 0.907; View 2 0.891
          (View 2 includes the training people).
  smoke   tiny net, 32x32, 12 steps, checkpoint every 4: train -> checkpoint
          -> resume -> eval (DevTest at step 8, DevTest + View 2 at the end) on
          the real LFW copy in about 70 s on 2 CPU cores; accuracy ~0.57.

Command:
  python -m facejax.main --config=configs/nn1.py:smoke --workdir=/tmp/nn1_smoke
Data: `--config.data.data_dir=/path/holding/lfw` or FACEJAX_DATA_DIR.
"""

import ml_collections

from facejax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      name="nn1", embedding_dim=128, maxout_features=4096, conv_width=1.0, batch_norm=False,
      dtype="float32"))

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
      # LFW originals are 250x250 with the face in the middle ~110 px: a fixed
      # centre crop (FaceNet's "centre crop" setting) then resize.
      source_crop=150,
      image_size=220,
      resize_size=240,
      standardization="fixed",
      **config_lib.bad_input_policies(),
      random_flip=True,
      random_crop=True,
  ))

  # P people x K faces per batch (FaceNet: ~40 faces/identity, ~1,800 per batch;
  # LFW DevTrain people have few images, so K is small).
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
  c.divergence = config_lib.divergence_guard()
  c.eval = ml_collections.ConfigDict(dict(
      every_steps=2000, during_training=("dev_test",), at_end=("dev_test", "view2"),
      batch_size=128, distance="euclidean", flip="none", subtract_mean=False, far_target=1e-3))

  if arg == "cpu":
    # BatchNorm: without it this small NN1 collapses (all embeddings equal,
    # loss stuck at the margin) within 200 steps; see facejax/models/nn1.py.
    c.model.update(conv_width=0.5, maxout_features=1024, batch_norm=True)
    c.data.update(image_size=96, resize_size=104, source_crop=140)
    c.num_identities, c.images_per_identity = 32, 4
    c.optimizer.update(name="adam", learning_rate=1e-3, schedule="cosine", warmup_steps=100)
    c.num_train_steps = 1500
    c.checkpoint.every_steps = 250
    c.eval.every_steps = 500
  elif arg == "smoke":
    c.model.update(conv_width=0.125, maxout_features=64, embedding_dim=32)
    c.data.update(image_size=32, resize_size=36, source_crop=140, max_identities=60)
    c.num_identities, c.images_per_identity = 8, 3
    c.num_train_steps = 12
    c.log_every_steps = 2
    c.checkpoint.every_steps = 4
    c.eval.update(every_steps=8, batch_size=256)
  elif arg:
    raise ValueError(f"configs/nn1.py: unknown variant {arg!r}; use '', 'cpu' or 'smoke'")
  c.batch_size = c.num_identities * c.images_per_identity
  return c
