"""LFW verification of a facejax checkpoint, separate from the trainer.

`evaluate_lfw` embeds every image that the chosen pairs file names exactly
once (batched, jitted, sharded over the device mesh), computes pair distances
and scores them with `facejax.evaluation.metrics` (threshold chosen on the
other folds). Results go to `<workdir>/eval/lfw_<step>.json` (View 2) or
`lfw_<protocol>_<step>.json`, with a ROC plot beside them.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from etils import epath
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from facejax import checkpointing
from facejax.data import datasets, input_pipeline, lfw
from facejax.evaluation import metrics as metrics_lib
from facejax.models import create_model

PROTOCOLS = ("view2", "dev_test", "dev_train")
DISTANCES = ("euclidean", "cosine")
# `embed_table` treats any flip other than "none"/"concat" as "average", so the
# config checks hold a misspelt flip to this list.
FLIPS = ("none", "concat", "average")


@dataclasses.dataclass(frozen=True)
class LfwEvalResult:
  """What a notebook gets back from `evaluate_lfw`."""
  protocol: str
  step: int | None
  distance: str
  flip: str
  subtract_mean: bool
  num_pairs: int
  num_images: int
  verification: metrics_lib.VerificationResult
  json_path: str | None
  roc_path: str | None

  @property
  def accuracy(self) -> float:
    return self.verification.accuracy_mean

  def scalars(self) -> dict[str, float]:
    v = self.verification
    return {"accuracy": v.accuracy_mean, "accuracy_std": v.accuracy_std, "val": v.val_mean,
            "far": v.far_mean, "auc": v.auc, "eer": v.eer, "threshold": v.best_threshold}

  def summary(self) -> str:
    v = self.verification
    return (f"LFW {self.protocol} ({self.num_pairs} pairs, {self.distance}, flip={self.flip}): "
            f"accuracy {v.accuracy_mean:.4f} ± {v.accuracy_std:.4f}, "
            f"VAL {v.val_mean:.4f} ± {v.val_std:.4f} @ FAR {v.far_mean:.5f}, "
            f"AUC {v.auc:.4f}, EER {v.eer:.4f}")

  def to_dict(self) -> dict[str, Any]:
    d = {k: getattr(self, k) for k in ("protocol", "step", "distance", "flip", "subtract_mean",
                                        "num_pairs", "num_images")}
    d.update(self.scalars())
    d["verification"] = self.verification.to_dict()
    return d


def load_pairs(root, protocol: str) -> tuple[list[lfw.Pair], np.ndarray]:
  """Pairs of `protocol` and their fold index [N] int.

  View 2 keeps the file's ten folds. View 1 files are one block of N matched
  then N mismatched pairs, so consecutive blocks would hold one class only;
  we deal each half round-robin into 10 folds (N/10 same + N/10 different).
  """
  if protocol == "view2":
    pairs = lfw.view2_pairs(root)
    return pairs, np.array([p.fold for p in pairs])
  if protocol in ("dev_test", "dev_train"):
    pairs = lfw.view1_pairs(root, protocol.split("_")[1])
    folds = np.zeros(len(pairs), int)
    for same in (True, False):
      idx = np.flatnonzero([p.issame == same for p in pairs])
      folds[idx] = np.arange(len(idx)) * 10 // len(idx)
    return pairs, folds
  raise ValueError(f"protocol={protocol!r}: choose one of {PROTOCOLS}")


def restore_model_vars(config: ml_collections.ConfigDict, workdir: str, step: int | None,
                       model=None):
  """Restores {"params", "batch_stats"} of `step` (default: newest good) from `workdir`.

  Refuses (IncompatibleCheckpointError) a checkpoint of another net or
  embedding size, naming both. With no `step`, a damaged newest step is
  skipped with a warning; an explicitly asked-for damaged step is an error.
  """
  ckpt_dir = checkpointing.checkpoint_dir(workdir)
  manager = checkpointing.make_manager(workdir, read_only=True)
  if not manager.all_steps():
    raise FileNotFoundError(
        f"no checkpoint in {ckpt_dir}: train first with "
        f"`python -m facejax.main --config=... --workdir={workdir}` or pass another --workdir")
  if step is not None and step not in manager.all_steps():
    raise FileNotFoundError(f"checkpoint step {step} not in {ckpt_dir}"
                            f" (available: {sorted(manager.all_steps())})")
  model = model or create_model(config.model)
  h, w = datasets.hw(config.data.image_size)
  target = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, h, w, 3)), train=False))
  target = {"params": target["params"], "batch_stats": target.get("batch_stats", {})}
  if step is None:
    step, _, model_vars, _ = checkpointing.restore_latest_good(manager, workdir, config, target,
                                                               quarantine=False)
  else:
    _, model_vars, _ = checkpointing.restore_verified(manager, step, config, target, None,
                                                      f"{ckpt_dir}/{step}")
  manager.close()
  return model_vars, step


def embed_table(model, variables, table: input_pipeline.ImageTable,
                prep: input_pipeline.Preprocessing, batch_size: int, flip: str = "none",
                mesh: Mesh | None = None) -> np.ndarray:
  """Embeds every image of `table` -> [N, D] float32 (or [N, 2D] with flip="concat").

  In a multi-process run each process embeds every image on its own devices
  (evaluation is not the hot path, and no cross-process gather is needed);
  the trainer lets process 0 alone write the results.
  """
  mesh = mesh or Mesh(np.asarray(jax.local_devices()), ("data",))
  variables = jax.tree.map(
      lambda x: np.asarray(x.addressable_data(0))
      if isinstance(x, jax.Array) and not x.is_fully_addressable else x, variables)
  if batch_size % mesh.size:
    batch_size += mesh.size - batch_size % mesh.size
  variables = {"params": variables["params"],
               **({"batch_stats": variables["batch_stats"]} if jax.tree.leaves(variables.get("batch_stats", {})) else {})}

  @jax.jit
  def embed(v, x):
    e = model.apply(v, x, train=False)
    if flip == "none":
      return e
    ef = model.apply(v, x[:, :, ::-1, :], train=False)
    if flip == "concat":
      return jnp.concatenate([e, ef], -1)
    return e + ef  # "average": renormalised by the distance function

  sharding = NamedSharding(mesh, P("data"))
  variables = jax.device_put(variables, NamedSharding(mesh, P()))
  out = []
  for images, valid in input_pipeline.eval_batches(table, prep, batch_size):
    e = embed(variables, jax.device_put(images, sharding))
    out.append(np.asarray(e)[:valid])
  return np.concatenate(out).astype(np.float32)


def pair_distances(emb_a: np.ndarray, emb_b: np.ndarray, distance: str) -> np.ndarray:
  """[N, D] x [N, D] -> [N] distances of L2-renormalised embeddings.

  "euclidean": squared L2, in [0, 4] (FaceNet). "cosine": 1 - cos, in [0, 2].
  """
  a = emb_a / np.maximum(np.linalg.norm(emb_a, axis=1, keepdims=True), 1e-12)
  b = emb_b / np.maximum(np.linalg.norm(emb_b, axis=1, keepdims=True), 1e-12)
  if distance == "euclidean":
    return np.sum(np.square(a - b), axis=1)
  if distance == "cosine":
    return 1.0 - np.sum(a * b, axis=1)
  raise ValueError(f"distance={distance!r}: use 'euclidean' or 'cosine'")


def fold_distances(emb_a, emb_b, folds, distance, subtract_mean) -> np.ndarray:
  """Distances, optionally after subtracting the training folds' mean embedding.

  With `subtract_mean`, the pairs of fold k are compared after removing the
  mean embedding of the other folds (davidsandberg's option), so the test
  fold never informs its own centring.
  """
  if not subtract_mean:
    return pair_distances(emb_a, emb_b, distance)
  out = np.empty(len(folds), np.float64)
  for k in np.unique(folds):
    train = folds != k
    mean = np.concatenate([emb_a[train], emb_b[train]]).mean(0)
    test = folds == k
    out[test] = pair_distances(emb_a[test] - mean, emb_b[test] - mean, distance)
  return out


def evaluate_lfw(config: ml_collections.ConfigDict, *, workdir: str | None = None,
                 step: int | None = None, variables: dict | None = None,
                 protocol: str = "view2", distance: str | None = None, flip: str | None = None,
                 subtract_mean: bool | None = None, out_dir: str | None = None,
                 write: bool = True) -> LfwEvalResult:
  """Scores a model on LFW pairs with the 10-fold protocol.

  Args:
    config: the experiment config (model, data, eval sections).
    workdir: where checkpoints live; results go to `<workdir>/eval` unless `out_dir`.
    step: checkpoint step to restore (default: latest). Ignored with `variables`.
    variables: {"params", "batch_stats"} already in memory (e.g. from the trainer).
    protocol: "view2" (pairs.txt, 10 folds), "dev_test" or "dev_train" (View 1).
    distance, flip, subtract_mean: override `config.eval.*` ("euclidean"|"cosine",
      "none"|"concat"|"average", bool).
  """
  ev = config.eval
  distance = distance or ev.distance
  flip = flip or ev.flip
  subtract_mean = ev.subtract_mean if subtract_mean is None else subtract_mean
  model = create_model(config.model)
  if variables is None:
    if workdir is None:
      raise ValueError("evaluate_lfw needs `workdir` (to restore a checkpoint) or `variables`")
    variables, step = restore_model_vars(config, workdir, step, model)
  root = datasets.lfw_root(config.data)
  pairs, folds = load_pairs(root, protocol)
  image_root = datasets.lfw_image_root(config.data)
  lfw.check_images_exist(image_root, pairs)
  images = lfw.unique_images(pairs)
  table = input_pipeline.ImageTable([str(lfw.image_path(image_root, p)) for p in images])
  emb = embed_table(model, variables, table, datasets.preprocessing(config.data, train=False),
                    ev.batch_size, flip)
  row = {p: i for i, p in enumerate(images)}
  ia = np.array([row[p.path_a] for p in pairs])
  ib = np.array([row[p.path_b] for p in pairs])
  issame = np.array([p.issame for p in pairs])
  dist = fold_distances(emb[ia], emb[ib], folds, distance, subtract_mean)
  verification = metrics_lib.evaluate_verification(dist, issame, folds=folds,
                                                   far_target=ev.far_target)
  json_path = roc_path = None
  if write and (out_dir or workdir):
    out_dir = str(out_dir or checkpointing.workdir_path(workdir) / "eval")
    epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
    tag = f"{step}" if step is not None else "latest"
    stem = f"lfw_{tag}" if protocol == "view2" else f"lfw_{protocol}_{tag}"
    json_path = os.path.join(out_dir, stem + ".json")
    roc_path = os.path.join(out_dir, stem + "_roc.png")
  result = LfwEvalResult(protocol=protocol, step=step, distance=distance, flip=flip,
                         subtract_mean=subtract_mean, num_pairs=len(pairs),
                         num_images=len(images), verification=verification,
                         json_path=json_path, roc_path=roc_path)
  if json_path and jax.process_index() == 0:
    epath.Path(json_path).write_text(json.dumps(result.to_dict(), indent=1))
    metrics_lib.plot_roc({f"step {step}": (verification.roc_fpr, verification.roc_tpr)},
                         roc_path, title=f"LFW {protocol}")
  return result
