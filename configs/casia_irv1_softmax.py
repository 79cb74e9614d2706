r"""Inception-ResNet-v1 + softmax on CASIA-WebFace: davidsandberg's 20180408-102900 recipe.

  python -m facejax.main --config=configs/casia_irv1_softmax.py \
      --config.data.train_dir=/data/faces_webface_112x112 --workdir=workdirs/casia_irv1

davidsandberg/facenet wiki "Classifier training of Inception-ResNet-v1" (train_softmax.py):
160x160 MTCNN crops (margin 32 on 182 px, random 160 crop), random flip, fixed
standardisation, 512-D, dropout keep 0.8, softmax on the pre-normalisation bottleneck,
Adam (beta1 0.9, beta2 0.999, eps 0.1) with data/learning_rate_schedule_classifier_casia.txt
(lr 0.1, 0.01 from epoch 65, 0.001 from epoch 80), 150 epochs of 1,000 batches of 90,
weight decay 5e-4, BatchNorm decay 0.995, an exponential moving average of the weights
(0.9999) for evaluation. CASIA-WebFace: 453,453 images of 10,575 identities after
detection (the wiki); insightface's faces_webface_112x112 has 10,572.
Deviations: insightface's .rec holds 112x112 ArcFace-aligned crops, not 182-px MTCNN
crops, so this config resizes them to 182 and random-crops 160 (drop
`data.source=rec` and point `train_dir` at an MTCNN-aligned folder tree,
`python -m facejax.data.align --margin=44 --image_size=182`, for the original data);
the prelogits norm penalty (5e-4) is not reproduced.

Expected runtime (ESTIMATE, not measured): 150,000 steps of 90 at 1.418 G multiply-adds
per image; davidsandberg reports ~30 h for 275k steps of this net on a Pascal Titan X,
i.e. ~16 h here on that GPU, ~1-2 h on an H100-class one if the pipeline feeds ~5k
images/s (benchmarks/README.md: ~1.7-2.1k images/s decoded per core).
Published result to reproduce: LFW 0.9905 (20180408-102900; facejax evaluates the
imported weights at 0.9907, README "Pretrained weights").

Variants (`--config=configs/casia_irv1_softmax.py:<arg>`):
  (none)  the recipe above.
  smoke   the same net at 75x75, 128-D, 2 steps of 8 on the .rec given by
          --config.data.train_dir (CI: a synthetic one), LFW DevTest at the end.
"""

from configs import common

EPOCH = 1000  # davidsandberg's --epoch_size


def get_config(arg=None):
  variant = common.parse_variant(arg, "configs/casia_irv1_softmax.py", ("smoke",))
  c = common.base(
      model=dict(name="inception_resnet_v1", embedding_dim=512, dropout_rate=0.2,  # keep 0.8
                 bn_momentum=0.995, dtype="float32"),
      optimizer=common.optimizer(
          "adam", 0.1, b1=0.9, b2=0.999, eps=0.1, weight_decay=5e-4,
          schedule=dict(name="step", warmup_steps=0, boundaries=(65 * EPOCH, 80 * EPOCH),
                        decay_factor=0.1)),
      loss=dict(name="softmax", features="features"), image_size=160, resize_size=182)
  c.data.update(source="rec", train_people=None, min_images_per_identity=1, source_crop=0,
                sampling="shuffle", random_crop=True)
  c.batch_size = 90
  c.num_train_steps = 150 * EPOCH
  c.ema_decay = 0.9999
  c.log_every_steps = 100
  c.checkpoint.every_steps = 5 * EPOCH
  c.eval.update(batch_size=100, distance="cosine", flip="concat", subtract_mean=True)
  c.evals.lfw_view1.every_steps = 5 * EPOCH
  if variant == "smoke":
    c.model.embedding_dim = 128
    c.data.update(image_size=75, resize_size=85)
    c.batch_size = 8
    c.num_train_steps = 2
    c.log_every_steps = 1
    c.checkpoint.every_steps = 2
    c.eval.update(batch_size=256, flip="none")
    common.smoke_evals(c)
  return c
