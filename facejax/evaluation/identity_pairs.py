"""Verification on any identity folder (`<root>/<identity>/<image>`), laid out like LFW View 2.

`sample_pairs` draws a balanced, seeded set of pairs over the readable images of a folder:
each of 10 folds holds n genuine pairs (two different images of one identity) and n
impostor pairs (images of two identities), and no pair occurs twice. `write_pairs` saves
them in LFW's pairs.txt format and `read_pairs` reads such a file back against a folder;
an image is named by its 1-based position among its identity's image files sorted by name,
which for LFW's `<Name>_<NNNN>.jpg` files is LFW's own numbering. `evaluate_identity_folder`
scores a checkpoint on them with `lfw_eval.evaluate_pair_set`, the code path of LFW itself.
The folder is listed by `identity_folder.scan_identity_folder` under facejax's one image-file
policy (`image_files`): `.pgm`, `.gif`, `.tif`, `.webp` and extension-less images included.

Unlike View 2, folds are not identity-disjoint (an identity may appear in several folds).
The draw is a pure function of (image labels, num_pairs, seed) for a given numpy; keep the
written pairs file to compare runs across numpy versions or after the folder changes.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from facejax import errors
from facejax.data import datasets, identity_folder, image_check, lfw
from facejax.evaluation import lfw_eval
from facejax.evaluation import registry
from facejax.evaluation import results as results_lib
from facejax.inference import Embedder

PROTOCOL = "identity_folder"


@dataclasses.dataclass(frozen=True, eq=False)
class SampledPairs:
  """Pairs over the rows of an image list, in pairs.txt order: fold 0's genuine pairs, then
  its impostor pairs, then fold 1's, ...

  Attributes:
    index_a, index_b: [N] int64 rows, index_a < index_b.
    issame: [N] bool.
    folds: [N] int64 in 0..num_folds-1, each fold N/num_folds pairs, half of them genuine.
  """
  index_a: np.ndarray
  index_b: np.ndarray
  issame: np.ndarray
  folds: np.ndarray


def _spread(total: int, capacity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """[C] int64 counts summing to `total`, each <= capacity[c], as even as the capacities
  allow (water filling); identities that get one more than the level are drawn at random."""
  lo, hi = 0, int(capacity.max())
  while lo < hi:  # the largest level L with sum(min(capacity, L)) <= total
    mid = (lo + hi + 1) // 2
    lo, hi = (mid, hi) if np.minimum(capacity, mid).sum() <= total else (lo, mid - 1)
  take = np.minimum(capacity, lo)
  rest = total - int(take.sum())
  if rest:
    take[rng.choice(np.flatnonzero(capacity > lo), rest, replace=False)] += 1
  return take


def _unrank(t: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Ranks `t` [K] of the pairs i < j of n items, in (0,1), (0,2), ..., (n-2,n-1) order,
  -> (i [K], j [K])."""
  i_all = np.arange(n, dtype=np.int64)
  first = i_all * (2 * n - i_all - 1) // 2  # rank of (i, i+1): pairs whose first item is < i
  i = np.searchsorted(first, t, side="right") - 1
  return i, t - first[i] + i + 1


def _genuine_pairs(rng, members, counts, total) -> np.ndarray:
  """[total, 2] distinct same-identity row pairs, spread evenly over the identities."""
  capacity = counts * (counts - 1) // 2
  take = _spread(total, capacity, rng)
  out = [np.zeros((0, 2), np.int64)]
  for c in np.flatnonzero(take):
    i, j = _unrank(rng.choice(capacity[c], size=take[c], replace=False), counts[c])
    out.append(np.stack([members[c][i], members[c][j]], 1))
  return np.concatenate(out)


