"""One image-file policy: `.pgm` and extension-less GIF faces read by the scanner, screening
and the training table, evaluation `--identity_folder` and the tools' folder reader."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from face_folders import PEOPLE, gif_faces, pgm_faces
from facejax.data import image_check, image_files, input_pipeline
from facejax.data.identity_folder import scan_identity_folder
from facejax.evaluation import identity_pairs
from facejax.evaluation.identity_pairs import IdentityFolderOptions


@pytest.fixture(scope="module")
def folders(lfw_root, tmp_path_factory):
  base = tmp_path_factory.mktemp("formats")
  return {"pgm": pgm_faces(lfw_root, base / "pgm"), "gif": gif_faces(lfw_root, base / "gif")}


def test_content_decides_when_the_suffix_does_not(tmp_path, lfw_root):
  src = Image.open(lfw_root / "lfw" / PEOPLE[0] / f"{PEOPLE[0]}_0001.jpg")
  writers = {"a.happy": "GIF", "b": "PNG", "c.data": "JPEG", "d.x": "TIFF", "e.img": "WEBP",
             "f.raw": "PPM", "g.bin": "BMP"}
  for name, fmt in writers.items():
    src.save(tmp_path / name, format=fmt)
  (tmp_path / "notes.txt").write_text("P5 is not enough\n")
  (tmp_path / "BM.txt").write_text("BM looks like a bitmap header\n")
  (tmp_path / "Thumbs.db").write_bytes(b"\0" * 64)
  (tmp_path / ".hidden.jpg").write_bytes(b"\xff\xd8\xff\xe0")
  for name, fmt in writers.items():
    assert image_files.sniff_format(tmp_path / name) == ("PPM" if fmt == "PPM" else fmt), name
    assert image_files.is_image_file(tmp_path / name), name
  for name in ("notes.txt", "BM.txt", "Thumbs.db", ".hidden.jpg"):
    assert not image_files.is_image_file(tmp_path / name), name
  listing = image_files.list_folder(tmp_path)
  assert listing.images == tuple(sorted(writers))
  assert listing.others == ("BM.txt", "Thumbs.db", "notes.txt")
  # An explicit suffix list is taken literally.
  assert not image_files.is_image_file(tmp_path / "a.happy", extensions=("jpg",))
  for ext in (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pbm", ".gif", ".tif", ".tiff",
              ".webp"):
    assert ext in image_files.IMAGE_EXTENSIONS


@pytest.mark.parametrize("fmt", ["pgm", "gif"])
def test_scan_screen_and_training_table_read_them(folders, fmt):
  root = folders[fmt]
  ds = scan_identity_folder(root)
  assert (len(ds), ds.num_classes) == (15, 5) and not ds.non_image_files
  screened, report = image_check.screen_identity_folder(root, num_workers=2)
  assert screened.paths == ds.paths and not report.skipped
  # TensorFlow cannot read PGM at all, nor tell a GIF by an unknown name from anything else:
  # the training table reads what Pillow decodes, re-encoded where needed.
  table = input_pipeline.ImageTable([str(screened.abspath(i)) for i in range(len(screened))],
                                    replacements=image_check.replacements(screened, report))
  for i in range(len(screened)):
    got = tf.io.decode_image(table.read(tf.constant(i, tf.int64)), channels=3,
                             expand_animations=False).numpy()
    want = np.asarray(Image.open(screened.abspath(i)).convert("RGB"))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("fmt", ["pgm", "gif"])
def test_identity_folder_evaluation_reads_them(smoke_config, folders, fmt):
  c = smoke_config
  c.model = {"name": "raw_pixels"}
  result = identity_pairs.evaluate_identity_folder(
      c, folders[fmt], IdentityFolderOptions(num_pairs=20, seed=0, write=False),
      variables={"params": {}}, step=0)
  assert result.num_pairs == 20 and result.num_images <= 15 and not result.skipped
  assert 0.0 <= result.accuracy <= 1.0
