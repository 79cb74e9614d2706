r"""IResNet-18 at 112x112 with ArcFace on LFW DevTrain people: the modern recipe at CPU scale.

  python -m facejax.data.align --input_dir=$FACEJAX_DATA_DIR/lfw/lfw \
      --output_dir=workdirs/lfw_arcface_112 --mode=similarity --image_size=112 --template=arcface
  python -m facejax.main --config=configs/lfw_iresnet18_arcface.py \
      --config.data.train_dir=workdirs/lfw_arcface_112 \
      --config.data.lfw_image_dir=workdirs/lfw_arcface_112 --workdir=workdirs/lfw_r18_arcface

arcface_torch's recipe (configs/base.py; SCALE.md §6) scaled to one CPU:
  * net: IResNet-18 (24.0 M params, 2.61 G multiply-adds at 112x112), 512-D;
  * faces aligned by the 5-point similarity transform onto ArcFace's 112x112
    template (facejax.data.align --template=arcface), (x - 127.5) / 128;
  * loss: ArcFace, s = 64, margin (1, 0.5, 0), on all centers (Partial FC with
    r = 1.0: the full margin softmax);
  * SGD momentum 0.9, weight decay 5e-4 on everything, linear warm-up then
    polynomial (power 1) decay to 0 (`PolynomialLRWarmup`);
  * shuffled batches, random flip only.
Scaled here: batch 32 (arcface_torch: 128 per GPU x 8) with lr 0.02
(arcface_torch's one-GPU recipe uses 0.02 at batch 128; a smaller batch
tolerates no more), 700 steps with 70 of warm-up: 22,400 images, about 3.4
passes over the 6,671 DevTrain images of people with >= 2 faces (1,184
identities): one hour of training on this 2-core CPU (measured 5.1 s a step,
6.3 images/s), plus about 3 minutes for each View 1 evaluation.

Evaluation: LFW View 1 by its protocol (threshold from the DevTrain pairs,
one accuracy on DevTest: people not trained on) every 200 steps and at the
end. README "Results" compares it with NN1 cpu (triplets) and NN4.small2
(center loss) at their training budgets.

Measured 2026-12-03 (README "Results"): View 1 0.798 at step 200 (17.5 min of
training), 0.834 at 400, 0.855 at 600 and 0.866 at the end (59 min; AUC
0.928); NN1 cpu reaches 0.822 after 26 minutes.

Variants (`--config=configs/lfw_iresnet18_arcface.py:<arg>`):
  (none)  the run above.
  smoke   IResNet with one block per stage at width 1/4 on 32x32 crops of
          the LFW originals, 2 steps of 8 images from 20 identities,
          checkpoint, then the LFW DevTest evaluation: a pipeline check only.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_variant(arg, "configs/lfw_iresnet18_arcface.py", ("smoke",))
  c = common.base(
      model=dict(name="iresnet18", embedding_dim=512, dtype="float32"),
      optimizer=common.optimizer("sgd", 0.02, momentum=0.9, weight_decay=5e-4,
                                 schedule=dict(name="polynomial", warmup_steps=70, power=1.0)),
      loss=dict(name="partial_fc", scale=64.0, m1=1.0, m2=0.5, m3=0.0, sample_rate=1.0),
      image_size=112)
  c.data.source_crop = 0  # aligned crops: no centre crop
  c.data.sampling = "shuffle"
  c.batch_size = 32
  c.num_train_steps = 700
  c.checkpoint.every_steps = 50
  c.log_every_steps = 10
  c.evals.lfw_view1.every_steps = 200
  c.evals.lfw_view2.at_end = False  # View 2 holds the DevTrain people: not a held-out test
  if variant == "smoke":
    c.model = ml_collections.ConfigDict(dict(name="iresnet18", blocks=(1, 1, 1, 1), width=0.25,
                                             embedding_dim=64, dtype="float32"))
    # LFW originals (CI has no aligned tree): the 140-px centre, resized to 32x32.
    c.data.update(image_size=32, resize_size=32, source_crop=140, max_identities=20)
    c.batch_size = 8
    c.num_train_steps = 2
    c.log_every_steps = 1
    c.checkpoint.every_steps = 2
    c.eval.batch_size = 256
    common.smoke_evals(c)
  return c
