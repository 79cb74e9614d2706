"""Input pipeline: P x K sampling, determinism across restarts, hosts, preprocessing."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from facejax.data import datasets, input_pipeline, sampling
from facejax.data.sampling import ClassIndex


def _classes(sizes):
  out, start = [], 0
  for s in sizes:
    out.append(np.arange(start, start + s))
    start += s
  return out


def test_pk_sampling_is_balanced_and_masks_short_identities():
  by_class = _classes([2, 5, 9, 3, 4, 6, 2, 8])
  owner = np.concatenate([np.full(len(c), i) for i, c in enumerate(by_class)])
  for step in range(20):
    idx, labels, mask = sampling.sample_pk(ClassIndex.from_lists(by_class), 5, 4, seed=3, step=step)
    assert idx.shape == labels.shape == mask.shape == (20,)
    people = labels.reshape(5, 4)
    assert len(set(people[:, 0])) == 5 and (people == people[:, :1]).all()
    # Every image belongs to the identity of its label, and no image repeats among valid rows.
    np.testing.assert_array_equal(owner[idx], labels)
    assert len(set(idx[mask])) == mask.sum()
    for row, c in zip(mask.reshape(5, 4), people[:, 0]):
      assert row.sum() == min(4, len(by_class[c])) and row[: row.sum()].all()


def test_pk_sampling_depends_only_on_seed_and_step():
  by_class = _classes([4] * 30)
  a = sampling.sample_pk(ClassIndex.from_lists(by_class), 6, 3, seed=1, step=7)
  b = sampling.sample_pk(ClassIndex.from_lists(by_class), 6, 3, seed=1, step=7)
  c = sampling.sample_pk(ClassIndex.from_lists(by_class), 6, 3, seed=1, step=8)
  d = sampling.sample_pk(ClassIndex.from_lists(by_class), 6, 3, seed=2, step=7)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])


@pytest.fixture(scope="module")
def small_source(lfw_root):
  import ml_collections
  data = ml_collections.ConfigDict(dict(
      data_dir=str(lfw_root.parent), train_dir=None, train_people="peopleDevTrain.txt",
      min_images_per_identity=2, max_identities=20, source="folder", tfds_data_dir=None,
      source_crop=140, image_size=32, resize_size=36, standardization="fixed",
      random_flip=True, random_crop=True))
  return data, datasets.build_train_source(data)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_resumed_stream_equals_uninterrupted_stream(small_source):
  data, src = small_source
  prep = datasets.preprocessing(data, train=True)
  sampler = sampling.Sampler(num_identities=4, images_per_identity=3, seed=5)
  full = list(input_pipeline.train_batches(src.table, src.classes, prep, sampler,
                                           start_step=0, num_steps=6))
  resumed = list(input_pipeline.train_batches(src.table, src.classes, prep, sampler,
                                              start_step=3, num_steps=6))
  assert len(full) == 6 and len(resumed) == 3
  for a, b in zip(full[3:], resumed):
    assert a["step"] == b["step"]
    for k in ("image", "label", "mask", "index"):
      np.testing.assert_array_equal(a[k], b[k])
  b = full[0]
  assert b["image"].shape == (12, 32, 32, 3) and b["image"].dtype == np.float32
  assert b["label"].dtype == np.int32 and b["mask"].dtype == bool
  # Fixed standardisation maps [0, 255] to [-0.996, 0.996].
  assert -1.0 <= b["image"].min() and b["image"].max() <= 1.0
  # Different steps see different augmentations/images.
  assert not np.array_equal(full[0]["image"], full[1]["image"])


def test_hosts_slices_assemble_the_global_batch(small_source):
  data, src = small_source
  prep = datasets.preprocessing(data, train=True)
  sampler = sampling.Sampler(num_identities=4, images_per_identity=3, seed=5)
  kw = dict(start_step=0, num_steps=2)
  one = list(input_pipeline.train_batches(src.table, src.classes, prep, sampler, **kw))
  parts = [list(input_pipeline.train_batches(src.table, src.classes, prep, sampler,
                                             process_index=i, process_count=2, **kw))
           for i in range(2)]
  for s in range(2):
    for k in ("image", "label", "mask"):
      np.testing.assert_array_equal(one[s][k], np.concatenate([parts[0][s][k], parts[1][s][k]]))


def _encode(array, fmt="JPEG", mode=None):
  img = Image.fromarray(array)
  if mode:
    img = img.convert(mode)
  buf = io.BytesIO()
  img.save(buf, format=fmt)
  return buf.getvalue()


@pytest.mark.parametrize("mode,fmt", [("L", "JPEG"), ("RGBA", "PNG"), ("RGB", "PNG")])
def test_grayscale_and_rgba_become_rgb(mode, fmt):
  rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
  prep = input_pipeline.Preprocessing(image_size=(16, 16), resize_size=(16, 16))
  out = input_pipeline.decode_and_preprocess(tf.constant(_encode(rgb, fmt, mode)),
                                             tf.zeros([2], tf.int64), prep, train=False)
  assert out.shape == (16, 16, 3)


def test_eval_preprocessing_matches_numpy_reference():
  # Centre crop 20 of 30, resize to 20 (identity), fixed standardisation.
  rgb = np.random.default_rng(1).integers(0, 255, (30, 30, 3), dtype=np.uint8)
  prep = input_pipeline.Preprocessing(image_size=(20, 20), resize_size=(20, 20), source_crop=20)
  out = input_pipeline.decode_and_preprocess(tf.constant(_encode(rgb, "PNG")),
                                             tf.zeros([2], tf.int64), prep, train=False).numpy()
  np.testing.assert_allclose(out, (rgb[5:25, 5:25].astype(np.float32) - 127.5) / 128, atol=1e-4)


def test_prewhiten_matches_numpy():
  x = np.random.default_rng(2).uniform(0, 255, (8, 8, 3)).astype(np.float32)
  out = input_pipeline.standardize(tf.constant(x), "prewhiten").numpy()
  ref = (x - x.mean()) / max(x.std(), 1 / np.sqrt(x.size))
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="config.data.standardization"):
    input_pipeline.Preprocessing(image_size=(8, 8), resize_size=(8, 8), standardization="nope")


def test_corrupt_image_error_names_the_file(tmp_path):
  good = _encode(np.zeros((20, 20, 3), np.uint8))
  paths = []
  for i in range(6):
    p = tmp_path / f"img{i}.jpg"
    p.write_bytes(good if i != 4 else good[:40] + b"garbage")
    paths.append(str(p))
  table = input_pipeline.ImageTable(paths)
  prep = input_pipeline.Preprocessing(image_size=(16, 16), resize_size=(16, 16))
  with pytest.raises(input_pipeline.ImageDecodeError, match="img4.jpg"):
    list(input_pipeline.eval_batches(table, prep, batch_size=4))
  with pytest.raises(input_pipeline.ImageDecodeError, match="img4.jpg"):
    list(input_pipeline.train_batches(table, ClassIndex.from_labels([0, 0, 0, 1, 1, 1]), prep,
                                      sampling.Sampler(num_identities=2,
                                                       images_per_identity=3, seed=0),
                                      start_step=0, num_steps=2))


def test_eval_batches_pad_the_last_batch(tmp_path):
  paths = []
  for i in range(5):
    p = tmp_path / f"{i}.png"
    p.write_bytes(_encode(np.full((10, 10, 3), i * 40, np.uint8), "PNG"))
    paths.append(str(p))
  prep = input_pipeline.Preprocessing(image_size=(10, 10), resize_size=(10, 10))
  got = list(input_pipeline.eval_batches(input_pipeline.ImageTable(paths), prep, 4))
  assert [v for _, v in got] == [4, 1]
  assert got[1][0].shape == (4, 10, 10, 3)
  np.testing.assert_allclose(got[1][0][0], (160 - 127.5) / 128, atol=1e-5)
  assert (got[1][0][1:] == 0).all()


def test_tfds_source_reads_the_same_images_as_the_folder(small_source, tmp_path):
  data, folder_src = small_source
  tfds_data = data.copy_and_resolve_references()
  tfds_data.source = "tfds"
  tfds_data.tfds_data_dir = str(tmp_path / "tfds")
  tfds_src = datasets.build_train_source(tfds_data)
  assert tfds_src.class_names == folder_src.class_names
  for i in (0, 7, len(folder_src.table) - 1):
    a = folder_src.table.read(tf.constant(i)).numpy()
    b = tfds_src.table.read(tf.constant(i)).numpy()
    assert a == b and a == open(folder_src.table.paths[i], "rb").read()


def test_shuffled_sampling_covers_each_epoch_once_and_is_a_function_of_step():
  by_class = [np.array([0, 1, 2]), np.array([3]), np.array([4, 5, 6, 7]), np.array([8, 9])]
  label_of = {i: c for c, m in enumerate(by_class) for i in m}
  batches = [sampling.sample_shuffled(ClassIndex.from_lists(by_class), 4, seed=3, step=s)
             for s in range(5)]  # 20 draws = exactly 2 epochs of 10 images
  drawn = np.concatenate([b[0] for b in batches])
  assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))
  assert not np.array_equal(drawn[:10], drawn[10:])  # each epoch reshuffled
  for idx, lab, msk in batches:
    assert [label_of[i] for i in idx] == list(lab) and msk.all()
  again = sampling.sample_shuffled(ClassIndex.from_lists(by_class), 4, seed=3, step=2)
  np.testing.assert_array_equal(again[0], batches[2][0])  # restart at step 2: same batch


def _smooth_image(size=64):
  import scipy.ndimage as nd  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  return nd.gaussian_filter(rng.uniform(0, 255, (size, size, 3)), (3, 3, 0)).astype(np.float32)


def test_rotation_and_zoom_match_scipy():
  import scipy.ndimage as nd  # pylint: disable=import-outside-toplevel
  image = _smooth_image()
  seed = tf.constant([5, 7], tf.int64)
  rotate = input_pipeline.Preprocessing(image_size=(64, 64), resize_size=(64, 64),
                                        random_flip=False, random_crop=False, random_rotate=30)
  out = input_pipeline.augment(tf.constant(image), seed, rotate).numpy()
  angles = []
  for degrees in np.linspace(-30, 30, 601):  # which angle was drawn: the one scipy agrees on
    ref = nd.rotate(image, degrees, reshape=False, order=1, mode="constant")
    angles.append((np.abs(out - ref)[16:48, 16:48].max(), degrees))
  err, degrees = min(angles)
  assert err < 0.5 and 0 < abs(degrees) <= 30  # counter-clockwise positive, about the centre
  zoom = input_pipeline.Preprocessing(image_size=(64, 64), resize_size=(64, 64),
                                      random_flip=False, random_crop=False,
                                      random_scale=(1.2, 1.5))
  out = input_pipeline.augment(tf.constant(image), seed, zoom).numpy()
  yy, xx = np.mgrid[0:64, 0:64].astype(float)
  fits = []
  for z in np.linspace(1.2, 1.5, 301):  # output(y) = input(c + (y - c) / z), c = 31.5
    ref = np.stack([nd.map_coordinates(image[..., k], [31.5 + (yy - 31.5) / z,
                                                       31.5 + (xx - 31.5) / z], order=1)
                    for k in range(3)], -1)
    fits.append((np.abs(out - ref).max(), z))
  assert min(fits)[0] < 0.5


def test_brightness_jitter_shifts_every_pixel_alike_within_its_range():
  image = _smooth_image() * 0.5 + 60  # room on both sides: no clipping
  prep = input_pipeline.Preprocessing(image_size=(64, 64), resize_size=(64, 64),
                                      random_flip=False, random_crop=False,
                                      color_jitter=(0.1, 0.0, 0.0))
  shifts = []
  for s in range(5):
    out = input_pipeline.augment(tf.constant(image), tf.constant([s, 1], tf.int64), prep).numpy()
    delta = out - image
    assert np.ptp(delta) < 1e-3 and abs(delta.mean()) <= 0.1 * 255
    shifts.append(round(float(delta.mean()), 3))
  assert len(set(shifts)) == 5


def test_augmentations_are_off_by_default_and_resume_exactly(small_source):
  from configs import nn1  # pylint: disable=import-outside-toplevel
  assert not datasets.preprocessing(nn1.get_config().data, train=True).augments
  data, src = small_source
  data = data.copy_and_resolve_references()
  data.update(random_scale=(0.9, 1.1), random_rotate=10.0, color_jitter=(0.2, 0.2, 0.2))
  prep = datasets.preprocessing(data, train=True)
  assert prep.augments
  sampler = sampling.Sampler(num_identities=4, images_per_identity=3, seed=5)
  full = list(input_pipeline.train_batches(src.table, src.classes, prep, sampler,
                                           start_step=0, num_steps=4))
  resumed = list(input_pipeline.train_batches(src.table, src.classes, prep, sampler,
                                              start_step=2, num_steps=4))
  for a, b in zip(full[2:], resumed):
    np.testing.assert_array_equal(a["image"], b["image"])
  plain = list(input_pipeline.train_batches(src.table, src.classes,
                                            datasets.preprocessing(small_source[0], train=True),
                                            sampler, start_step=0, num_steps=1))
  assert not np.array_equal(plain[0]["image"], full[0]["image"])
