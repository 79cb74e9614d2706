"""Open-set identification of an identity folder as an evaluator (`type="open_set"`).

  c.evals.lfw_open_set = dict(type="open_set", folder="/data/lfw_mtcnn_160",
                              people="/data/lfw/peopleDevTest.txt", min_images=5)

The tools' protocol (`facejax.tools.identify`): a seeded split puts `unknown_fraction` of
the identities (with at least `min_images` images) out of the gallery, and
`gallery_per_identity` images of each other identity in it; every other image is a probe.
Reported: rank-k accuracy of the known probes (closed set, CMC) and DIR@FAR (detection
and identification rate of the known probes at the threshold that lets the fraction FAR
of the unknown probes through), for each target FAR; DIR and FAR at `threshold` when one
is given. Files are embedded once each by `Embedder.embed_files` (Pillow).
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
from etils import epath

from facejax import errors
from facejax.evaluation import registry
from facejax.evaluation import results as results_lib
from facejax.tools import common, identify


@dataclasses.dataclass(frozen=True, eq=False)
class OpenSetResult:
  folder: str
  step: int | None
  split: str
  metrics: identify.OpenSetMetrics
  skipped: dict[str, str]
  json_path: str | None = None

  def scalars(self) -> dict[str, float]:
    m = self.metrics
    out = {f"rank{k}": v for k, v in m.rank_accuracy.items()}
    out.update({f"dir@far={f:g}": v for f, v in m.dir_at_far.items()})
    if not math.isinf(m.threshold):
      out.update(dir=m.dir_at_threshold, far=m.far_at_threshold)
    return out

  def summary(self) -> str:
    return f"open set on {self.folder}: {self.split}\n{self.metrics.summary()}"


@registry.register("open_set")
class OpenSetEvaluator(registry.Evaluator):
  """Open-set identification (module docstring).

  Keyword arguments: folder (required), people (a people file or None), min_images,
  max_identities, unknown_fraction, gallery_per_identity, seed, far_targets, threshold
  (None: DIR at the FAR targets only), distance and flip (default config.eval). Ranks 1
  and 5 are reported.
  """

  def __init__(self, config, embedder, *, name, out_dir, folder: str | None = None,
               people: str | None = None, min_images: int = 2,
               max_identities: int | None = None, unknown_fraction: float = 0.2,
               gallery_per_identity: int = 1, seed: int = 0,
               far_targets: tuple = (0.01, 0.1), threshold: float | None = None,
               distance: str | None = None, flip: str | None = None):
    super().__init__(config, embedder, name=name, out_dir=out_dir)
    if not folder:
      raise errors.ConfigError(f"config.evals.{name}.folder: the identity folder is required")
    if not 0 <= unknown_fraction < 1:
      raise errors.ConfigError(f"config.evals.{name}.unknown_fraction={unknown_fraction!r}: "
                               "must be in [0, 1)")
    if min_images < gallery_per_identity + 1:
      raise errors.ConfigError(f"config.evals.{name}.min_images={min_images!r}: a known "
                               f"identity needs gallery_per_identity + 1 = "
                               f"{gallery_per_identity + 1} images")
    from facejax.evaluation import lfw_eval  # pylint: disable=import-outside-toplevel
    options = lfw_eval.resolve_for(config, name, dict(distance=distance, flip=flip))
    self.distance, self.flip = options.distance, options.flip
    self.folder, self.people = folder, people
    self.collect = dict(min_images=min_images, max_identities=max_identities)
    self.split_args = dict(unknown_fraction=unknown_fraction,
                           gallery_per_identity=gallery_per_identity, seed=seed)
    self.far_targets = tuple(far_targets)
    self.threshold = math.inf if threshold is None else float(threshold)

  def _run(self, embedder):
    images = common.collect_images(self.folder, labels="subfolder", people=self.people,
                                   **self.collect)
    split = identify.open_set_split(images, **self.split_args)
    embedder = embedder.replace(flip=self.flip)
    gallery = embedder.embed_files(split.gallery.paths, desc=f"{self.name} gallery")
    probes = embedder.embed_files(split.probes.paths, desc=f"{self.name} probes")
    label_of = dict(zip(split.gallery.paths + split.probes.paths,
                        split.gallery.labels + split.probes.labels))
    g_labels = [label_of[p] for p in gallery.paths]
    p_labels = [label_of[p] for p in probes.paths]
    calibration = common.Calibration(threshold=self.threshold, distance=self.distance,
                                     flip=self.flip, source=f"config.evals.{self.name}")
    # A known identity whose gallery images all failed is scored as unknown, as the tools do.
    *_, metrics = identify.identify_embeddings(
        gallery.embeddings, g_labels, probes.embeddings, p_labels, calibration,
        far_targets=self.far_targets)
    if metrics is None:
      raise errors.DataError(f"{self.folder}: no labelled probe could be embedded")
    result = OpenSetResult(folder=self.folder, step=embedder.step, split=split.summary(),
                           metrics=metrics, skipped={**gallery.skipped, **probes.skipped})
    if self.out_dir:
      key = results_lib.ResultKey("open_set", embedder.step, results_lib.folder_slug(self.folder))
      result = dataclasses.replace(result, json_path=key.paths(self.out_dir).json)
      if jax.process_index() == 0:
        epath.Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        epath.Path(result.json_path).write_text(json.dumps(
            {"folder": self.folder, "step": embedder.step, "split": result.split,
             **result.scalars(), "metrics": dataclasses.asdict(metrics),
             "skipped": result.skipped}, indent=1, default=str))
    return result.scalars(), result
