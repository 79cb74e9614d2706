"""What every face tool needs: a model from a workdir, image lists, distances, a threshold.

* `load_model(config, workdir, step)` -> `FaceModel`, whose `embed_paths(paths)`
  embeds any image files in chunks (`embed_files`: batched, jitted, bad files
  skipped with a reason) under a progress bar.
* `collect_images(source)` turns a file, a folder (recursive, or an identity
  folder whose first-level subfolder names are the labels) or a list file
  into an `ImageList`, with errors that name the path.
* `distance_matrix` is `lfw_eval.pair_distances` for all pairs: squared L2 of
  renormalised embeddings ("euclidean", in [0, 4]) or 1 - cos ("cosine").
* `calibration(workdir, step)` reads the best-accuracy threshold, and the
  distance and flip it was computed with, from `<workdir>/eval/lfw_*.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Iterable, Sequence

import ml_collections
import numpy as np

from facejax import checkpointing
from facejax.data import align
from facejax.data.lfw import read_people
from facejax.evaluation import lfw_eval
from facejax.evaluation.embed_files import FileEmbeddings, embed_files

# What Pillow reads; anything else in a folder is not an image and is left alone.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm")
LIST_EXTENSIONS = (".txt", ".lst", ".csv", ".tsv")
LABEL_MODES = ("auto", "subfolder", "none")
UNKNOWN = ""  # the label of an image whose identity is not known


# --- image lists --------------------------------------------------------------------------------

@dataclasses.dataclass
class ImageList:
  """paths [N] and their identity labels [N] ("" when unknown), in a fixed order.

  `empty_identities`: first-level subfolders of an identity folder with no image.
  """
  paths: list[str]
  labels: list[str]
  source: str
  empty_identities: list[str] = dataclasses.field(default_factory=list)

  def __len__(self) -> int:
    return len(self.paths)

  @property
  def labelled(self) -> bool:
    return bool(self.labels) and all(label != UNKNOWN for label in self.labels)

  def __add__(self, other: "ImageList") -> "ImageList":
    return ImageList(self.paths + other.paths, self.labels + other.labels,
                     f"{self.source}, {other.source}",
                     self.empty_identities + other.empty_identities)


def _is_image(name: str) -> bool:
  return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _read_list_file(path: str) -> ImageList:
  """Lines "path" or "path<TAB>label" (or "path,label"); relative paths are relative to the file."""
  base = os.path.dirname(os.path.abspath(path))
  paths, labels = [], []
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if not line or line.startswith("#"):
        continue
      sep = "\t" if "\t" in line else ("," if "," in line else None)
      name, label = (line.split(sep, 1) + [UNKNOWN])[:2] if sep else (line, UNKNOWN)
      name = name.strip()
      paths.append(name if os.path.isabs(name) else os.path.join(base, name))
      labels.append(label.strip())
  if not paths:
    raise ValueError(f"list file {path} names no image")
  return ImageList(paths, labels, path)


def _read_folder(root: str, labels: str, min_images: int, max_identities: int | None,
                 people: frozenset[str] | None) -> ImageList:
  found = []  # (relative path parts, absolute path)
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    rel = os.path.relpath(dirpath, root)
    parts = () if rel == "." else tuple(rel.split(os.sep))
    found += [(parts + (f,), os.path.join(dirpath, f)) for f in filenames
              if _is_image(f) and not f.startswith(".")]
  if not found:
    raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under folder {root}")
  at_top = any(len(parts) == 1 for parts, _ in found)
  if labels == "subfolder" and at_top:
    top = sorted(parts[0] for parts, _ in found if len(parts) == 1)
    raise ValueError(f"{root} is not an identity folder: images such as {top[0]!r} lie at its "
                     f"top level, outside any <identity>/ subfolder")
  by_subfolder = labels == "subfolder" or (labels == "auto" and not at_top)
  found.sort()
  if not by_subfolder:
    return ImageList([p for _, p in found], [UNKNOWN] * len(found), root)
  counts: dict[str, int] = {}
  for parts, _ in found:
    counts[parts[0]] = counts.get(parts[0], 0) + 1
  keep = [name for name in sorted(counts)
          if counts[name] >= min_images and (people is None or name in people)][:max_identities]
  if not keep:
    raise ValueError(f"no identity under {root} has >= {min_images} images"
                     + (f" and is in the {len(people)} people asked for" if people else "")
                     + f" ({len(counts)} identity folders)")
  keep_set = set(keep)
  subfolders = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
  empty = [name for name in subfolders
           if name not in counts and (people is None or name in people)]
  chosen = [(parts[0], p) for parts, p in found if parts[0] in keep_set]
  return ImageList([p for _, p in chosen], [name for name, _ in chosen], root, empty)


def collect_images(source: str | os.PathLike, *, labels: str = "auto", min_images: int = 1,
                   max_identities: int | None = None,
                   people: str | os.PathLike | Iterable[str] | None = None) -> ImageList:
  """One image file, a list file (.txt/.lst/.csv/.tsv) or a folder -> `ImageList`.

  A folder is read recursively. With `labels="auto"` a folder that has no
  image at its top level is an identity folder: the first-level subfolder
  name is each image's label; "subfolder" insists on that, "none" never
  labels. `min_images`, `people` (names, or a people file such as LFW's
  peopleDevTest.txt) and then `max_identities` (the first N by name) filter
  the identities of an identity folder.

  Raises:
    FileNotFoundError: `source` does not exist (the message names it).
    ValueError: a folder with no image file, or a list file naming none.
  """
  if labels not in LABEL_MODES:
    raise ValueError(f"labels={labels!r}: use one of {LABEL_MODES}")
  source = os.fspath(source)
  if not os.path.exists(source):
    raise FileNotFoundError(f"no such file or folder: {source}")
  if os.path.isdir(source):
    if isinstance(people, (str, os.PathLike)):
      people = read_people(people)
    return _read_folder(source, labels, min_images, max_identities,
                        None if people is None else frozenset(people))
  if os.path.splitext(source)[1].lower() in LIST_EXTENSIONS:
    return _read_list_file(source)
  return ImageList([source], [UNKNOWN], source)


def collect_many(sources: Iterable[str], **kwargs) -> ImageList:
  """`collect_images` of each source, concatenated in order."""
  lists = [collect_images(s, **kwargs) for s in sources]
  if not lists:
    raise ValueError("no input given")
  out = lists[0]
  for more in lists[1:]:
    out = out + more
  return out


# --- distances ----------------------------------------------------------------------------------

def l2_normalise(x: np.ndarray) -> np.ndarray:
  """[N, D] -> [N, D] float64 rows of unit L2 norm (zero rows stay zero)."""
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def distance_matrix(a: np.ndarray, b: np.ndarray, distance: str) -> np.ndarray:
  """[N, D] x [M, D] -> [N, M] float64, the all-pairs form of `lfw_eval.pair_distances`.

  "euclidean": squared L2 of unit vectors = 2 - 2 cos, in [0, 4]; "cosine": 1 - cos.
  """
  cos = np.clip(l2_normalise(a) @ l2_normalise(b).T, -1.0, 1.0)
  if distance == "euclidean":
    return 2.0 - 2.0 * cos
  if distance == "cosine":
    return 1.0 - cos
  raise ValueError(f"distance={distance!r}: use one of {lfw_eval.DISTANCES}")


def convert_threshold(threshold: float, from_distance: str, to_distance: str) -> float:
  """The same operating point in another distance: |a-b|^2 = 2 (1 - cos) for unit vectors."""
  for d in (from_distance, to_distance):
    if d not in lfw_eval.DISTANCES:
      raise ValueError(f"distance={d!r}: use one of {lfw_eval.DISTANCES}")
  if from_distance == to_distance:
    return float(threshold)
  return float(threshold) * (0.5 if to_distance == "cosine" else 2.0)


# --- the threshold calibrated on LFW ------------------------------------------------------------

_EVAL_JSON = re.compile(r"^lfw_(?:(dev_test|dev_train)_)?(\d+|latest)\.json$")
_PROTOCOL_PREFERENCE = {"view2": 0, "dev_test": 1, "dev_train": 2}


@dataclasses.dataclass(frozen=True)
class Calibration:
  """A decision threshold on `distance` (same when distance < threshold) and where it came from."""
  threshold: float
  distance: str
  flip: str
  source: str  # the evaluation JSON, or "--threshold"
  standardization: str | None = None  # the evaluation's; None: config.data.standardization
  protocol: str | None = None
  step: int | None = None
  accuracy: float | None = None
  note: str = ""

  def describe(self) -> str:
    how = f"{self.distance}, flip={self.flip}" + (
        f", {self.standardization}" if self.standardization else "")
    if self.protocol is None:
      text = f"threshold {self.threshold:.4f} ({how}) from {self.source}"
    else:
      accuracy = f" (accuracy {self.accuracy:.4f})" if self.accuracy is not None else ""
      text = (f"threshold {self.threshold:.4f} ({how}) calibrated on LFW {self.protocol} at "
              f"step {self.step}{accuracy}, from {self.source}")
    return text + (f"; {self.note}" if self.note else "")

  def in_distance(self, distance: str | None) -> "Calibration":
    """The same operating point expressed in `distance` (None: unchanged)."""
    if distance is None or distance == self.distance:
      return self
    return dataclasses.replace(
        self, threshold=convert_threshold(self.threshold, self.distance, distance),
        distance=distance,
        note="; ".join(filter(None, [self.note, f"converted from {self.distance} "
                                                f"{self.threshold:.4f}"])))


def eval_jsons(workdir: str) -> list[tuple[str, str, int | None]]:
  """(path, protocol, step) of every LFW evaluation JSON in `<workdir>/eval`."""
  eval_dir = checkpointing.workdir_path(workdir) / "eval"
  if not eval_dir.is_dir():
    return []
  out = []
  for p in eval_dir.iterdir():
    m = _EVAL_JSON.match(p.name)
    if m:
      step = None if m.group(2) == "latest" else int(m.group(2))
      out.append((str(p), m.group(1) or "view2", step))
  return out


def find_eval_json(workdir: str, step: int | None = None) -> str | None:
  """The evaluation JSON to take a threshold from, or None.

  Order: one written for `step` (the checkpoint in use) before any other,
  then View 2 before View 1 (more pairs), then the newest step.
  """
  found = eval_jsons(workdir)
  if not found:
    return None
  key = lambda f: (f[2] != step or step is None, _PROTOCOL_PREFERENCE[f[1]],
                   -(f[2] if f[2] is not None else -1))
  return min(found, key=key)[0]


def read_calibration(path: str) -> Calibration:
  """The best-accuracy threshold of one evaluation JSON, with its distance and flip."""
  with open(path) as f:
    saved = json.load(f)
  missing = [k for k in ("threshold", "distance", "flip") if k not in saved]
  if missing:
    raise ValueError(f"{path} is not an LFW evaluation JSON (no {missing})")
  note = ("the evaluation subtracted the training folds' mean embedding, single pairs here do "
          "not, so the threshold is approximate" if saved.get("subtract_mean") else "")
  return Calibration(threshold=float(saved["threshold"]), distance=saved["distance"],
                     flip=saved["flip"], source=path,
                     standardization=saved.get("standardization"), protocol=saved.get("protocol"),
                     step=saved.get("step"), accuracy=saved.get("accuracy"), note=note)


def calibration(workdir: str, step: int | None, *, threshold: float | None = None,
                distance: str | None = None, default_distance: str = "euclidean",
                default_flip: str = "none") -> Calibration:
  """The threshold to decide "same identity" with.

  `threshold` (the --threshold flag) wins; its distance is `distance`, else
  the evaluation JSON's, else `default_distance`. Without it, the threshold
  is read from `find_eval_json(workdir, step)` and converted to `distance`
  if one is asked for. No JSON and no `threshold` is an error saying how to
  make one.
  """
  path = find_eval_json(workdir, step)
  if threshold is not None:
    saved = read_calibration(path) if path else None
    return Calibration(threshold=float(threshold),
                       distance=distance or (saved.distance if saved else default_distance),
                       flip=saved.flip if saved else default_flip, source="--threshold",
                       standardization=saved.standardization if saved else None)
  if path is None:
    eval_dir = checkpointing.workdir_path(workdir) / "eval"
    raise FileNotFoundError(
        f"no LFW evaluation JSON (lfw_*.json) in {eval_dir} to take the calibrated threshold "
        f"from: run `python -m facejax.evaluation --config=... --workdir={workdir}` first, "
        f"or pass --threshold")
  cal = read_calibration(path)
  if step is not None and cal.step is not None and cal.step != step:
    cal = dataclasses.replace(cal, note="; ".join(filter(None, [
        cal.note, f"calibrated on step {cal.step}, the model is step {step}"])))
  return cal.in_distance(distance)


# --- the model ----------------------------------------------------------------------------------

@dataclasses.dataclass
class FaceModel:
  """A restored checkpoint, ready to embed image files.

  `variables`: {"params", "batch_stats"}; `align_spec`: MTCNN alignment
  applied to each file before embedding (None: the files are used as they
  are, e.g. an already aligned tree).
  """
  config: ml_collections.ConfigDict
  variables: dict
  step: int | None
  workdir: str
  align_spec: align.AlignSpec | None = None
  _detector: object = dataclasses.field(default=None, repr=False)

  def embed_paths(self, paths: Sequence[str | os.PathLike], *, flip: str | None = None,
                  standardization: str | None = None, chunk_size: int = 1024,
                  progress: bool = True, desc: str = "embed") -> FileEmbeddings:
    """Embeds image files -> `FileEmbeddings` (embeddings [N, D] float32 of the files that
    worked, in input order; `skipped` {path: reason} for the others).

    `flip` and `standardization` default to `config.eval.flip` and
    `config.data.standardization`; a calibrated threshold is only valid with
    the ones it was computed with (`Calibration.flip/standardization`).
    Files are read in chunks of `chunk_size` so that memory stays bounded
    and the progress bar moves; one bad file never stops the job.
    """
    from tqdm import tqdm
    paths = [os.fspath(p) for p in paths]
    config = self.config
    if standardization and standardization != config.data.standardization:
      config = config.copy_and_resolve_references()
      config.data.standardization = standardization
    if self.align_spec is not None and self._detector is None:
      self._detector = align.Detector(self.align_spec.min_face_size)
    kept, chunks, records, skipped = [], [], [], {}
    with tqdm(total=len(paths), desc=desc, unit="img", disable=not progress) as bar:
      for start in range(0, len(paths), chunk_size):
        part = embed_files(config, self.variables, paths[start:start + chunk_size],
                           align_spec=self.align_spec, detector=self._detector, flip=flip)
        kept += part.paths
        chunks.append(part.embeddings)
        records += part.records
        skipped.update(part.skipped)
        bar.update(min(chunk_size, len(paths) - start))
        if skipped:
          bar.set_postfix(skipped=len(skipped))
    dim = chunks[0].shape[1] if chunks else self.config.model.embedding_dim
    emb = np.concatenate(chunks) if chunks else np.zeros((0, dim), np.float32)
    return FileEmbeddings(kept, emb.astype(np.float32), records, skipped)


def load_model(config: ml_collections.ConfigDict, workdir: str, step: int | None = None, *,
               align_spec: align.AlignSpec | None = None) -> FaceModel:
  """Restores `step` (default: the newest good one) of `workdir` for `config`'s net.

  Raises FileNotFoundError (no checkpoint / no such step) and
  `checkpointing.IncompatibleCheckpointError` for a checkpoint of another
  net, naming both.
  """
  variables, step = lfw_eval.restore_model_vars(config, workdir, step)
  return FaceModel(config=config, variables=variables, step=step, workdir=str(workdir),
                   align_spec=align_spec)


def format_skipped(skipped: dict[str, str], limit: int = 20) -> str:
  """Lines "  path: reason" for a summary (the first `limit`, then a count)."""
  if not skipped:
    return ""
  lines = [f"skipped {len(skipped)} file(s):"]
  lines += [f"  {p}: {r}" for p, r in list(skipped.items())[:limit]]
  if len(skipped) > limit:
    lines.append(f"  ... and {len(skipped) - limit} more")
  return "\n".join(lines)
