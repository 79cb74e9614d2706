"""Run as a subprocess by train_test.py, with 4 simulated CPU devices.

Prints a JSON line comparing one train step on a 4-device mesh with the same
step on a 1-device mesh (same init, same global batch).
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # for the `configs` package
from configs import common, nn1  # noqa: E402
from facejax import optimizers, train  # noqa: E402
from facejax.losses import make_objective  # noqa: E402
from facejax.models import create_model  # noqa: E402


def run(devices, config, batch, steps=3):
  mesh = train.make_mesh(devices)
  model = create_model(config.model)
  objective = make_objective(config.loss, num_classes=config.num_identities,
                             feature_dim=model.embedding_dim)
  tx = optimizers.create_optimizer(config.optimizer, config.num_train_steps)
  state = train.create_train_state(config, model, tx, jax.random.key(0), objective)
  state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
  step = train.make_jitted_step(config, model, tx, mesh, objective)
  losses = []
  for _ in range(steps):
    state, metrics = step(state, train.shard_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
  # The head (optimizer-trained) and the centers (moved by their own rule)
  # must also agree across meshes.
  return jax.device_get({"params": state.params, "batch_stats": state.batch_stats,
                         "head": state.head, "loss_state": state.loss_state}), losses, metrics


def main():
  loss_name = sys.argv[1] if len(sys.argv) > 1 else "semi_hard"
  config = nn1.get_config("smoke")
  if loss_name == "center":
    # A weight large enough for the center term to move the gradients.
    config.loss = common.loss("center", center_weight=0.5, center_alpha=0.5)
  else:
    config.loss.name = loss_name  # the triplet losses and arcface read its `margin`
  config.model.batch_norm = len(sys.argv) > 2 and sys.argv[2] == "bn"
  # Plain SGD: Adam divides by sqrt(v), which turns float-rounding noise in
  # gradients that are mathematically ~0 into full learning-rate steps, so
  # the two meshes' params would differ by ~lr for reasons unrelated to
  # sharding.
  config.optimizer = common.optimizer("sgd", 0.05)
  rng = np.random.default_rng(0)
  b = config.batch_size
  batch = {"image": rng.normal(size=(b, 32, 32, 3)).astype(np.float32),
           "label": np.repeat(np.arange(config.num_identities), config.images_per_identity).astype(np.int32),
           "mask": np.ones(b, bool)}
  batch["mask"][-2:] = False  # padded rows must be ignored identically on both meshes
  assert jax.device_count() == 4
  steps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
  p4, l4, m4 = run(jax.devices(), config, batch, steps)
  p1, l1, m1 = run(jax.devices()[:1], config, batch, steps)
  diff_tree = jax.tree.map(lambda a, c: float(np.max(np.abs(a - c))), p4, p1)
  diffs = jax.tree.leaves(diff_tree)
  print(json.dumps({"losses_4": l4, "losses_1": l1, "max_param_diff": max(diffs),
                    "num_valid_4": float(m4.get("num_valid_triplets", m4.get("num_valid"))),
                    "num_valid_1": float(m1.get("num_valid_triplets", m1.get("num_valid"))),
                    "head_and_centers_diff": max(
                        jax.tree.leaves((diff_tree["head"], diff_tree["loss_state"])) or [0.0]),
                    "centers_moved": bool(np.abs(np.asarray(
                        p4["loss_state"].get("centers", {}).get("centers", np.zeros(1)))).max()
                                           > 0)}))


if __name__ == "__main__":
  main()
