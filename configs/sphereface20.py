r"""SphereFace-20 (Liu et al. 2017) at 112x96, trained with A-Softmax (m=4) on LFW DevTrain.

Net: `facejax/models/sphereface.py` (22.67M params, 1.75 G multiply-adds per
112x96 face; no BatchNorm, PReLU, residual units, 512-D fc5).

Loss: A-Softmax (`facejax/losses/angular_margin.py`), m=4, on the
un-normalised 512-D fc5 features (`loss.features="features"`: the target
logit is ||x|| psi(theta)), blended with the plain logit by lambda =
max(5, 1000 (1 + 0.12 step)^-1), as in the released solver. The classes are
the LFW DevTrain identities with >= 2 images (1,184), not CASIA-WebFace's
10,572. Batches are plain shuffled images (`data.sampling="shuffle"`), as in
SphereFace's Caffe data layer.

Recipe of the released solver (wy1iu/sphereface
`train/code/sphereface_solver.prototxt` and `sphereface_model.prototxt`),
which `optimizer` below already follows:
  SGD, momentum 0.9, base lr 0.1, x0.1 at steps 16,000 and 24,000, stop at
  28,000; weight decay 5e-4; batch 256 (Caffe's batch_size is per GPU, and
  the release's train script takes a GPU list, so the effective batch may
  have been a multiple of 256); input (x - 127.5) / 128 (our "fixed"
  standardisation); random mirror only (no random crop).
  Not reproduced: Caffe's per-blob multipliers (stage-opener and fc5 biases
  lr x2 and no weight decay; our decay applies to every parameter), and the
  CASIA-WebFace 112x96 similarity-aligned training set (we train on LFW).
Evaluation follows the release's `test/code/evaluation.m`: features of the
image and its mirror concatenated, mean of the other folds subtracted, cosine
similarity, 10-fold threshold.

Input: LFW originals are 250x250 and unaligned. A 128x128 centre crop resized
to 112x112 and centre-cropped to 112x96 keeps the aspect ratio and gives an
eye distance of ~37 px (SphereFace's aligned crops: ~35 px); resizing a square
crop straight to 112x96 would squeeze faces horizontally by 14%.

Variants (`--config=configs/sphereface20.py:<arg>`):
  (none)  the net and solver above, batch 256 of shuffled images. Expected runtime
          on 2 CPU cores: measured 185-194 s/step at batch 256 on 2 shared
          cores under load ~9 (the job got ~0.45 cores); its CPU time implies
          ~40 s/step on 2 idle cores, i.e. ~13 days for 28k steps: run it on
          an accelerator. On one H100-class GPU an ESTIMATE (not measured:
          3 x 1.75 G MACs x 256 images = 2.7 TFLOP per step at 20-40% of the
          TF32 peak) is 0.03-0.1 s/step, about 0.3-1 h for 28k steps.
          Expected result: far below the paper's 99.3% (LFW DevTrain has
          6,671 unaligned images in 1,184 classes against CASIA's 0.49 M).
  smoke   width 0.125 SphereFace-20 at 112x96, 2 steps on 20 identities,
          checkpoint, then the LFW DevTest eval: a pipeline check only (~1 min
          on 2 CPU cores); its accuracy means nothing.

Command:
  python -m facejax.main --config=configs/sphereface20.py --workdir=/tmp/sphereface20
Data: `--config.data.data_dir=/path/holding/lfw` or FACEJAX_DATA_DIR.
"""

import ml_collections

from facejax import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      name="sphereface20", embedding_dim=512, width=1.0, dtype="float32"))

  c.data = ml_collections.ConfigDict(dict(
      data_dir=ml_collections.FieldReference(None, field_type=str),  # else FACEJAX_DATA_DIR
      train_dir=ml_collections.FieldReference(None, field_type=str),  # default: <lfw root>/lfw
      # Evaluation images: an aligned copy of <lfw root>/lfw (facejax.data.align); default lfw/.
      lfw_image_dir=ml_collections.FieldReference(None, field_type=str),
      train_people="peopleDevTrain.txt",
      min_images_per_identity=2,
      sampling="shuffle",  # plain shuffled batches for the classifier
      max_identities=ml_collections.FieldReference(None, field_type=int),
      source="folder",  # or "tfds"
      tfds_data_dir=ml_collections.FieldReference(None, field_type=str),
      source_crop=128,
      image_size=(112, 96),  # (H, W)
      resize_size=(112, 112),
      standardization="fixed",  # (x - 127.5) / 128, as SphereFace
      **config_lib.bad_input_policies(),
      random_flip=True,
      random_crop=False,  # SphereFace mirrors only
  ))

  # P x K only matter with data.sampling="pk" (e.g. a triplet loss override).
  c.num_identities = 64
  c.images_per_identity = 4
  c.batch_size = 256

  c.loss = ml_collections.ConfigDict(dict(
      name="a_softmax", features="features", margin_m=4, lambda_base=1000.0, lambda_gamma=0.12,
      lambda_power=1.0, lambda_min=5.0))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="sgd", learning_rate=0.1, momentum=0.9, nesterov=False, schedule="step",
      boundaries=(16_000, 24_000), decay_factor=0.1, warmup_steps=0, weight_decay=5e-4,
      grad_clip_norm=0.0, final_lr_fraction=0.0))
  c.device_prefetch = 2  # batches kept on device ahead of the step
  c.num_train_steps = 28_000
  c.log_every_steps = 50

  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, max_to_keep=3, async_save=True))
  c.divergence = config_lib.divergence_guard()
  c.eval = ml_collections.ConfigDict(dict(
      every_steps=2000, during_training=("dev_test",), at_end=("dev_test", "view2"),
      batch_size=128, distance="cosine", flip="concat", subtract_mean=True, far_target=1e-3))

  if arg == "smoke":
    c.model.update(width=0.125, embedding_dim=64)
    c.data.max_identities = 20
    c.num_identities, c.images_per_identity = 4, 2
    c.batch_size = 8
    c.num_train_steps = 2
    c.log_every_steps = 1
    c.checkpoint.every_steps = 2
    c.eval.update(every_steps=0, at_end=("dev_test",), batch_size=64)
  elif arg:
    raise ValueError(f"configs/sphereface20.py: unknown variant {arg!r}; use '' or 'smoke'")
  if c.data.sampling == "pk":
    c.batch_size = c.num_identities * c.images_per_identity
  return c
