"""The shared base of the recipes trained on insightface's RecordIO folders (arcface_torch's
`configs/base.py`; SCALE.md §6): experiments are a few lines over `recipe()`.

  c = insightface.recipe(arg, "configs/ms1mv3_r50_arcface.py", model="iresnet50",
                         loss=ARCFACE, lr=0.1, weight_decay=5e-4, num_images=5_179_510,
                         epochs=20)

Data: `--config.data.train_dir=DIR`, a folder holding train.rec, train.idx and property
as insightface distributes it (or `python -m facejax.data.prepare` shards, with
`--config.data.source=array_record`). Every identity of the record trains
(`train_people=None`, no minimum of images). Validation: insightface's .bin sets found
in that folder (lfw, cfp_fp, agedb_30) every 2000 steps, as arcface_torch's
`verification_val`, by its 10-fold protocol.

Optimizer: one SGD (momentum 0.9) over the net and the head, weight decay on every
parameter (arcface_torch's), a linear warm-up then a polynomial (power 1) decay to 0;
steps = floor(images / global batch) x epochs, as arcface_torch's `PolynomialLRWarmup`.

Variant `smoke` (every recipe): the same loss and optimizer on a small IResNet
(one block per stage, width 1/4, 64-D) at 112x112, 2 steps of 8 images on the
`.rec` given by `--config.data.train_dir` (CI writes a synthetic one with
`facejax.data.synthetic_rec`), then the LFW DevTest evaluation: a pipeline check only.
"""

import ml_collections

from configs import common

ARCFACE = dict(name="partial_fc", scale=64.0, m1=1.0, m2=0.5, m3=0.0)
COSFACE = dict(name="partial_fc", scale=64.0, m1=1.0, m2=0.0, m3=0.4)
VALIDATION_SETS = ("lfw", "cfp_fp", "agedb_30")


def steps_for_epochs(num_images: int, global_batch: int, epochs: float) -> int:
  """arcface_torch's T = floor(N / (b W)) x epochs."""
  return int(num_images // global_batch * epochs)


def recipe(arg: str | None, where: str, *, model: str, loss: dict, lr: float,
           weight_decay: float, num_images: int, epochs: float, batch_size: int = 1024,
           warmup_epochs: float = 0.0, sample_rate: float = 1.0,
           embedding_dim: int = 512) -> ml_collections.ConfigDict:
  """A locked config for `model` trained with `loss` on an insightface folder."""
  variant = common.parse_variant(arg, where, ("smoke",))
  steps = steps_for_epochs(num_images, batch_size, epochs)
  warmup = steps_for_epochs(num_images, batch_size, warmup_epochs)
  c = common.base(
      model=dict(name=model, embedding_dim=embedding_dim, dtype="bfloat16"),
      optimizer=common.optimizer("sgd", lr, momentum=0.9, weight_decay=weight_decay,
                                 schedule=dict(name="polynomial", warmup_steps=warmup,
                                               power=1.0)),
      loss=dict(loss, sample_rate=sample_rate), image_size=112)
  c.data.update(source="rec", train_people=None, min_images_per_identity=1, source_crop=0,
                sampling="shuffle")
  c.batch_size = batch_size  # global: arcface_torch's 128 per GPU x 8
  c.num_train_steps = steps
  c.log_every_steps = 50
  c.checkpoint.every_steps = 2000
  c.evals = ml_collections.ConfigDict({
      name: dict(type="verification_bin", path=f"{name}.bin", every_steps=2000, at_end=True)
      for name in VALIDATION_SETS})
  if variant == "smoke":
    c.model = ml_collections.ConfigDict(dict(name="iresnet18", blocks=(1, 1, 1, 1), width=0.25,
                                             embedding_dim=64, dtype="float32"))
    c.batch_size = 8
    c.num_train_steps = 2
    c.log_every_steps = 1
    c.checkpoint.every_steps = 2
    c.optimizer.schedule.warmup_steps = 1
    c.eval.batch_size = 256
    common.smoke_evals(c)
  return c
