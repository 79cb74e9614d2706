r"""FaceNet NNS1 ("mini Inception", 165x165): semi-hard triplets on LFW DevTrain
people.

Net: `facejax/models/inception.py`, `FaceNetInception(net="nns1")`: OUR design
(the paper publishes only 26M params / 220M multiply-adds, no layer table): NN2
at half width without 4b-4d, the 6x6x512 map flattened into a 1280-unit ReLU FC
layer; 25.10M params, 220 M multiply-adds per face (212 M as XLA counts them).

Recipe (FaceNet paper, Schroff et al. 2015, §3.3 and §4): 128-D embedding,
triplet margin 0.2, online semi-hard negatives within identity-balanced P x K
batches, AdaGrad lr 0.05 (constant), 165x165 input. Deviations here:
  * BatchNorm between every conv and its ReLU (`model.batch_norm=True`; the
    paper has none). The paper trained on 100M-200M faces; FaceNet nets trained
    from scratch on LFW alone collapse without it (all embeddings equal, loss
    stuck at the margin; see facejax/models/nn1.py). The `paper` variant turns
    it off.
  * Batches of 45 people x 4 faces (FaceNet: ~1,800 faces, ~40 per person): LFW
    DevTrain people have few images (median 2-3; missing slots are masked).
  * No face alignment: a 150-px centre crop of the 250x250 LFW original resized
    to 177, then a random 165 crop (the centre crop at evaluation).

Variants (`--config=configs/nns1.py:<arg>`):
  (none)  the recipe above, 20,000 steps. Expected runtime on 2 CPU cores:
          measured 7.6 s per 180-face step (load ~2 on the 2 shared cores): ~42
          hours for 20k steps. On one H100-class GPU an ESTIMATE (not measured:
          3 x 220 M MACs x 180 faces = 0.24 TFLOP per step) is ~0.03-0.05
          s/step, bound by JPEG decoding: ~15 min for 20k steps. Expected
          result: far below the paper's 82.4% VAL at 1e-3 FAR (Table 3, on their
          hold-out set after training on 100M+ faces); LFW DevTrain has ~9.5k
          unaligned faces. Watch `embedding_spread` for collapse.
  paper   the same without BatchNorm, as the paper specifies.
  smoke   width-0.125 net at 32x32, the net's total stride, so 5a/5b see a 1x1
          map; 2 steps of 4 people x 2 images from 20 identities, checkpoint,
          then the LFW DevTest evaluation: a pipeline check only; its accuracy
          means nothing.

Command:
  python -m facejax.main --config=configs/nns1.py --workdir=/tmp/nns1
Data: `--config.data.data_dir=/path/holding/lfw` or FACEJAX_DATA_DIR.
"""

import ml_collections

from facejax.config_lib import facenet_inception_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return facenet_inception_config("nns1", arg, image_size=165, resize_size=177)
