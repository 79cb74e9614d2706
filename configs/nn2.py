r"""FaceNet NN2 (Inception, 224x224): semi-hard triplets on LFW DevTrain people.

Net: `facejax/models/inception.py`, `FaceNetInception(net="nn2")`: the paper's
Table 2 row by row; 7.46M params, 1.60 G multiply-adds per 224x224 face (1.54 G
as XLA counts them).

Recipe (FaceNet paper, Schroff et al. 2015, §3.3 and §4): 128-D embedding,
triplet margin 0.2, online semi-hard negatives within identity-balanced P x K
batches, AdaGrad lr 0.05 (constant), 224x224 input. Deviations here:
  * BatchNorm between every conv and its ReLU (`model.batch_norm=True`; the
    paper has none). The paper trained on 100M-200M faces; FaceNet nets trained
    from scratch on LFW alone collapse without it (all embeddings equal, loss
    stuck at the margin; see facejax/models/nn1.py). The `paper` variant turns
    it off.
  * Batches of 45 people x 4 faces (FaceNet: ~1,800 faces, ~40 per person): LFW
    DevTrain people have few images (median 2-3; missing slots are masked).
  * No face alignment: a 150-px centre crop of the 250x250 LFW original (face in
    the middle ~110 px) resized to 240, then a random 224 crop (the centre crop
    at evaluation).

Variants (`--config=configs/nn2.py:<arg>`):
  (none)  the recipe above, 20,000 steps. Expected runtime on 2 CPU cores:
          measured 11.6 s per 60-face step (batch-norm net, load ~2 on the 2
          shared cores), i.e. ~35 s per 180-face step scaled linearly: ~8 days
          for 20k steps. Run it on an accelerator. On one H100-class GPU an
          ESTIMATE (not measured: 3 x 1.6 G MACs x 180 faces = 1.7 TFLOP per
          step, ~0.01-0.02 s at 10-20% of the TF32 peak) is ~0.05 s/step, bound
          by JPEG decoding of 180 faces per step: ~20-30 min for 20k steps.
          Expected result: far below the paper's 89.4% VAL at 1e-3 FAR (Table 3,
          on their hold-out set after training on 100M+ faces); LFW DevTrain has
          ~9.5k unaligned faces. Watch `embedding_spread` for collapse.
  paper   the same without BatchNorm, as the paper specifies.
  smoke   width-0.125 net at 32x32, the net's total stride, so 5a/5b see a 1x1
          map; 2 steps of 4 people x 2 images from 20 identities, checkpoint,
          then the LFW DevTest evaluation: a pipeline check only; its accuracy
          means nothing.

Command:
  python -m facejax.main --config=configs/nn2.py --workdir=/tmp/nn2
Data: `--config.data.data_dir=/path/holding/lfw` or FACEJAX_DATA_DIR.
"""

import ml_collections

from facejax.config_lib import facenet_inception_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return facenet_inception_config("nn2", arg, image_size=224, resize_size=240)
