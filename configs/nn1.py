r"""FaceNet NN1 with online semi-hard triplet mining on LFW DevTrain people.

  python -m facejax.main --config=configs/nn1.py:smoke --workdir=/tmp/nn1_smoke

Paper defaults (Schroff et al. 2015): 220x220 input, 128-D embedding, margin
0.2, AdaGrad lr 0.05, identity-balanced P x K batches. Trains on the people of
`peopleDevTrain.txt` (4,038 people; the 1,184 with >= 2 images are usable for
triplets) and evaluates on View 1 DevTest pairs (disjoint people) during
training and on View 2 (10-fold) at the end.

Variants (`--config=configs/nn1.py:<arg>`):
  (none)  paper NN1 (140M params, 1.6 G multiply-adds/image; a training
          step costs 9.15 GFLOP/image by XLA's count). Runtime: measured
          2.5 images/s on 2 CPU cores, i.e. ~72 s/step at batch 180 and
          ~17 days for 20k steps: run it on an accelerator. On one H100-class
          GPU at an assumed 30% of bf16 peak this is an estimate of ~0.03
          s/step (not measured here). Expected result when trained on LFW
          alone (6,671 images): far below the paper's 99.63% (100M+ images).
  cpu     reduced NN1 for a real CPU run (96x96 input, conv width 0.5,
          maxout 1024, BatchNorm, Adam 1e-3 cosine, 32x4 batches, 1,500
          steps): the run reported in the README. ~35-60 min on 2 CPU cores
          (1.2-1.5 s/step alone). Measured (re-run 2026-12-02): View 1 by
          the protocol (threshold from DevTrain, applied to DevTest) 0.822,
          AUC 0.911 (raw pixels 0.590); DevTest in 10 folds of its own
          0.839; View 2 0.890 (View 2 includes the training people).
  harmonic  FaceNet's harmonic embeddings (appendix 7): a narrower v2 (cpu
          with conv width 0.375, maxout 768) trained with the harmonic triplet
          loss (`facejax.losses.harmonic`) against a trained `cpu` v1, so that
          v1's and v2's embeddings compare. Give v1's workdir:
          --config.loss.v1_workdir=<v1>. Score it with
          `python -m facejax.evaluation.harmonic` (README "Harmonic embeddings").
  harmonic_control  the same v2 with the plain semi-hard triplet loss: the
          control, whose cross-version accuracy should fall to chance.
  smoke   tiny net, 32x32, 12 steps, checkpoint every 4: train -> checkpoint
          -> resume -> eval (DevTest in 10 folds of its own at step 8, that and
          View 2 at the end) on
          the real LFW copy in about 70 s on 2 CPU cores; accuracy ~0.57.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_variant(arg, "configs/nn1.py",
                                 ("cpu", "harmonic", "harmonic_control", "smoke"))
  c = common.base(
      model=dict(name="nn1", embedding_dim=128, maxout_features=4096, conv_width=1.0,
                 batch_norm=False, dtype="float32"),
      optimizer=common.optimizer("adagrad", 0.05, initial_accumulator_value=0.1, eps=1e-7))
  c.data.update(image_size=220, resize_size=240, random_crop=True)
  if variant in ("cpu", "harmonic", "harmonic_control"):
    # BatchNorm: without it this small NN1 collapses (all embeddings equal,
    # loss stuck at the margin) within 200 steps; see facejax/models/nn1.py.
    c.model.update(conv_width=0.5, maxout_features=1024, batch_norm=True)
    c.data.update(image_size=96, resize_size=104, source_crop=140)
    c.num_identities, c.images_per_identity = 32, 4
    # eps 1e-7 (not Adam's usual 1e-8): the setting of the run measured above.
    c.optimizer = common.optimizer("adam", 1e-3, eps=1e-7,
                                   schedule=dict(name="cosine", warmup_steps=100,
                                                 final_lr_fraction=0.0))
    c.num_train_steps = 1500
    c.checkpoint.every_steps = 250
    c.evals.lfw_view1.every_steps = 500
  if variant in ("harmonic", "harmonic_control"):
    # v2: a smaller net than v1 (FaceNet 7.2: a mobile net compatible with a server net).
    c.model.update(conv_width=0.375, maxout_features=768)
  if variant == "harmonic":
    # v1_workdir has no default: a path is the user's, given on the command line.
    c.loss = ml_collections.ConfigDict(dict(name="harmonic", v1_workdir="", mining="semi_hard",
                                            margin=0.2))
  elif variant == "smoke":
    c.model.update(conv_width=0.125, maxout_features=64, embedding_dim=32)
    c.data.update(image_size=32, resize_size=36, source_crop=140, max_identities=60)
    c.num_identities, c.images_per_identity = 8, 3
    c.num_train_steps = 12
    c.log_every_steps = 2
    c.checkpoint.every_steps = 4
    c.eval.batch_size = 256
    common.smoke_evals(c)
    c.evals.lfw_dev_test.every_steps = 8
    with c.unlocked():
      c.evals.lfw_view2 = dict(type="lfw", protocol="view2", every_steps=0, at_end=True)
  return c
