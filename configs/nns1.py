r"""FaceNet NNS1 ("mini Inception", 165x165): semi-hard triplets on LFW DevTrain
people.

  python -m facejax.main --config=configs/nns1.py --workdir=/tmp/nns1

Net: `facejax/models/inception.py`, `FaceNetInception(net="nns1")`: OUR design
(the paper publishes only 26M params / 220M multiply-adds, no layer table): NN2
at half width without 4b-4d, the 6x6x512 map flattened into a 1280-unit ReLU FC
layer; 25.10M params, 220 M multiply-adds per face (212 M as XLA counts them).

Recipe: `configs/common.py` facenet_inception (the paper's semi-hard triplets
with AdaGrad 0.05, BatchNorm added, 45 x 4 batches). Input: no face alignment;
a 150-px centre crop of the 250x250 LFW original resized to 177, then a
random 165 crop (the centre crop at evaluation).

Variants (`--config=configs/nns1.py:<arg>`):
  (none)  20k steps, ~42 hours on 2 CPU cores (7.6 s per 180-face step
          measured, load ~2). ESTIMATED for one H100-class GPU: 0.24 TFLOP a
          step (3 x 220 M MACs x 180), ~0.03-0.05 s/step bound by JPEG
          decoding, ~15 min. Expected VAL@1e-3: far below the paper's 82.4%.
  paper   NNS1 as the paper specifies it, without BatchNorm.
  smoke   NNS1 at width 0.125 and 32x32, its total stride (5a/5b see a 1x1 map):
          the pipeline check of `configs/common.py` facenet_inception.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.facenet_inception("nns1", arg, image_size=165, resize_size=177)