def _impostor_pairs(rng, labels, members, counts, total, capacity) -> np.ndarray:
  """[total, 2] distinct cross-identity row pairs (lower row first): two identities
  uniformly, then one image of each uniformly."""
  order = np.concatenate(members)
  starts = np.cumsum(counts) - counts
  if capacity <= 4 * total:
    # A small folder: rejection would crawl near exhaustion, so list every impostor pair
    # (identity by identity, against the later identities) and weight each by
    # 1 / (n_a n_b) so identity pairs stay equally likely.
    blocks = [(np.repeat(m, len(order) - e), np.tile(order[e:], len(m)))
              for m, e in zip(members, starts + counts)]
    a = np.concatenate([b[0] for b in blocks])
    b = np.concatenate([b[1] for b in blocks])
    w = 1.0 / (counts[labels[a]] * counts[labels[b]])
    pick = rng.choice(len(a), size=total, replace=False, p=w / w.sum())
    return np.sort(np.stack([a[pick], b[pick]], 1), axis=1)
  seen, out = set(), []
  while len(out) < total:
    n = 2 * (total - len(out)) + 16
    ca = rng.integers(len(counts), size=n)
    cb = rng.integers(len(counts) - 1, size=n)
    cb += cb >= ca  # a second identity, never the first
    a = order[starts[ca] + rng.integers(0, counts[ca])]
    b = order[starts[cb] + rng.integers(0, counts[cb])]
    for pair in zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist()):
      if pair not in seen:
        seen.add(pair)
        out.append(pair)
        if len(out) == total:
          break
  return np.array(out, np.int64)


