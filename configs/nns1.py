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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict(dict(
      name="nns1", embedding_dim=128, width=1.0, batch_norm=True, dtype="float32"))

  c.data = ml_collections.ConfigDict(dict(
      data_dir=ml_collections.FieldReference(None, field_type=str),  # else FACEJAX_DATA_DIR
      train_dir=ml_collections.FieldReference(None, field_type=str),  # default: <lfw root>/lfw
      train_people="peopleDevTrain.txt",
      min_images_per_identity=2,
      max_identities=ml_collections.FieldReference(None, field_type=int),
      source="folder",  # or "tfds"
      tfds_data_dir=ml_collections.FieldReference(None, field_type=str),
      source_crop=150,
      image_size=165,
      resize_size=177,
      standardization="fixed",
      random_flip=True,
      random_crop=True,
  ))

  c.num_identities = 45
  c.images_per_identity = 4
  c.batch_size = c.num_identities * c.images_per_identity

  c.loss = ml_collections.ConfigDict(dict(name="semi_hard", margin=0.2))
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adagrad", learning_rate=0.05, schedule="constant", warmup_steps=0,
      initial_accumulator_value=0.1, eps=1e-7, weight_decay=0.0, grad_clip_norm=0.0,
      momentum=0.9, b1=0.9, b2=0.999, boundaries=(), decay_factor=0.1, final_lr_fraction=0.0))
  c.device_prefetch = 2  # batches kept on device ahead of the step
  c.num_train_steps = 20_000
  c.log_every_steps = 50

  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, max_to_keep=3, async_save=True))
  c.eval = ml_collections.ConfigDict(dict(
      every_steps=2000, during_training=("dev_test",), at_end=("dev_test", "view2"),
      batch_size=128, distance="euclidean", flip="none", subtract_mean=False, far_target=1e-3))

  if arg == "paper":
    c.model.batch_norm = False
  elif arg == "smoke":
    c.model.update(width=0.125, embedding_dim=32)
    c.data.update(image_size=32, resize_size=36)
    c.data.max_identities = 20
    c.num_identities, c.images_per_identity = 4, 2
    c.num_train_steps = 2
    c.log_every_steps = 1
    c.checkpoint.every_steps = 2
    c.eval.update(every_steps=0, at_end=("dev_test",), batch_size=64)
  elif arg:
    raise ValueError(f"configs/nns1.py: unknown variant {arg!r}; use '', 'paper' or 'smoke'")
  c.batch_size = c.num_identities * c.images_per_identity
  return c
