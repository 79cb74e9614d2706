r"""FaceNet NN2 (Inception, 224x224): semi-hard triplets on LFW DevTrain people.

  python -m facejax.main --config=configs/nn2.py --workdir=/tmp/nn2

Net: `facejax/models/inception.py`, `FaceNetInception(net="nn2")`: the paper's
Table 2 row by row; 7.46M params, 1.60 G multiply-adds per 224x224 face (1.54 G
as XLA counts them).

Recipe: `configs/common.py` facenet_inception (the paper's semi-hard triplets
with AdaGrad 0.05, BatchNorm added, 45 x 4 batches). Input: no face alignment;
a 150-px centre crop of the 250x250 LFW original (face in the middle ~110 px)
resized to 240, then a random 224 crop (the centre crop at evaluation).

Variants (`--config=configs/nn2.py:<arg>`):
  (none)  20,000 steps. On 2 CPU cores: measured 11.6 s per 60-face
          step (BatchNorm net, load ~2), ~35 s per 180-face step scaled
          linearly: ~8 days, so run it on an accelerator. One H100-class GPU,
          ESTIMATED (3 x 1.6 G MACs x 180 faces = 1.7 TFLOP a step at 10-20%
          of TF32 peak): ~0.05 s/step, bound by JPEG decoding, 20-30 min in
          all. Expected: far below the paper's 89.4% VAL at 1e-3 FAR.
  paper   NN2 as the paper specifies it, without BatchNorm.
  smoke   NN2 at width 0.125 and 32x32, its total stride (5a/5b see a 1x1 map):
          the pipeline check of `configs/common.py` facenet_inception.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.facenet_inception("nn2", arg, image_size=224, resize_size=240)