def sample_pairs(labels: np.ndarray, num_pairs: int = 6000, *, seed: int = 0,
                 num_folds: int = lfw_eval.NUM_FOLDS) -> SampledPairs:
  """A balanced, duplicate-free set of verification pairs over labelled images.

  Args:
    labels: [M] int identity of each image (any integer ids).
    num_pairs: pairs wanted: num_folds x (n genuine + n impostor), n = num_pairs //
      (2 num_folds). When the images cannot give that many distinct pairs of a class, n is
      lowered to what they can give (with a warning).
    seed: the draw is a pure function of (labels, num_pairs, seed, num_folds).

  Genuine pairs are spread as evenly as possible over the identities with >= 2 images
  (an identity with 530 images does not dominate), each identity's pairs drawn without
  replacement; impostor pairs pick two identities uniformly, then an image of each.

  Raises:
    ValueError: fewer than 2 identities, no identity with 2 images, or too few pairs for
      one of each class per fold.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"labels must be a 1-D array [M], got shape {labels.shape}")
  _, labels = np.unique(labels, return_inverse=True)
  labels = labels.reshape(-1)
  counts = np.bincount(labels).astype(np.int64)
  members = np.split(np.argsort(labels, kind="stable"), np.cumsum(counts)[:-1])
  if len(counts) < 2:
    raise errors.DataError(f"impostor pairs need at least 2 identities, got {len(counts)}")
  if counts.max() < 2:
    raise errors.DataError(
        "genuine pairs need an identity with at least 2 images; every one has 1")
  per_fold = num_pairs // (2 * num_folds)
  if per_fold < 1:
    raise errors.DataError(f"num_pairs={num_pairs}: need at least {2 * num_folds} "
                           f"(one genuine and one impostor pair in each of {num_folds} folds)")
  genuine_capacity = int((counts * (counts - 1) // 2).sum())
  impostor_capacity = (len(labels) ** 2 - int((counts ** 2).sum())) // 2
  possible = min(genuine_capacity, impostor_capacity) // num_folds
  if possible < 1:
    raise errors.DataError(f"{len(labels)} images in {len(counts)} identities give only "
                           f"{genuine_capacity} genuine and {impostor_capacity} impostor pairs: "
                           f"too few for {num_folds} folds with one pair of each")
  if per_fold > possible:
    logging.warning("num_pairs=%d: the images give only %d genuine and %d impostor pairs, "
                    "so %d folds x (%d + %d) = %d pairs", num_pairs, genuine_capacity,
                    impostor_capacity, num_folds, possible, possible, 2 * num_folds * possible)
    per_fold = possible
  total = per_fold * num_folds
  rng = np.random.default_rng(seed)
  genuine = _genuine_pairs(rng, members, counts, total)
  impostor = _impostor_pairs(rng, labels, members, counts, total, impostor_capacity)
  genuine, impostor = genuine[rng.permutation(total)], impostor[rng.permutation(total)]
  # Fold k: genuine[k*n:(k+1)*n] then impostor[k*n:(k+1)*n], as pairs.txt lists them.
  blocks = np.stack([genuine.reshape(num_folds, per_fold, 2),
                     impostor.reshape(num_folds, per_fold, 2)], 1).reshape(-1, 2)
  issame = np.tile(np.repeat([True, False], per_fold), num_folds)
  folds = np.repeat(np.arange(num_folds, dtype=np.int64), 2 * per_fold)
  return SampledPairs(blocks[:, 0], blocks[:, 1], issame, folds)


def folder_listing(root: str | os.PathLike) -> identity_folder.IdentityDataset:
  """Every image file of `root/<identity>/` (readable or not): what pairs-file indices
  count. Raises errors.MissingDataError / errors.DataError naming `root` when there is
  nothing to use."""
  try:
    return identity_folder.scan_identity_folder(root)
  except errors.MissingDataError:
    raise
  except ValueError as e:
    raise errors.DataError(f"{root} holds no identity folder with images (expected "
                           f"{root}/<identity>/<image>; {e})") from None


def _files_by_identity(listing: identity_folder.IdentityDataset) -> dict[str, list[str]]:
  return {name: [listing.paths[i] for i in idx]
          for name, idx in zip(listing.class_names, listing.indices_by_class())}


def to_lfw_pairs(sampled: SampledPairs, paths: list[str] | tuple[str, ...],
                 listing: identity_folder.IdentityDataset) -> list[lfw.Pair]:
  """`sampled` rows of `paths` ("<identity>/<file>") as `lfw.Pair`s whose path_a/path_b are
  those relative paths and whose indices count in `listing`."""
  index = {p: k + 1 for files in _files_by_identity(listing).values() for k, p in enumerate(files)}
  pairs = []
  for a, b, same, fold in zip(sampled.index_a, sampled.index_b, sampled.issame, sampled.folds):
    pa, pb = paths[a], paths[b]
    pairs.append(lfw.Pair(pa, pb, bool(same), int(fold), pa.split("/")[0], index[pa],
                          pb.split("/")[0], index[pb]))
  return pairs


def format_pairs(pairs: list[lfw.Pair]) -> str:
  """`pairs` (pairs.txt order: each fold's genuine then impostor pairs, n of each) as the
  text of an LFW View 2 pairs file, header "<folds><TAB><n>"."""
  num_folds = max(p.fold for p in pairs) + 1
  per_fold = len(pairs) // (2 * num_folds)
  lines = [f"{num_folds}\t{per_fold}"]
  for k, p in enumerate(pairs):
    fold, pos = divmod(k, 2 * per_fold)
    if (p.fold, p.issame) != (fold, pos < per_fold) or len(pairs) != 2 * num_folds * per_fold:
      raise ValueError(f"pair {k} ({p.path_a}, {p.path_b}) breaks the pairs.txt layout of "
                       f"{num_folds} folds x ({per_fold} genuine + {per_fold} impostor)")
    if any(len(name.split()) != 1 for name in (p.name_a, p.name_b)):
      raise ValueError(f"identity {p.name_a!r} or {p.name_b!r} contains white space, "
                       "which the pairs.txt format cannot hold")
    lines.append(f"{p.name_a}\t{p.index_a}\t{p.index_b}" if p.issame
                 else f"{p.name_a}\t{p.index_a}\t{p.name_b}\t{p.index_b}")
  return "\n".join(lines) + "\n"


def write_pairs(path: str | os.PathLike, pairs: list[lfw.Pair]) -> str:
  """Writes `format_pairs(pairs)` to `path` (parents created); returns the path."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(format_pairs(pairs), encoding="utf-8")
  return str(path)


def read_pairs(path: str | os.PathLike, listing: identity_folder.IdentityDataset
               ) -> tuple[list[lfw.Pair], np.ndarray]:
  """Pairs of an LFW-format file resolved against `listing`'s folder, and their folds [N].

  path_a/path_b become "<identity>/<file>" under `listing.root`. A View 1 style file (one
  block) is dealt into 10 balanced folds like pairsDevTest.txt. Raises ProtocolFormatError
  (via `lfw.read_pairs`) on a malformed file, ValueError "<file>:<line>: ..." on a pair
  naming an identity or image index the folder does not have.
  """
  files = _files_by_identity(listing)
  pairs = []
  for line, p in enumerate(lfw.read_pairs(path), start=2):
    for name, index in ((p.name_a, p.index_a), (p.name_b, p.index_b)):
      if name not in files:
        raise errors.DataError(f"{path}:{line}: identity {name!r} has no image folder "
                               f"under {listing.root}")
      if index > len(files[name]):
        raise errors.DataError(f"{path}:{line}: image {index} of {name!r}, but "
                               f"{listing.root / name} holds {len(files[name])} image files")
    pairs.append(dataclasses.replace(p, path_a=files[p.name_a][p.index_a - 1],
                                     path_b=files[p.name_b][p.index_b - 1]))
  folds = np.array([p.fold for p in pairs], np.int64)
  if len(np.unique(folds)) == 1:
    folds = lfw_eval.deal_folds(np.array([p.issame for p in pairs]))
  return pairs, folds


def _screened_pairs(root: pathlib.Path, listing, config, num_pairs: int, seed: int):
  """Draws pairs from the readable images of `root`: (pairs, folds, {rel: status} skipped,
  rels to re-encode)."""
  data = config.data
  dataset, report = image_check.screen_identity_folder(
      root, bad_images="skip", non_rgb="convert", small_identities="skip",
      max_image_pixels=data.get("max_image_pixels", image_check.DEFAULT_MAX_IMAGE_PIXELS),
      num_workers=data.get("check_workers"))
  dropped = set(report.skipped)
  skipped = {rel: status for status, rels in report.files.items() for rel in rels
             if rel in dropped}
  note = f" ({len(skipped)} unreadable files skipped)" if skipped else ""
  if dataset.num_classes < 2:
    raise errors.DataError(f"{root}: impostor pairs need 2 identities with readable images, "
                           f"found {dataset.num_classes} ({', '.join(dataset.class_names)}){note}")
  if dataset.class_counts().max() < 2:
    raise errors.DataError(f"{root}: genuine pairs need an identity with 2 or more readable "
                           f"images; all {dataset.num_classes} identities have one{note}")
  sampled = sample_pairs(dataset.labels, num_pairs, seed=seed)
  pairs = to_lfw_pairs(sampled, dataset.paths, listing)
  return pairs, sampled.folds, skipped, set(report.reencoded)


def _checked_file_pairs(root: pathlib.Path, listing, config, pairs_file):
  """Pairs of `pairs_file`, every image they name screened: a fixed pairs file cannot lose
  a pair quietly, so an unreadable image is an error naming it."""
  pairs, folds = read_pairs(pairs_file, listing)
  images = lfw.unique_images(pairs)
  statuses = image_check.check_images(
      [root / p for p in images],
      max_pixels=config.data.get("max_image_pixels", image_check.DEFAULT_MAX_IMAGE_PIXELS),
      num_workers=config.data.get("check_workers"))
  bad = [s for s in statuses if s.status in image_check.BAD_STATUSES]
  if bad:
    listed = "\n  ".join(f"{s.path} ({s.status}: {s.detail})" for s in bad[:10])
    raise errors.DataError(f"{len(bad)} image(s) named by {pairs_file} cannot be read:\n  {listed}")
  return pairs, folds, {}, {p for p, s in zip(images, statuses) if s.reencode}


@dataclasses.dataclass(frozen=True)
class IdentityFolderOptions:
  """How to evaluate an identity folder: which pairs, which settings, where to write.

  num_pairs, seed: the draw of `sample_pairs` over the folder's readable images.
  pairs_file: reuse these pairs (LFW format, see `read_pairs`) instead of drawing; their
    images must all be readable.
  distance, flip, subtract_mean, standardization: override the config's (None: keep).
  out_dir: where results go (default `<workdir>/eval`); write=False writes nothing.
  """
  num_pairs: int = 6000
  seed: int = 0
  pairs_file: str | os.PathLike | None = None
  distance: str | None = None
  flip: str | None = None
  subtract_mean: bool | None = None
  standardization: str | None = None
  out_dir: str | os.PathLike | None = None
  write: bool = True

  def eval_options(self, config: ml_collections.ConfigDict) -> lfw_eval.EvalOptions:
    return lfw_eval.EvalOptions.resolve(config, distance=self.distance, flip=self.flip,
                                        subtract_mean=self.subtract_mean,
                                        standardization=self.standardization)


def identity_pair_set(config: ml_collections.ConfigDict, root: pathlib.Path,
                      options: IdentityFolderOptions, listing=None):
  """(PairSet, [lfw.Pair], {file: why skipped}) of `options`' pairs of identity folder `root`:
  read from `options.pairs_file` (every image must be readable) or drawn from the readable
  images."""
  listing = listing or folder_listing(root)
  if options.pairs_file:
    pairs, folds, skipped, reencode = _checked_file_pairs(root, listing, config,
                                                          options.pairs_file)
  else:
    pairs, folds, skipped, reencode = _screened_pairs(root, listing, config, options.num_pairs,
                                                      options.seed)
  used = set(lfw.unique_images(pairs))
  pair_set = lfw_eval.PairSet.from_pairs(
      pairs, folds, lambda p: root / p,
      {p: image_check.rgb_png_bytes(root / p) for p in reencode & used})
  return pair_set, pairs, skipped


def evaluate_identity_folder(
    config: ml_collections.ConfigDict, folder: str | os.PathLike,
    options: IdentityFolderOptions = IdentityFolderOptions(), *, workdir: str | None = None,
    step: int | None = None, variables: dict | None = None,
    embedder: Embedder | None = None) -> lfw_eval.LfwEvalResult:
  """Scores a model on balanced pairs of `folder` (`<folder>/<identity>/<image>`), 10-fold.

  Args:
    config: the experiment config; `config.data`'s evaluation preprocessing applies, so set
      e.g. `data.source_crop=0` for a folder of already cropped faces.
    folder: the identity folder; unreadable files are skipped and listed in
      `result.skipped`.
    options: pairs, settings and output (`IdentityFolderOptions`).
    workdir, step, variables, embedder: the net, as for `lfw_eval.evaluate_lfw`.

  Writes `identity@<folder slug>[+<settings>]_<step>.json`, `_roc.png` and, for drawn pairs,
  `_pairs.txt` (reusable as `pairs_file`) to `options.out_dir` or `<workdir>/eval`
  (names: `results.identity_key`).
  """
  eval_options = options.eval_options(config)
  root = pathlib.Path(folder)
  listing = folder_listing(root)
  # Before screening, which opens every image: a missing checkpoint should not wait for it.
  embedder = lfw_eval.make_embedder(config, eval_options, workdir=workdir, step=step,
                                    variables=variables, embedder=embedder)
  pair_set, pairs, skipped = identity_pair_set(config, root, options, listing)
  pairs_file = options.pairs_file
  out = results_lib.output_dir(workdir, options.out_dir) if options.write else None
  key = results_lib.identity_key(config, root, embedder.step, **eval_options.key_settings())
  if out and not pairs_file:
    try:
      text = format_pairs(pairs)
    except ValueError as e:  # names with white space: evaluate anyway
      logging.warning("pairs not written: %s", e)
    else:
      pairs_file = key.paths(out).pairs
      if jax.process_index() == 0:
        epath.Path(out).mkdir(parents=True, exist_ok=True)
        epath.Path(pairs_file).write_text(text)
  result = lfw_eval.evaluate_pair_set(
      config, pair_set, embedder=embedder, options=eval_options, protocol=PROTOCOL,
      out_dir=out, key=key, title=f"{root.resolve().name}: {len(pairs)} pairs",
      image_root=str(root), pairs_file=str(pairs_file) if pairs_file else None, skipped=skipped)
  if skipped:
    logging.warning("skipped %d unreadable files under %s: %s", len(skipped), root,
                    list(skipped.items())[:10])
  return result


@registry.register("identity_pairs")
class IdentityPairsEvaluator(registry.Evaluator):
  """Balanced pairs of an identity folder (`evaluate_identity_folder`).

  Keyword arguments: folder (required), num_pairs, seed, pairs_file, and the settings
  distance, flip, subtract_mean, standardization (see `IdentityFolderOptions`).
  """

  def __init__(self, config, embedder, *, name, out_dir, folder: str | None = None,
               num_pairs: int = 6000, seed: int = 0, pairs_file: str | None = None,
               distance: str | None = None, flip: str | None = None,
               subtract_mean: bool | None = None, standardization: str | None = None):
    super().__init__(config, embedder, name=name, out_dir=out_dir)
    if not folder:
      raise errors.ConfigError(f"config.evals.{name}.folder: the identity folder to evaluate "
                               "is required")
    self.folder = folder
    self.options = IdentityFolderOptions(
        num_pairs=num_pairs, seed=seed, pairs_file=pairs_file, distance=distance, flip=flip,
        subtract_mean=subtract_mean, standardization=standardization, out_dir=out_dir,
        write=out_dir is not None)
    lfw_eval.resolve_for(config, name, dict(distance=distance, flip=flip,
                                            subtract_mean=subtract_mean,
                                            standardization=standardization))

  def _run(self, embedder):
    result = evaluate_identity_folder(self.config, self.folder, self.options, embedder=embedder)
    return result.scalars(), result

  def pair_set(self) -> lfw_eval.PairSet:
    return identity_pair_set(self.config, pathlib.Path(self.folder), self.options)[0]

  def preprocessing(self):
    return datasets.preprocessing(self.config.data, train=False)

  def settings_key(self, step) -> results_lib.ResultKey:
    return results_lib.ResultKey("identity_settings", step, results_lib.folder_slug(self.folder))
