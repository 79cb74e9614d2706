r"""FaceNet NNS2 ("tiny Inception", 140x116): semi-hard triplets on LFW DevTrain
people.

Net: `facejax/models/inception.py`, `FaceNetInception(net="nns2")`: OUR design
(the paper publishes only 4.3M params / 20M multiply-adds, no layer table): an
8-filter conv1, NN2's 3a, 3c, 4a, 4e, 5a at quarter width, the 5x4x256 map
flattened into a 768-unit ReLU FC layer; 4.24M params, 20.9 M multiply-adds per
face (20.2 M as XLA counts them).

Recipe (FaceNet paper, Schroff et al. 2015, §3.3 and §4): 128-D embedding,
triplet margin 0.2, online semi-hard negatives within identity-balanced P x K
batches, AdaGrad lr 0.05 (constant), 140x116 (H x W) input. Deviations here:
  * BatchNorm between every conv and its ReLU (`model.batch_norm=True`; the
    paper has none). The paper trained on 100M-200M faces; FaceNet nets trained
    from scratch on LFW alone collapse without it (all embeddings equal, loss
    stuck at the margin; see facejax/models/nn1.py). The `paper` variant turns
    it off.
  * Batches of 45 people x 4 faces (FaceNet: ~1,800 faces, ~40 per person): LFW
    DevTrain people have few images (median 2-3; missing slots are masked).
  * No face alignment: a 150-px centre crop of the 250x250 LFW original resized
    to 144x144 and centre-cropped to 140x116, which keeps the face's aspect
    ratio (resizing the square crop straight to 140x116 would squeeze faces by
    17%). Augmentation is the mirror only: a random 140x116 crop of the 144x144
    image would shift faces by up to 28 px sideways.

Variants (`--config=configs/nns2.py:<arg>`):
  (none)  the recipe above, 20,000 steps. Expected runtime on 2 CPU cores:
          measured 1.2 s per 180-face step (load ~3 on the 2 shared cores): ~7
          hours for 20k steps. On one H100-class GPU an ESTIMATE (not measured:
          3 x 21 M MACs x 180 faces = 23 GFLOP per step) is bound by JPEG
          decoding, ~0.03-0.05 s/step: ~15 min for 20k steps. Expected result:
          far below the paper's 51.9% VAL at 1e-3 FAR (Table 3, on their
          hold-out set after training on 100M+ faces); LFW DevTrain has ~9.5k
          unaligned faces. Watch `embedding_spread` for collapse.
  paper   the same without BatchNorm, as the paper specifies.
  smoke   width-0.125 net at 48x40, the smallest input with NNS2's 6:5 aspect
          that leaves a 2x2 map for the flatten head; 2 steps of 4 people x 2
          images from 20 identities, checkpoint, then the LFW DevTest
          evaluation: a pipeline check only; its accuracy means nothing.

Command:
  python -m facejax.main --config=configs/nns2.py --workdir=/tmp/nns2
Data: `--config.data.data_dir=/path/holding/lfw` or FACEJAX_DATA_DIR.
"""

import ml_collections

from facejax.config_lib import facenet_inception_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return facenet_inception_config("nns2", arg, image_size=(140, 116), resize_size=(144, 144),
                                  random_crop=False, smoke_image_size=(48, 40),
                                  smoke_resize_size=(48, 48))
