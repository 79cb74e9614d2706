r"""Inception-ResNet-v1 (davidsandberg/facenet) with softmax (or softmax + center) on LFW DevTrain.

  python -m facejax.main --config=configs/inception_resnet_v1.py --workdir=/tmp/irv1
  python -m facejax.main --config=configs/inception_resnet_v1.py:smoke --workdir=/tmp/irv1_smoke

Recipe source: davidsandberg/facenet, wiki "Training using the VGGFace2
dataset" (the 20180402-114759 model, LFW 0.9965) with `train_softmax.py` and
`data/learning_rate_schedule_classifier_vggface2.txt`: 160x160 input, 512-D
embedding, fixed standardisation (x - 127.5) / 128, random flip only (no
random crop), dropout keep probability 0.4, Adam (beta1 0.9, beta2 0.999,
eps 0.1) with lr 0.05 -> 0.005 at epoch 100 -> 0.0005 at epoch 200, stop after
epoch 275 (1,000 batches of 90 per epoch = 275k steps), L2 weight decay 5e-4,
BatchNorm decay 0.995. LFW evaluation as in that recipe: cosine distance,
flipped + non-flipped embeddings concatenated, feature mean subtracted.

Deviations, stated:
  * Loss as Sandberg's `train_softmax.py`: softmax cross-entropy over the
    training identities, with the classifier on the 512-D bottleneck before
    L2 normalisation (`loss.features="features"`), on plain shuffled
    batches of 90 (`data.sampling="shuffle"`). The classes are the LFW
    DevTrain identities with >= 2 images (1,184), not VGGFace2's 8,631.
    Sandberg's prelogits norm penalty is not reproduced.
  * Data: LFW DevTrain people instead of VGGFace2 (no MTCNN alignment): the
    250x250 originals are centre-cropped to 150 px and resized to 182, then
    the centre 160 is taken, which puts the face at about Sandberg's scale
    (MTCNN 182-px crops with margin 44, centre 160).
  * Weight decay is an L2 term on every parameter (Sandberg's regulariser
    skips BN betas and biases); no exponential moving average of the weights
    (Sandberg keeps one with decay 0.9999 for evaluation).

Variants (`--config=configs/inception_resnet_v1.py:<arg>`):
  (none)  the recipe above: 23.47M params, 1.418 G multiply-adds per image.
          Measured on 2 CPU cores (float32, batch 90, after compilation):
          58 s wall per step with the cores shared by other jobs (load ~7),
          29 CPU-seconds per step, i.e. ~15 s per step on 2 free cores:
          ~48 days for 275k steps -- not a CPU job.
          Accelerator (ESTIMATE, not measured): 90 x 1.418 G x 3 (fwd+bwd)
          = 383 G multiply-adds per step. Sandberg reports ~30 h for the
          275k steps on a Pascal Titan X (~0.4 s/step); an A100/H100 is
          roughly 10-20x faster on this net, so ~20-40 ms per step and
          ~2-3 h in all, provided the input pipeline feeds ~3-5k images/s.
          Expected LFW result: far below Sandberg's 0.9965, because LFW
          DevTrain (4k people, mostly 1-3 images) is a tiny training set.
  center  the same with softmax + center loss, Sandberg's earlier center-loss
          recipe: --center_loss_factor 1e-2, --center_loss_alfa 0.95.
  center_smoke  the smoke variant below with the center loss.
  smoke   75x75 input (the smallest the net takes: 75 -> 37 -> 35 -> 17 ->
          15 -> 7 -> 3 -> 1), full depth, 128-D, 20 people, 4 x 2 batches,
          2 steps, View 1 DevTest eval (no flip) at the end: 67 s wall on
          the 2 shared cores (load ~5), mostly compilation and eager init.
"""

import ml_collections

from configs import common

EPOCH = 1000  # Sandberg's --epoch_size (batches per epoch)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_variant(arg, "configs/inception_resnet_v1.py",
                                 ("center", "smoke", "center_smoke"))
  c = common.base(
      model=dict(name="inception_resnet_v1", embedding_dim=512, dropout_rate=0.6,  # keep 0.4
                 bn_momentum=0.995, dtype="float32"),
      optimizer=common.optimizer(
          "adam", 0.05, b1=0.9, b2=0.999, eps=0.1, weight_decay=5e-4,
          schedule=dict(name="step", warmup_steps=0, boundaries=(100 * EPOCH, 200 * EPOCH),
                        decay_factor=0.1)),
      loss=dict(name="softmax", features="features"))
  if variant in ("center", "center_smoke"):
    c.loss = common.loss("center", features="features", center_weight=1e-2, center_alpha=0.95)
  # Plain shuffled batches for the classifier; flip only (the VGGFace2 recipe
  # drops random crops); fixed standardisation, the 2018 models'.
  c.data.update(sampling="shuffle", image_size=160, resize_size=182)
  # P x K only matter with data.sampling="pk" (e.g. a triplet loss override).
  c.num_identities, c.images_per_identity = 30, 3
  c.batch_size = 90
  c.num_train_steps = 275 * EPOCH
  c.log_every_steps = 100
  c.checkpoint.every_steps = 5 * EPOCH
  c.eval.update(batch_size=100, distance="cosine", flip="concat", subtract_mean=True)
  c.evals.lfw_view1.every_steps = 5 * EPOCH
  if variant in ("smoke", "center_smoke"):
    c.model.embedding_dim = 128
    c.data.update(image_size=75, resize_size=85)
    common.smoke(c, batch_size=8)
    # Plain embeddings: the flip-concat eval would double the smoke's eval time.
    c.eval.flip = "none"
  return c
