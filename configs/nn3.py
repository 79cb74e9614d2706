r"""FaceNet NN3 (NN2 architecture at 160x160): semi-hard triplets on LFW DevTrain
people.

  python -m facejax.main --config=configs/nn3.py --workdir=/tmp/nn3

Net: `facejax/models/inception.py`, `FaceNetInception(net="nn3")`: NN2's layer
table at 160x160 input ("identical in architecture", paper §3.3): 7.46M params,
815 M multiply-adds per face (771 M as XLA counts them); the paper gives no
per-net figures.

Recipe: `configs/common.py` facenet_inception (the paper's semi-hard triplets
with AdaGrad 0.05, BatchNorm added, 45 x 4 batches). Input: no face alignment;
a 150-px centre crop of the 250x250 LFW original resized to 172, then a
random 160 crop (the centre crop at evaluation).

Variants (`--config=configs/nn3.py:<arg>`):
  (none)  20,000 steps. On 2 CPU cores: measured 19.9 s per 180-face
          step (load ~2): ~4.6 days. One H100-class GPU, ESTIMATED (3 x 815 M
          MACs x 180 faces = 0.9 TFLOP a step): ~0.03-0.05 s/step, bound by JPEG
          decoding, ~15-20 min. Expected: far below the paper's 88.3% VAL at
          1e-3 FAR.
  paper   NN3 as the paper specifies it, without BatchNorm.
  smoke   NN3 at width 0.125 and 32x32, its total stride (5a/5b see a 1x1 map):
          the pipeline check of `configs/common.py` facenet_inception.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.facenet_inception("nn3", arg, image_size=160, resize_size=172)
