r"""IResNet-50 + ArcFace on MS1MV3: arcface_torch's `ms1mv3_r50` recipe.

  python -m facejax.main --config=configs/ms1mv3_r50_arcface.py \
      --config.data.train_dir=/data/ms1m-retinaface-t1 --workdir=workdirs/ms1mv3_r50

As arcface_torch (`configs/ms1mv3_r50.py` over `configs/base.py`; SCALE.md §6):
IResNet-50, 512-D, ArcFace margin (1, 0.5, 0) with s = 64 on all 93,431 centers
(Partial FC r = 1.0), SGD lr 0.1 momentum 0.9 weight decay 5e-4, 128 per device
x 8 = 1,024 per step, 20 epochs of 5,179,510 images = 5,058 steps per epoch,
101,160 steps, polynomial decay to 0 without warm-up. bf16 for the net (arcface_torch:
fp16 with loss scaling); the head in float32.

Expected runtime (ESTIMATE from a measured step, not a measured run): arcface_torch
logs ~5,500 samples/s for this recipe on 8 GPUs (SCALE.md §7), i.e. 101,160 x 1,024 /
5,500 = 5.2 h; facejax's IResNet-50 train step has not been timed on an accelerator
here (benchmarks/README.md: CPU only). On this 2-core CPU a batch-32 step takes
about 18 s (nets_bench.py), i.e. ~18 years: not a CPU job.
Published result to reproduce: IJB-C TAR@FAR=1e-4 96.46 (arcface_torch model zoo,
ms1mv3_r50); LFW 99.8x, CFP-FP ~98.9, AgeDB-30 ~98.2 on the .bin sets evaluated here.

Variants (`--config=configs/ms1mv3_r50_arcface.py:<arg>`):
  (none)  the recipe above.
  smoke   configs/insightface.py's pipeline check (a small IResNet, 2 steps of 8) on the
          .rec given by --config.data.train_dir (CI: a synthetic one).
"""

from configs import insightface


def get_config(arg=None):
  return insightface.recipe(arg, "configs/ms1mv3_r50_arcface.py", model="iresnet50",
                            loss=insightface.ARCFACE, lr=0.1, weight_decay=5e-4,
                            num_images=5_179_510, epochs=20)
