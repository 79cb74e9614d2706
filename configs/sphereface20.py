r"""SphereFace-20 (Liu et al. 2017) at 112x96, trained with A-Softmax (m=4) on LFW DevTrain.

  python -m facejax.main --config=configs/sphereface20.py --workdir=/tmp/sphereface20

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
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_variant(arg, "configs/sphereface20.py", ("smoke",))
  c = common.base(
      model=dict(name="sphereface20", embedding_dim=512, width=1.0, dtype="float32"),
      optimizer=common.optimizer(
          "sgd", 0.1, momentum=0.9, nesterov=False, weight_decay=5e-4,
          schedule=dict(name="step", warmup_steps=0, boundaries=(16_000, 24_000),
                        decay_factor=0.1)),
      loss=dict(name="a_softmax", features="features", margin_m=4, lambda_base=1000.0,
                lambda_gamma=0.12, lambda_power=1.0, lambda_min=5.0),
      image_size=(112, 96), resize_size=(112, 112))  # (H, W)
  # Plain shuffled batches for the classifier; mirror only.
  c.data.update(sampling="shuffle", source_crop=128)
  # P x K only matter with data.sampling="pk" (e.g. a triplet loss override).
  c.num_identities = 64
  c.batch_size = 256
  c.num_train_steps = 28_000
  c.eval.update(distance="cosine", flip="concat", subtract_mean=True)
  if variant == "smoke":
    c.model.update(width=0.125, embedding_dim=64)
    common.smoke(c, batch_size=8)
  return c
