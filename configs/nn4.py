r"""FaceNet NN4 (Inception, 96x96): semi-hard triplets on LFW DevTrain people.

  python -m facejax.main --config=configs/nn4.py --workdir=/tmp/nn4

Net: `facejax/models/inception.py`, `FaceNetInception(net="nn4")`: NN2's table
at 96x96 without the 5x5 branches of 5a/5b (our reading of "no 5x5 convolutions
in the higher layers", the same as OpenFace's nn4): 6.94M params, 289 M
multiply-adds per face (264 M as XLA counts them; paper: 285M).

Recipe: `configs/common.py` facenet_inception (the paper's semi-hard triplets
with AdaGrad 0.05, BatchNorm added, 45 x 4 batches). Input: no face alignment;
a 140-px centre crop of the 250x250 LFW original resized to 104, then a
random 96 crop (the centre crop at evaluation).

Variants (`--config=configs/nn4.py:<arg>`):
  (none)  20,000 steps; 5.7 s per 180-face step measured on 2 CPU cores
          (load ~3), ~32 hours. An H100-class GPU (an ESTIMATE from 3 x 289 M
          MACs x 180 faces = 0.3 TFLOP a step) would take ~0.03-0.05 s/step,
          bound by JPEG decoding: ~15 min. Expected: far below the paper's
          82.0%.
  paper   NN4 as the paper specifies it, without BatchNorm.
  smoke   NN4 at width 0.125 and 32x32, its total stride (5a/5b see a 1x1 map):
          the pipeline check of `configs/common.py` facenet_inception.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.facenet_inception("nn4", arg, image_size=96, resize_size=104, source_crop=140)
