"""facejax experiment configs: `configs/common.py` holds the base, each file one experiment.

Load one from the command line with `--config=configs/<name>.py[:variant]`, or
from Python with `configs.get_config("nn1:smoke")` / `import configs.nn1`.
"""

import importlib

import ml_collections


def get_config(spec: str) -> ml_collections.ConfigDict:
  """`"nn1:smoke"` -> `configs/nn1.py`'s `get_config("smoke")`, as `--config=configs/nn1.py:smoke`."""
  name, _, arg = spec.partition(":")
  return importlib.import_module(f"configs.{name}").get_config(arg or None)


# Every experiment file of this package (common.py is the base and insightface.py the
# base of the RecordIO recipes, not experiments).
EXPERIMENTS = ("casia_irv1_softmax", "glint360k_r100_pfc", "inception_resnet_v1",
               "inception_resnet_v1_finetune", "lfw_iresnet18_arcface", "ms1mv3_r50_arcface",
               "nn1", "nn2", "nn3", "nn4", "nn4_small2", "nn4_small2_center", "nns1", "nns2",
               "sphereface20")
