"""Tests for facejax.data.image_check: screening policies on a messy tree built from LFW."""

import functools
import json
import shutil
import struct
import time
import warnings
import zlib

import jax
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageFile

from facejax.data import image_check, input_pipeline
from facejax.data.identity_folder import scan_identity_folder

LFW_PEOPLE = ("Aaron_Peirsol", "Abdullah_Gul", "Adam_Sandler", "Alan_Greenspan")
BIG_SIDE = 10_000


@functools.cache
def _flat_png(side, rgb=(200, 100, 50)) -> bytes:
  """A side x side RGB PNG of one colour, encoded row by row: small on disk and in memory."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
  deflate = zlib.compressobj(1)
  # Filter 0 on the first row, then "Up" (2): every later row is zeros, cheap to compress.
  rows = [deflate.compress(b"\0" + bytes(rgb) * side)]
  up_row = b"\2" + bytes(3 * side)
  rows += [deflate.compress(up_row) for _ in range(side - 1)]
  rows.append(deflate.flush())
  header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB.
  return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(rows))
          + chunk(b"IEND", b""))


def _i16_png(path, source):
  """16-bit grayscale PNG; PIL opens it in mode I;16."""
  gray = np.asarray(source.convert("L")).astype(np.uint16) * 257
  path.write_bytes(tf.io.encode_png(gray[..., None]).numpy())


# Valid images in another mode: (file name, writer given an RGB PIL image and the path).
NON_RGB = {
    "gray.jpg": lambda im, p: im.convert("L").save(p),
    "cmyk.jpg": lambda im, p: im.convert("CMYK").save(p),
    "gray.png": lambda im, p: im.convert("L").save(p),
    "gray_alpha.png": lambda im, p: im.convert("LA").save(p),
    "rgba.png": lambda im, p: im.convert("RGBA").save(p),
    "palette.png": lambda im, p: im.convert("P", palette=Image.Palette.ADAPTIVE).save(p),
    "gray16.png": lambda im, p: _i16_png(p, im),
}
# Bad files: (file name, status, writer given the bytes of a real JPEG and the path).
BAD = {
    "truncated.jpg": ("corrupt", lambda jpg, p: p.write_bytes(jpg[:len(jpg) // 2])),
    "renamed_text.jpg": ("corrupt", lambda jpg, p: p.write_text("not an image\n")),
    "zero.jpg": ("empty", lambda jpg, p: p.write_bytes(b"")),
    "huge.png": ("too_large", lambda jpg, p: p.write_bytes(_flat_png(BIG_SIDE))),
    "notes.txt": ("not_image", lambda jpg, p: p.write_text("who is who\n")),
}


@pytest.fixture(scope="module")
def lfw_images(lfw_root):
  """Paths of the first 3 images of each of LFW_PEOPLE."""
  return {name: sorted((lfw_root / "lfw" / name).glob("*.jpg"))[:3] for name in LFW_PEOPLE}


def _clean_tree(root, lfw_images):
  for name, files in lfw_images.items():
    (root / name).mkdir(parents=True)
    for f in files:
      shutil.copy(f, root / name / f.name)


@pytest.fixture(scope="module")
def messy(tmp_path_factory, lfw_images):
  """Clean LFW copies; Aaron_Peirsol also gets every bad file, Abdullah_Gul every non-RGB one,
  Adam_Sandler keeps 1 good image plus a corrupt one (too small once it is dropped)."""
  root = tmp_path_factory.mktemp("messy")
  _clean_tree(root, lfw_images)
  jpg = lfw_images["Aaron_Peirsol"][0].read_bytes()
  for name, (_, write) in BAD.items():
    write(jpg, root / "Aaron_Peirsol" / name)
  source = Image.open(lfw_images["Abdullah_Gul"][0]).convert("RGB")
  for name, write in NON_RGB.items():
    write(source, root / "Abdullah_Gul" / name)
  for f in sorted((root / "Adam_Sandler").iterdir())[1:]:
    f.unlink()
  (root / "Adam_Sandler" / "broken.jpg").write_bytes(jpg[:200])
  (root / "Aaron_Peirsol" / ".DS_Store").write_bytes(b"\0" * 10)  # Hidden: ignored silently.
  return root


def _decode(encoded):
  return tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()


def _screen(root, **kw):
  kw = dict(min_images_per_identity=2, bad_images="skip", non_rgb="convert",
            small_identities="skip", num_workers=2) | kw
  return image_check.screen_identity_folder(root, **kw)


def test_skip_drops_exactly_the_bad_files(messy):
  ds, report = _screen(messy)
  assert ds.class_names == ("Aaron_Peirsol", "Abdullah_Gul", "Alan_Greenspan")
  assert report.dropped_identities == {"Adam_Sandler": 1}
  expected = {s: sorted(f"Aaron_Peirsol/{n}" for n, (st, _) in BAD.items() if st == s)
              for s in ("corrupt", "empty", "too_large", "not_image")}
  expected["corrupt"].append("Adam_Sandler/broken.jpg")
  assert {s: sorted(report.files[s]) for s in expected} == expected
  assert sorted(report.skipped) == sorted(sum(expected.values(), []))
  assert report.counts == {"ok": 10, "non_rgb": 7, "corrupt": 3, "empty": 1, "too_large": 1,
                           "not_image": 1}
  assert report.converted == {"L": 2, "CMYK": 1, "LA": 1, "RGBA": 1, "P": 1, "I;16": 1}
  assert report.reencoded == ["Abdullah_Gul/gray16.png"]
  assert ds.non_image_files == ("Aaron_Peirsol/notes.txt",)
  # Same layout as a scan of the surviving files: sorted paths, labels 0..C-1.
  assert list(ds.paths) == sorted(ds.paths) and len(ds) == 3 + 10 + 3
  assert ds.labels.tolist() == [0] * 3 + [1] * 10 + [2] * 3
  assert not set(report.skipped) & set(ds.paths)
  assert json.loads(json.dumps(report.to_dict()))["dropped_identities"] == {"Adam_Sandler": 1}
  assert "dropped 1 identities" in report.summary()


def test_max_identities_keeps_the_first_survivors(messy):
  two, report = _screen(messy, max_identities=2)
  assert two.class_names == ("Aaron_Peirsol", "Abdullah_Gul")
  # Only their files were opened (Aaron_Peirsol: 3 + 5 bad, Abdullah_Gul: 3 + 7 non-RGB).
  assert sum(report.counts.values()) == 18 and not report.dropped_identities
  # Adam_Sandler turns out too small: a second round reaches Alan_Greenspan.
  three, report = _screen(messy, max_identities=3)
  assert three.class_names == ("Aaron_Peirsol", "Abdullah_Gul", "Alan_Greenspan")
  assert report.dropped_identities == {"Adam_Sandler": 1}
  assert three.paths == _screen(messy)[0].paths


def test_non_rgb_skip(messy):
  ds, report = _screen(messy, non_rgb="skip")
  assert sorted(report.files["non_rgb"]) == sorted(f"Abdullah_Gul/{n}" for n in NON_RGB)
  assert set(report.files["non_rgb"]) <= set(report.skipped)
  assert report.converted == {} and report.reencoded == []
  assert ds.class_names == ("Aaron_Peirsol", "Abdullah_Gul", "Alan_Greenspan")
  assert len(ds) == 9


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_fails_naming_it(tmp_path, lfw_images, name):
  _clean_tree(tmp_path, lfw_images)
  status, write = BAD[name]
  write(lfw_images["Aaron_Peirsol"][0].read_bytes(), tmp_path / "Alan_Greenspan" / name)
  with pytest.raises(image_check.BadImageError,
                     match=rf"{status} file .*Alan_Greenspan/{name}.*bad_images='skip'"):
    _screen(tmp_path, bad_images="fail")


def test_non_rgb_fail_names_file_and_key(tmp_path, lfw_images):
  _clean_tree(tmp_path, lfw_images)
  source = Image.open(lfw_images["Adam_Sandler"][0])
  NON_RGB["cmyk.jpg"](source, tmp_path / "Adam_Sandler" / "c.jpg")
  with pytest.raises(image_check.BadImageError,
                     match=r"Adam_Sandler/c.jpg.*CMYK.*config.data.non_rgb"):
    _screen(tmp_path, non_rgb="fail")


def test_small_identity_fail_names_folder(messy):
  with pytest.raises(image_check.SmallIdentityError,
                     match=r"Adam_Sandler has 1 usable images.*config.data.small_identities"):
    _screen(messy, small_identities="fail")


def test_bad_policy_value():
  with pytest.raises(ValueError, match=r"config.data.bad_images='ignore'"):
    image_check.screen_identity_folder(".", bad_images="ignore")


def test_converted_images_decode_like_pil(messy):
  ds, report = _screen(messy)
  table = input_pipeline.ImageTable([str(ds.abspath(i)) for i in range(len(ds))],
                                    replacements=image_check.replacements(ds, report))
  assert [ds.paths[i] for i in table.replacements] == ["Abdullah_Gul/gray16.png"]
  for name in NON_RGB:
    index = ds.paths.index(f"Abdullah_Gul/{name}")
    expected = np.asarray(Image.open(ds.abspath(index)).convert("RGB")).astype(int)
    encoded = table.read(tf.constant(index, tf.int64))
    got = _decode(encoded).astype(int)
    if name.endswith(".png"):
      np.testing.assert_array_equal(got, expected, err_msg=name)
    else:
      # TensorFlow's default IDCT is faster and less exact than libjpeg's (PIL's): on LFW faces
      # it differs by up to 3 levels from PIL for gray/CMYK JPEGs, and 8 for the originals.
      assert np.abs(got - expected).max() <= 3, name
      # With PIL's IDCT, TensorFlow's colour conversion gives exactly PIL's pixels.
      exact = tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE").numpy()
      np.testing.assert_array_equal(exact, expected, err_msg=name)


def test_replacements_in_a_tf_data_graph(messy):
  ds, report = _screen(messy)
  table = input_pipeline.ImageTable([str(ds.abspath(i)) for i in range(len(ds))],
                                    replacements=image_check.replacements(ds, report))
  shapes = tf.data.Dataset.range(len(ds)).map(
      lambda i: tf.shape(tf.io.decode_image(table.read(i), channels=3, expand_animations=False)))
  assert [tuple(s) for s in shapes.as_numpy_iterator()] == [(250, 250, 3)] * len(ds)
  with pytest.raises(ValueError, match="outside"):
    input_pipeline.ImageTable(["a.jpg"], replacements={1: b""})


def test_too_large_is_decided_from_the_header(tmp_path, monkeypatch):
  path = tmp_path / "huge.png"
  path.write_bytes(_flat_png(BIG_SIDE))
  assert path.stat().st_size < 2_000_000  # 300 MB of pixels.
  monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
  start = time.perf_counter()
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # PIL's decompression-bomb warning must not fire.
    status = image_check.check_image(path, max_pixels=image_check.DEFAULT_MAX_IMAGE_PIXELS)
  assert time.perf_counter() - start < 1.0
  assert (status.status, status.mode) == ("too_large", "RGB")
  assert "10000x10000" in status.detail
  # Past 2 * Image.MAX_IMAGE_PIXELS PIL refuses to open it: still too_large, not corrupt.
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BIG_SIDE ** 2 // 3)
  assert image_check.check_image(path, max_pixels=BIG_SIDE ** 2).status == "too_large"


def test_reencode_exactly_where_tensorflow_differs(tmp_path, lfw_images):
  src = lfw_images["Alan_Greenspan"][0]
  im = Image.open(src)
  writers = {"rgb.bmp": lambda p: im.save(p), "gray.bmp": lambda p: im.convert("L").save(p),
             "palette.bmp": lambda p: im.convert("P").save(p),
             "tiff.jpg": lambda p: im.save(p, "TIFF"), "gray16.png": lambda p: _i16_png(p, im)}
  for name, write in writers.items():
    write(tmp_path / name)
  got = image_check.check_images([src] + [tmp_path / n for n in writers], max_pixels=10**6,
                                 num_workers=2)
  assert [(s.status, s.mode, s.reencode) for s in got] == [
      ("ok", "RGB", False), ("ok", "RGB", False), ("non_rgb", "L", False),
      ("non_rgb", "P", True), ("ok", "RGB", True), ("non_rgb", "I;16", True)]
  assert got[0].path == str(src)
  for s in got[1:]:
    expected = np.asarray(Image.open(s.path).convert("RGB"))
    if s.reencode:
      assert np.array_equal(_decode(image_check.rgb_png_bytes(s.path)), expected), s.path
      try:
        assert not np.array_equal(_decode(tf.io.read_file(s.path)), expected), s.path
      except tf.errors.InvalidArgumentError:
        pass  # TensorFlow cannot decode it at all.
    else:
      np.testing.assert_array_equal(_decode(tf.io.read_file(s.path)), expected, s.path)


def test_max_identities_on_real_lfw_matches_scan(lfw_root):
  start = time.perf_counter()
  ds, report = image_check.screen_identity_folder(
      lfw_root / "lfw", include=None, min_images_per_identity=2, max_identities=20,
      num_workers=2)
  elapsed = time.perf_counter() - start
  expected = scan_identity_folder(lfw_root / "lfw", min_images_per_identity=2, max_identities=20)
  assert ds.paths == expected.paths and ds.class_names == expected.class_names
  np.testing.assert_array_equal(ds.labels, expected.labels)
  assert report.counts["ok"] == sum(report.counts.values()) == len(expected)  # No more opened.
  assert report.skipped == []
  assert elapsed < 3.0, f"screening took {elapsed:.2f}s"


def _train_on(smoke_config, root, **data):
  from facejax import train
  c = smoke_config.copy_and_resolve_references()
  c.data.update(train_dir=str(root), train_people=None, max_identities=None, **data)
  c.num_identities, c.images_per_identity = 3, 2
  c.batch_size = 6
  c.evals = {}
  return train, c


def test_training_on_a_messy_tree_skips_and_reports(smoke_config, messy, tmp_path):
  # End to end: the trainer screens first, trains on what survives (the
  # converted and re-encoded images included) and writes the report.
  train, c = _train_on(smoke_config, messy, bad_images="skip", non_rgb="convert")
  state = train.train_and_evaluate(c, str(tmp_path))
  assert int(state.step) == c.num_train_steps
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))
  report = json.loads((tmp_path / "data_report.json").read_text())
  assert sorted(report["skipped"]) == sorted(f"Aaron_Peirsol/{n}" for n in BAD) + [
      "Adam_Sandler/broken.jpg"]
  assert report["dropped_identities"] == {"Adam_Sandler": 1}
  assert sum(report["converted"].values()) == len(NON_RGB)


@pytest.mark.parametrize("key,value,named", [
    ("bad_images", "fail", "Aaron_Peirsol/huge.png"),
    ("non_rgb", "fail", "Abdullah_Gul/"),
    ("small_identities", "fail", "Adam_Sandler"),
])
def test_training_with_a_fail_policy_stops_before_the_first_step(smoke_config, messy, tmp_path,
                                                                key, value, named):
  train, c = _train_on(smoke_config, messy, **{key: value})
  with pytest.raises(ValueError, match=f"(?s){named}.*config.data.{key}"):
    train.train_and_evaluate(c, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())
