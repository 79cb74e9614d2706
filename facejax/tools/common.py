"""What every face tool needs: a model from a workdir, image lists, a threshold.

* `load_model(config, workdir, step)` -> `FaceModel`, whose `embed_paths(paths)`
  embeds any image files with `facejax.inference.Embedder.embed_files` (each file
  decoded once, in parallel, bad files skipped with a reason, progress bar).
* `collect_images(source)` turns a file, a folder (an identity folder, listed by
  `identity_folder.scan_identity_folder`, or any folder, recursively) or a list file
  into an `ImageList`, with errors that name the path. Which files are images is
  `facejax.data.image_files`' policy, shared with training, alignment and evaluation.
* Distances are `facejax.distances`.
* `calibration(workdir, step)` reads the best-accuracy threshold, and the distance and
  flip it was computed with, from the LFW evaluation that `facejax.evaluation.results`
  names the calibration (LFW images of the config, the config's settings).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Iterable, Sequence

import ml_collections

from facejax import errors
from facejax.data import align, identity_folder, image_files
from facejax.data.lfw import read_people
from facejax.distances import convert_threshold
from facejax.evaluation import results as results_lib
from facejax.inference import Embedder, FileEmbeddings

LIST_EXTENSIONS = (".txt", ".lst", ".csv", ".tsv")
LABEL_MODES = ("auto", "subfolder", "none")
UNKNOWN = ""  # the label of an image whose identity is not known


class OutputExistsError(errors.UserError, FileExistsError):
  """An output the tools refuse to overwrite; the message names it."""


# --- image lists --------------------------------------------------------------------------------

@dataclasses.dataclass
class ImageList:
  """paths [N] and their identity labels [N] ("" when unknown), in a fixed order.

  `empty_identities`: first-level subfolders of an identity folder with no image.
  `left_out`: {path: why} of the files of a folder that were not taken (not images under
  `image_files.is_image_file`, or nested below an identity's folder).
  """
  paths: list[str]
  labels: list[str]
  source: str
  empty_identities: list[str] = dataclasses.field(default_factory=list)
  left_out: dict[str, str] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.paths)

  @property
  def labelled(self) -> bool:
    return bool(self.labels) and all(label != UNKNOWN for label in self.labels)

  def __add__(self, other: "ImageList") -> "ImageList":
    return ImageList(self.paths + other.paths, self.labels + other.labels,
                     f"{self.source}, {other.source}",
                     self.empty_identities + other.empty_identities,
                     {**self.left_out, **other.left_out})


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
    raise errors.DataError(f"list file {path} names no image")
  return ImageList(paths, labels, path)


def _read_folder(root: str, labels: str, min_images: int, max_identities: int | None,
                 people: frozenset[str] | None) -> ImageList:
  listing = image_files.list_folder(root, recursive=True)
  left_out = {os.path.join(root, p): "not an image (no image suffix or content)"
              for p in listing.others}
  if not listing.images:
    raise errors.DataError(f"no image files ({', '.join(image_files.IMAGE_EXTENSIONS)}, or "
                           f"image content without a suffix) under folder {root}")
  top = [p for p in listing.images if "/" not in p]
  if labels == "subfolder" and top:
    raise errors.DataError(f"{root} is not an identity folder: images such as {top[0]!r} lie at "
                           f"its top level, outside any <identity>/ subfolder")
  if labels == "none" or (labels == "auto" and top):
    paths = [os.path.join(root, p) for p in listing.images]
    return ImageList(paths, [UNKNOWN] * len(paths), root, left_out=left_out)
  # An identity folder: facejax's one scanner lists it, as training and evaluation do.
  try:
    found = identity_folder.scan_identity_folder(root, min_images_per_identity=min_images,
                                                 include=people, max_identities=max_identities)
  except errors.DataError as e:
    raise errors.DataError(f"no identity under {root} has >= {min_images} images"
                           + (f" and is in the {len(people)} people asked for" if people else "")
                           + f" ({e})") from None
  names = found.class_names
  subfolders = image_files.identity_dirs(root)
  counted = {p.split("/")[0] for p in listing.images}
  empty = [n for n in subfolders if n not in counted and (people is None or n in people)]
  nested = "nested below its identity's folder (read: <root>/<identity>/<image>)"
  left_out.update({os.path.join(root, p): nested for p in listing.images if p.count("/") > 1})
  return ImageList([str(found.abspath(i)) for i in range(len(found))],
                   [names[label] for label in found.labels.tolist()], root, empty, left_out)


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
    errors.MissingDataError (a FileNotFoundError): `source` does not exist (named).
    errors.DataError (a ValueError): a folder with no image file, or a list file naming none.
  """
  if labels not in LABEL_MODES:
    raise errors.ConfigError(f"labels={labels!r}: use one of {LABEL_MODES}")
  source = os.fspath(source)
  if not os.path.exists(source):
    raise errors.MissingDataError(f"no such file or folder: {source}")
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
    raise errors.DataError("no input given")
  out = lists[0]
  for more in lists[1:]:
    out = out + more
  return out


# --- the threshold calibrated on LFW ------------------------------------------------------------

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


def find_eval_json(workdir: str, step: int | None = None, *,
                   config: ml_collections.ConfigDict | None = None) -> str | None:
  """The LFW evaluation JSON to take a threshold from, or None (`results.find_calibration`
  on the LFW folder of `config`: the default LFW images when None)."""
  return results_lib.find_calibration(workdir, step,
                                      folder=results_lib.calibration_folder(config))


def read_calibration(path: str) -> Calibration:
  """The best-accuracy threshold of one evaluation JSON, with its distance and flip."""
  with open(path) as f:
    saved = json.load(f)
  missing = [k for k in ("threshold", "distance", "flip") if k not in saved]
  if missing:
    raise errors.DataError(f"{path} is not an LFW evaluation JSON (no {missing})")
  note = ("the evaluation subtracted the training folds' mean embedding, single pairs here do "
          "not, so the threshold is approximate" if saved.get("subtract_mean") else "")
  return Calibration(threshold=float(saved["threshold"]), distance=saved["distance"],
                     flip=saved["flip"], source=path,
                     standardization=saved.get("standardization"), protocol=saved.get("protocol"),
                     step=saved.get("step"), accuracy=saved.get("accuracy"), note=note)


def calibration(workdir: str, step: int | None, *, threshold: float | None = None,
                distance: str | None = None, default_distance: str = "euclidean",
                default_flip: str = "none",
                config: ml_collections.ConfigDict | None = None) -> Calibration:
  """The threshold to decide "same identity" with.

  `threshold` (the --threshold flag) wins; its distance is `distance`, else
  the evaluation JSON's, else `default_distance`. Without it, the threshold
  is read from `find_eval_json(workdir, step, config=config)` and converted to
  `distance` if one is asked for. No JSON and no `threshold` is an error
  (`errors.MissingDataError`) saying how to make one.
  """
  path = find_eval_json(workdir, step, config=config)
  if threshold is not None:
    saved = read_calibration(path) if path else None
    return Calibration(threshold=float(threshold),
                       distance=distance or (saved.distance if saved else default_distance),
                       flip=saved.flip if saved else default_flip, source="--threshold",
                       standardization=saved.standardization if saved else None)
  if path is None:
    raise errors.MissingDataError(
        f"no LFW evaluation of the config's LFW images and settings (lfw_<step>.json) in "
        f"{results_lib.eval_dir(workdir)} to take the calibrated threshold from (found: "
        f"{results_lib.describe_results(workdir)}): run `python -m facejax.evaluation "
        f"--config=... --workdir={workdir}` first, or pass --threshold")
  cal = read_calibration(path)
  if step is not None and cal.step is not None and cal.step != step:
    cal = dataclasses.replace(cal, note="; ".join(filter(None, [
        cal.note, f"calibrated on step {cal.step}, the model is step {step}"])))
  return cal.in_distance(distance)


# --- the model ----------------------------------------------------------------------------------

@dataclasses.dataclass
class FaceModel:
  """A restored checkpoint, ready to embed image files.

  `embedder`: the `facejax.inference.Embedder` (net, variables, preprocessing);
  `align_spec`: MTCNN alignment applied to each file before embedding (None: the files
  are used as they are, e.g. an already aligned tree).
  """
  config: ml_collections.ConfigDict
  embedder: Embedder
  workdir: str
  align_spec: align.AlignSpec | None = None

  @property
  def step(self) -> int | None:
    return self.embedder.step

  @property
  def variables(self) -> dict:
    return self.embedder.variables

  def embed_paths(self, paths: Sequence[str | os.PathLike], *, flip: str | None = None,
                  standardization: str | None = None, batch_size: int | None = None,
                  progress: bool | None = None, desc: str = "embed") -> FileEmbeddings:
    """Embeds image files -> `FileEmbeddings` (embeddings [N, D] float32 of the files that
    worked, in input order; `skipped` {path: reason} for the others; `no_face` the aligned
    files where the fallback crop was used).

    `flip` and `standardization` default to `config.eval.flip` and
    `config.data.standardization`; a calibrated threshold is only valid with the ones it
    was computed with (`Calibration.flip/standardization`). One bad file never stops the
    job; `progress` None shows a bar on a terminal.
    """
    embedder = self.embedder.replace(flip=flip or self.config.eval.flip,
                                     standardization=standardization
                                     or self.config.data.standardization,
                                     batch_size=batch_size)
    return embedder.embed_files(paths, align_spec=self.align_spec, progress=progress, desc=desc)


def load_model(config: ml_collections.ConfigDict, workdir: str, step: int | None = None, *,
               align_spec: align.AlignSpec | None = None) -> FaceModel:
  """Restores `step` (default: the newest good one) of `workdir` for `config`'s net.

  Raises `facejax.errors.CheckpointError` (no checkpoint / no such step) and
  `checkpointing.IncompatibleCheckpointError` for a checkpoint of another net, naming both.
  """
  embedder = Embedder.from_workdir(config, workdir, step)
  return FaceModel(config=config, embedder=embedder, workdir=str(workdir), align_spec=align_spec)


def format_no_face(no_face: Sequence[str], limit: int = 20) -> str:
  """Lines naming the aligned images where no face was found ("" when none)."""
  if not no_face:
    return ""
  lines = [f"no face found in {len(no_face)} image(s); their centre crop was embedded "
           f"instead (align fallback):"]
  lines += [f"  {p}" for p in list(no_face)[:limit]]
  if len(no_face) > limit:
    lines.append(f"  ... and {len(no_face) - limit} more")
  return "\n".join(lines)


def format_skipped(skipped: dict[str, str], limit: int = 20) -> str:
  """Lines "  path: reason" for a summary (the first `limit`, then a count)."""
  if not skipped:
    return ""
  lines = [f"skipped {len(skipped)} file(s):"]
  lines += [f"  {p}: {r}" for p, r in list(skipped.items())[:limit]]
  if len(skipped) > limit:
    lines.append(f"  ... and {len(skipped) - limit} more")
  return "\n".join(lines)
