"""IJB-B / IJB-C 1:1 template verification (`type="ijb"`), as insightface's `eval_ijbc.py`,
and 1:N identification when the set's 1:N lists are there (`ijb_1n.py`).

  c.evals.ijbc = dict(type="ijb", root="/data/IJB_release/IJBC", every_steps=0)
  python -m facejax.evaluation --config=C --workdir=W --ijb=/data/IJB_release/IJBC

Layout (`root`): `meta/<t>_face_tid_mid.txt` (image, template id, media id),
`meta/<t>_template_pair_label.txt` (template 1, template 2, label 1 = genuine),
`meta/<t>_name_5pts_score.txt` (image, 5 x (x, y) landmarks, detector score) and the
images in `loose_crop/`; t = ijbb | ijbc (from the folder name, or `set_name`).

Per image: a 5-point similarity (Umeyama, `facejax.data.align.similarity_transform`) to
ArcFace's 112x112 template, bilinear warp with a black border (OpenCV), then a resize to
the net's input; with `flip`, the mirrored face's embedding is added; with
`detector_score`, the feature is multiplied by the detector's faceness score. facejax's
nets give unit embeddings, so insightface's "norm score" switch has nothing to turn off.

Pooling (`pool_templates`): the images of one media (video frames) are averaged, the media
of a template summed, and the template feature L2-normalised. Scores are cosines.

TAR@FAR (`TarAtFar`): for a FAR f over N impostor pairs, the threshold is the
(floor(f N) + 1)-th largest impostor score, so at most floor(f N) impostors score above
it, and TAR is the fraction of genuine pairs scoring strictly above it. Impostor scores
are consumed in chunks (`chunk_size` pairs) and only the floor(f_max N) + 1 largest are
kept, with the genuine scores, so memory is bounded by the chunk and the top impostors
(IJB-C: 15.6M impostors, f_max = 0.1 -> 1.56M floats kept), never all the scores. AUC is
exact too: each chunk's impostors are counted against the sorted genuine scores.
(insightface reads the TPR at the ROC point nearest each FAR; the two agree to within one
impostor's rank.)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from concurrent import futures

import jax
import numpy as np
from etils import epath

from facejax import errors
from facejax.data import align as align_lib
from facejax.data import datasets
from facejax.evaluation import ijb_1n, metrics as metrics_lib, registry
from facejax.evaluation import results as results_lib

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
ALIGN_SPEC = align_lib.AlignSpec(mode="similarity", image_size=(112, 112), template="arcface")


@dataclasses.dataclass(frozen=True)
class IjbMeta:
  """The meta files of one IJB set. Arrays are per image ([N]) or per pair ([P])."""
  root: str
  set_name: str  # "ijbb" | "ijbc"
  images: list[str]  # [N] file names under loose_crop/
  template_ids: np.ndarray  # [N] int64
  media_ids: np.ndarray  # [N] int64
  landmarks: np.ndarray  # [N, 5, 2] float64 (x, y)
  scores: np.ndarray  # [N] float64 detector scores
  pairs: np.ndarray  # [P, 2] int64 template ids
  labels: np.ndarray  # [P] bool, True for genuine


def _read_table(path: pathlib.Path, columns: int, what: str) -> list[list[str]]:
  if not path.is_file():
    raise errors.MissingDataError(f"{path}: missing IJB meta file ({what})")
  rows = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != columns:
        raise errors.DataError(f"{path}:{n}: {len(fields)} fields, expected {columns} ({what})")
      rows.append(fields)
  return rows


def read_meta(root: str | os.PathLike, set_name: str | None = None) -> IjbMeta:
  """Reads `root/meta/<set>_*.txt`; errors name the file and the line."""
  root = pathlib.Path(root)
  if set_name is None:
    set_name = root.name.lower().replace("-", "").replace("_", "")
    if set_name not in ("ijbb", "ijbc"):
      found = sorted(p.name.split("_")[0] for p in (root / "meta").glob("*_face_tid_mid.txt"))
      if len(found) != 1:
        raise errors.DataError(f"{root}: cannot tell the IJB set from the folder name; set "
                               f"set_name (meta files found for: {found or 'none'})")
      set_name = found[0]
  meta = root / "meta"
  faces = _read_table(meta / f"{set_name}_face_tid_mid.txt", 3, "image, template, media")
  points = _read_table(meta / f"{set_name}_name_5pts_score.txt", 12,
                       "image, 10 landmark coordinates, score")
  pairs = _read_table(meta / f"{set_name}_template_pair_label.txt", 3,
                      "template 1, template 2, label")
  landmark_of = {r[0]: r[1:] for r in points}
  missing = [r[0] for r in faces if r[0] not in landmark_of]
  if missing:
    raise errors.DataError(f"{meta / f'{set_name}_name_5pts_score.txt'}: no landmarks for "
                           f"{len(missing)} images, e.g. {missing[:3]}")
  values = np.array([[float(v) for v in landmark_of[r[0]]] for r in faces], np.float64)
  tids = np.array([int(r[1]) for r in faces], np.int64)
  pair_ids = np.array([[int(r[0]), int(r[1])] for r in pairs], np.int64).reshape(-1, 2)
  unknown = np.setdiff1d(pair_ids, tids)
  if unknown.size:
    raise errors.DataError(f"{meta / f'{set_name}_template_pair_label.txt'}: templates "
                           f"{unknown[:5].tolist()} have no image in {set_name}_face_tid_mid.txt")
  return IjbMeta(root=str(root), set_name=set_name, images=[r[0] for r in faces],
                 template_ids=tids, media_ids=np.array([int(r[2]) for r in faces], np.int64),
                 landmarks=values[:, :10].reshape(-1, 5, 2), scores=values[:, 10],
                 pairs=pair_ids, labels=np.array([int(r[2]) == 1 for r in pairs], bool))


def pool_templates(features: np.ndarray, template_ids: np.ndarray, media_ids: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
  """[N, D] image features -> (template ids [T] sorted, [T, D] unit template features):
  the mean of each (template, media) group, summed over a template's media, L2-normalised."""
  pairs = np.stack([template_ids, media_ids], 1)
  groups, group_of = np.unique(pairs, axis=0, return_inverse=True)
  group_of = group_of.reshape(-1)
  sums = np.zeros((len(groups), features.shape[1]), np.float64)
  np.add.at(sums, group_of, features)
  media = sums / np.bincount(group_of, minlength=len(groups))[:, None]
  templates, template_of = np.unique(groups[:, 0], return_inverse=True)
  pooled = np.zeros((len(templates), features.shape[1]), np.float64)
  np.add.at(pooled, template_of.reshape(-1), media)
  norms = np.linalg.norm(pooled, axis=1, keepdims=True)
  return templates, (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


class TarAtFar:
  """Streaming TAR@FAR and AUC over genuine and impostor scores (module docstring).

  `num_impostors` must be known up front (it fixes how many top impostors to keep).
  """

  def __init__(self, genuine: np.ndarray, num_impostors: int, fars=FARS):
    self.genuine = np.sort(np.asarray(genuine, np.float64))
    self.num_impostors = int(num_impostors)
    self.fars = tuple(float(f) for f in fars)
    self.keep = min(self.num_impostors, int(math.floor(max(self.fars) * self.num_impostors)) + 1)
    self.top = np.empty(0, np.float64)
    self.seen = 0
    self._auc_count = 0.0

  def add_impostors(self, scores: np.ndarray) -> None:
    scores = np.asarray(scores, np.float64).reshape(-1)
    self.seen += scores.size
    below = np.searchsorted(self.genuine, scores, side="left")
    ties = np.searchsorted(self.genuine, scores, side="right") - below
    # Genuine pairs that beat this impostor, ties counted half (the Mann-Whitney AUC).
    self._auc_count += float((self.genuine.size - below - ties).sum() + 0.5 * ties.sum())
    merged = np.concatenate([self.top, scores])
    if merged.size > self.keep:
      merged = np.partition(merged, merged.size - self.keep)[merged.size - self.keep:]
    self.top = merged

  def result(self) -> dict:
    if self.seen != self.num_impostors:
      raise ValueError(f"saw {self.seen} impostor scores, expected {self.num_impostors}")
    top = np.sort(self.top)[::-1]
    rows = []
    for far in self.fars:
      k = int(math.floor(far * self.num_impostors))
      threshold = top[k] if k < top.size else -np.inf
      tar = float((self.genuine > threshold).mean()) if self.genuine.size else float("nan")
      rows.append({"far": far, "tar": tar, "threshold": float(threshold),
                   "false_accepts": int((top > threshold).sum())})
    auc = self._auc_count / max(self.genuine.size * self.num_impostors, 1)
    # The ROC down to FAR f_max: one point per kept impostor rank.
    ranks = np.arange(1, top.size + 1)
    fpr = ranks / self.num_impostors
    tpr = 1.0 - np.searchsorted(self.genuine, top, side="right") / max(self.genuine.size, 1)
    return {"tar_at_far": rows, "auc": auc, "roc_fpr": fpr, "roc_tpr": tpr}


@dataclasses.dataclass(frozen=True, eq=False)
class IjbResult:
  """What `IjbEvaluator.run` measured."""
  set_name: str
  step: int | None
  num_images: int
  num_templates: int
  num_genuine: int
  num_impostors: int
  tar_at_far: list[dict]
  auc: float
  flip: bool
  detector_score: bool
  identification: dict | None = None  # ijb_1n.identify's result
  json_path: str | None = None
  roc_path: str | None = None
  unreadable: dict[str, str] = dataclasses.field(default_factory=dict)

  def scalars(self) -> dict[str, float]:
    out = {f"tar@far={r['far']:.0e}": r["tar"] for r in self.tar_at_far}
    out["auc"] = self.auc
    if self.identification:
      out.update({f"rank{k}": v for k, v in self.identification["rank"].items()})
      out.update({f"tpir@fpir={r['fpir']:.0e}": r["tpir"]
                  for r in self.identification["tpir_at_fpir"]})
    return out

  def summary(self) -> str:
    tars = ", ".join(f"{r['far']:.0e}: {100 * r['tar']:.2f}" for r in self.tar_at_far)
    text = (f"{self.set_name.upper()} 1:1 ({self.num_templates} templates, {self.num_genuine} "
            f"genuine + {self.num_impostors} impostor pairs): TAR% at FAR {tars}; "
            f"AUC {self.auc:.4f}")
    if self.identification:
      found = self.identification
      ranks = ", ".join(f"rank-{k} {100 * v:.2f}" for k, v in found["rank"].items())
      tpirs = ", ".join(f"{r['fpir']:.0e}: {100 * r['tpir']:.2f}"
                        for r in found["tpir_at_fpir"])
      legacy = ", ".join(f"{r['fpir']:.0e}: {100 * r['tpir']:.2f}"
                         for r in found["tpir_at_fpir_insightface"])
      text += (f"\n{self.set_name.upper()} 1:N ({found['num_probes']} probe templates, "
               f"galleries {found['gallery_sizes']}): {ranks}; TPIR% at FPIR {tpirs} "
               f"(insightface's definition: {legacy})")
    return text

  def to_dict(self) -> dict:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _load_aligned(path: str, landmarks: np.ndarray, size: tuple[int, int]):
  """One loose crop -> ([H, W, 3] uint8 at the net's input, None) or (None, why)."""
  try:
    image = align_lib.read_rgb(path)
  except (OSError, ValueError) as e:
    return None, f"unreadable ({e})"
  face = align_lib.Face(box=np.zeros(4), score=1.0, landmarks=landmarks)
  aligned = align_lib.align_face(image, face, ALIGN_SPEC)
  if tuple(aligned.shape[:2]) != size:
    aligned = align_lib._resize(aligned, size)  # pylint: disable=protected-access
  return aligned, None


@registry.register("ijb")
class IjbEvaluator(registry.Evaluator):
  """IJB-B / IJB-C 1:1 verification (module docstring).

  Keyword arguments:
    root: the IJB folder holding meta/ and loose_crop/ (required).
    set_name: "ijbb" | "ijbc" (default: from the folder name).
    flip: add the mirrored face's embedding (default True, as insightface).
    detector_score: weight each image by its detector score (default True).
    fars: the FAR points (default 1e-6 ... 1e-1).
    chunk_size: pairs scored at a time (bounds memory).
    image_dir: the images (default <root>/loose_crop).
    workers: decoding and alignment threads (default: the CPU count, at most 16).
    identification: run 1:N too (default None: when meta/ has the set's 1:N lists).
    fpirs: the FPIR points of 1:N (default 0.01, 0.1).
  """

  def __init__(self, config, embedder, *, name, out_dir, root: str | None = None,
               set_name: str | None = None, flip: bool = True, detector_score: bool = True,
               fars: tuple = FARS, chunk_size: int = 20_000, image_dir: str | None = None,
               workers: int | None = None, identification: bool | None = None,
               fpirs: tuple = ijb_1n.FPIRS):
    super().__init__(config, embedder, name=name, out_dir=out_dir)
    if not root:
      raise errors.ConfigError(f"config.evals.{name}.root: the IJB folder is required")
    if not all(0 < float(f) <= 1 for f in fars):
      raise errors.ConfigError(f"config.evals.{name}.fars={fars!r}: each must be in (0, 1]")
    if not (isinstance(chunk_size, int) and chunk_size >= 1):
      raise errors.ConfigError(f"config.evals.{name}.chunk_size={chunk_size!r}: an int >= 1")
    self.root, self.set_name = os.fspath(root), set_name
    self.flip, self.detector_score = bool(flip), bool(detector_score)
    self.fars, self.chunk_size = tuple(float(f) for f in fars), chunk_size
    self.image_dir = image_dir or os.path.join(self.root, "loose_crop")
    if not all(0 < float(f) < 1 for f in fpirs):
      raise errors.ConfigError(f"config.evals.{name}.fpirs={fpirs!r}: each must be in (0, 1)")
    self.workers = workers or min(16, os.cpu_count() or 1)
    self.identification, self.fpirs = identification, tuple(float(f) for f in fpirs)
    self._meta = None

  def meta(self) -> IjbMeta:
    if self._meta is None:
      self._meta = read_meta(self.root, self.set_name)
    return self._meta

  def image_features(self, embedder, meta: IjbMeta) -> tuple[np.ndarray, dict[str, str]]:
    """[N, D] float64 features of every image (flip added, detector-score weighted) and
    {image: why} for images that could not be read (their rows are zero)."""
    size = datasets.hw(self.config.data.image_size)
    embedder = embedder.replace(flip="concat" if self.flip else "none")
    dim = self.config.model.embedding_dim
    out = np.zeros((len(meta.images), dim), np.float64)
    unreadable = {}
    batch = max(embedder.batch_size, 64)
    with futures.ThreadPoolExecutor(self.workers) as pool:
      for start in range(0, len(meta.images), batch):
        rows = range(start, min(start + batch, len(meta.images)))
        loaded = list(pool.map(lambda i: _load_aligned(
            os.path.join(self.image_dir, meta.images[i]), meta.landmarks[i], size), rows))
        good = [i for i, (image, _) in zip(rows, loaded) if image is not None]
        for i, (image, why) in zip(rows, loaded):
          if image is None:
            unreadable[meta.images[i]] = why
        if not good:
          continue
        emb = embedder.embed_arrays(np.stack([loaded[i - start][0] for i in good]))
        feats = emb[:, :dim] + emb[:, dim:] if self.flip else emb
        out[good] = feats
    if self.detector_score:
      out *= meta.scores[:, None]
    return out, unreadable

  def score(self, meta: IjbMeta, templates: np.ndarray, pooled: np.ndarray) -> dict:
    """Streams the pair scores of the [T, D] `pooled` template features (ids `templates`)
    into `TarAtFar`; returns its result."""
    row = {t: i for i, t in enumerate(templates.tolist())}
    a = np.array([row[t] for t in meta.pairs[:, 0].tolist()], np.int64)
    b = np.array([row[t] for t in meta.pairs[:, 1].tolist()], np.int64)
    scores_of = lambda idx: np.einsum("ij,ij->i", pooled[a[idx]], pooled[b[idx]])
    genuine = np.flatnonzero(meta.labels)
    impostor = np.flatnonzero(~meta.labels)
    stream = TarAtFar(np.concatenate([scores_of(genuine[i:i + self.chunk_size]) for i in
                                      range(0, genuine.size, self.chunk_size)] or [[]]),
                      impostor.size, self.fars)
    for i in range(0, impostor.size, self.chunk_size):
      stream.add_impostors(scores_of(impostor[i:i + self.chunk_size]))
    return stream.result()

  def wants_identification(self, meta: IjbMeta) -> bool:
    if self.identification is None:
      return ijb_1n.has_lists(meta.root, meta.set_name)
    return self.identification

  def identify(self, meta: IjbMeta, templates: np.ndarray, pooled: np.ndarray) -> dict:
    """1:N over the pooled templates (`ijb_1n.identify`)."""
    lists = ijb_1n.read_lists(meta.root, meta.set_name)
    row = {t: i for i, t in enumerate(templates.tolist())}

    def features_of(ids, what):
      missing = [t for t in ids.tolist() if t not in row]
      if missing:
        raise errors.DataError(f"{ijb_1n.list_files(meta.root, meta.set_name)[what]}: "
                               f"templates {missing[:5]} have no image in "
                               f"{meta.set_name}_face_tid_mid.txt")
      return pooled[[row[t] for t in ids.tolist()]]

    galleries = {g: (features_of(ids, g), subjects)
                 for g, (ids, subjects) in lists.galleries.items()}
    return ijb_1n.identify(features_of(lists.probe_templates, "probe"), lists.probe_subjects,
                           galleries, fpirs=self.fpirs)

  def _run(self, embedder):
    meta = self.meta()
    features, unreadable = self.image_features(embedder, meta)
    templates, pooled = pool_templates(features, meta.template_ids, meta.media_ids)
    scored = self.score(meta, templates, pooled)
    found = self.identify(meta, templates, pooled) if self.wants_identification(meta) else None
    result = IjbResult(set_name=meta.set_name, step=embedder.step, num_images=len(meta.images),
                       num_templates=len(templates), identification=found,
                       num_genuine=int(meta.labels.sum()),
                       num_impostors=int((~meta.labels).sum()),
                       tar_at_far=scored["tar_at_far"], auc=scored["auc"], flip=self.flip,
                       detector_score=self.detector_score, unreadable=unreadable)
    if self.out_dir:
      key = results_lib.ResultKey(f"ijb-{meta.set_name}", embedder.step,
                                  results_lib.folder_slug(self.root))
      paths = key.paths(self.out_dir)
      result = dataclasses.replace(result, json_path=paths.json, roc_path=paths.roc)
      if jax.process_index() == 0:
        epath.Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        epath.Path(paths.json).write_text(json.dumps(result.to_dict(), indent=1))
        fpr, tpr = scored["roc_fpr"], scored["roc_tpr"]
        if fpr.size >= 2:
          metrics_lib.plot_roc({f"step {embedder.step}": (fpr, tpr)}, paths.roc,
                               title=f"{meta.set_name.upper()} 1:1", log_x=True,
                               min_fpr=min(self.fars), show_auc=False)
    if unreadable:
      from absl import logging  # pylint: disable=import-outside-toplevel
      logging.warning("%s: %d images could not be read (left out of their templates): %s",
                      self.root, len(unreadable), list(unreadable.items())[:5])
    return result.scalars(), result
