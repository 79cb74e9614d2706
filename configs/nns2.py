r"""FaceNet NNS2 ("tiny Inception", 140x116): semi-hard triplets on LFW DevTrain
people.

  python -m facejax.main --config=configs/nns2.py --workdir=/tmp/nns2

Net: `facejax/models/inception.py`, `FaceNetInception(net="nns2")`: OUR design
(the paper publishes only 4.3M params / 20M multiply-adds, no layer table): an
8-filter conv1, NN2's 3a, 3c, 4a, 4e, 5a at quarter width, the 5x4x256 map
flattened into a 768-unit ReLU FC layer; 4.24M params, 20.9 M multiply-adds per
face (20.2 M as XLA counts them).

Recipe: `configs/common.py` facenet_inception (the paper's semi-hard triplets
with AdaGrad 0.05, BatchNorm added, 45 x 4 batches). Input: no face alignment;
a 150-px centre crop of the 250x250 LFW original resized to 144x144 and
centre-cropped to 140x116, which keeps the face's aspect ratio (resizing the
square crop straight to 140x116 would squeeze faces by 17%). Augmentation is
the mirror only: a random 140x116 crop of the 144x144 image would shift faces
by up to 28 px sideways.

Variants (`--config=configs/nns2.py:<arg>`):
  (none)  Measured 1.2 s per 180-face step (2 CPU cores, load ~3):
          ~7 hours for the 20,000 steps. Estimated, not measured, on an
          H100-class GPU: 23 GFLOP a step (3 x 21 M MACs x 180), so JPEG
          decoding bounds it at ~0.03-0.05 s/step, ~15 min. Expected: far
          below the paper's 51.9% VAL at 1e-3 FAR.
  paper   NNS2 as the paper specifies it, without BatchNorm.
  smoke   NNS2 at width 0.125 and 48x40, the smallest input with its 6:5
          aspect that leaves a 2x2 map for the flatten head: the pipeline
          check of `configs/common.py` facenet_inception.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return common.facenet_inception("nns2", arg, image_size=(140, 116), resize_size=(144, 144),
                                  random_crop=False, smoke_image_size=(48, 40),
                                  smoke_resize_size=(48, 48))
