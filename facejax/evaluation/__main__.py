"""Command-line evaluation of a checkpoint: the config's evaluators, or the ones named here.

  # Every evaluator of config.evals (e.g. lfw_view1 and lfw_view2), or those picked:
  python -m facejax.evaluation --config=configs/nn1.py:smoke --workdir=W [--step=N] \
      [--evals=lfw_view1,agedb]

  # Shortcuts, each run instead of config.evals (add --evals=... to run both):
  python -m facejax.evaluation --config=C --workdir=W --bin=/data/agedb_30.bin --bin=cfp_fp.bin
  python -m facejax.evaluation --config=C --workdir=W --ijb=/data/IJB_release/IJBC
  python -m facejax.evaluation --config=C --workdir=W --protocol=view1|view2|dev_test_10fold|dev_train
  python -m facejax.evaluation --config=C --workdir=W --identity_folder=DIR \
      [--num_pairs=6000 --pairs_seed=0 | --pairs_file=FILE]

Settings: --distance=euclidean|cosine, --flip=none|concat|average(|sum for .bin),
--subtract_mean, --standardization=fixed|prewhiten override the config's for every
evaluator run.

Each evaluator prints its summary (LFW-style ones also their per-fold table) and writes a
JSON and a ROC PNG to --out_dir or <workdir>/eval, named after what it measured
(`facejax.evaluation.results`): another folder or setting never replaces the
`lfw_<step>.json` the tools take their threshold from. A user error (no checkpoint,
missing data, an unknown evaluator or key) prints one line and exits with status 2.
"""

from absl import flags
from ml_collections import config_flags

from facejax import cli
from facejax.data.input_pipeline import STANDARDIZATIONS
from facejax.evaluation import registry
from facejax.evaluation import results as results_lib
from facejax.evaluation.lfw_eval import DISTANCES, PROTOCOLS
from facejax.inference import Embedder

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
flags.DEFINE_list("evals", None, "Names in config.evals to run (default: all of them, "
                  "unless a shortcut below is given).")
flags.DEFINE_multi_string("bin", [], "An insightface .bin verification set (repeatable).")
flags.DEFINE_string("ijb", None, "An IJB-B/IJB-C folder (meta/ and loose_crop/).")
flags.DEFINE_enum("protocol", None, PROTOCOLS, "LFW pairs protocol (view1 = dev_test: "
                  "threshold on DevTrain, scored on DevTest).")
flags.DEFINE_string("identity_folder", None,
                    "Evaluate on balanced pairs of this <dir>/<identity>/<image> tree.")
flags.DEFINE_integer("num_pairs", 6000, "Pairs to draw from --identity_folder (10 folds).")
flags.DEFINE_integer("pairs_seed", 0, "Seed of the --identity_folder pair draw.")
flags.DEFINE_string("pairs_file", None,
                    "Reuse these --identity_folder pairs (pairs.txt format) instead of drawing.")
flags.DEFINE_enum("distance", None, DISTANCES, "Override config.eval.distance.")
flags.DEFINE_enum("flip", None, ("none", "concat", "average", "sum"),
                  "Override config.eval.flip.")
flags.DEFINE_boolean("subtract_mean", None, "Override config.eval.subtract_mean.")
flags.DEFINE_enum("standardization", None, STANDARDIZATIONS,
                  "Override config.data.standardization: fixed (x-127.5)/128 or prewhiten.")
flags.DEFINE_string("out_dir", None, "Where to write JSON/PNG (default <workdir>/eval).")
config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def shortcut_specs() -> dict[str, dict]:
  """The evaluator specs that --bin, --ijb, --protocol and --identity_folder ask for."""
  specs = {}
  for path in FLAGS.bin:
    specs[f"bin_{len(specs)}"] = dict(type="verification_bin", path=path)
  if FLAGS.ijb:
    specs["ijb"] = dict(type="ijb", root=FLAGS.ijb)
  if FLAGS.protocol:
    specs[f"lfw_{FLAGS.protocol}"] = dict(type="lfw", protocol=FLAGS.protocol)
  if FLAGS.identity_folder:
    specs["identity_folder"] = dict(type="identity_pairs", folder=FLAGS.identity_folder,
                                    num_pairs=FLAGS.num_pairs, seed=FLAGS.pairs_seed,
                                    pairs_file=FLAGS.pairs_file)
  return specs


def _with_settings(spec: dict) -> dict:
  """`spec` with the command line's settings, for the evaluator types that take them."""
  cls = registry.types().get(spec.get("type"))
  if cls is None:
    return spec  # building it names the problem
  accepted = registry.accepted_keys(cls)
  flip = FLAGS.flip
  if flip == "sum" and spec["type"] != "verification_bin":
    flip = "average"  # the same rule under facejax's name
  given = dict(distance=FLAGS.distance, flip=flip, subtract_mean=FLAGS.subtract_mean,
               standardization=FLAGS.standardization)
  return {**spec, **{k: v for k, v in given.items() if v is not None and k in accepted}}


def main(argv):
  del argv
  config = FLAGS.config
  specs = shortcut_specs()
  if FLAGS.evals or not specs:
    specs = {**registry.chosen_specs(config, FLAGS.evals), **specs}
  out_dir = results_lib.output_dir(FLAGS.workdir, FLAGS.out_dir)
  evaluators = registry.build_specs({n: _with_settings(s) for n, s in specs.items()}, config,
                                    out_dir=out_dir)
  embedder = Embedder.from_workdir(config, FLAGS.workdir, FLAGS.step)
  for evaluator in evaluators.values():
    evaluator.run(embedder)
    result = evaluator.last_result
    if hasattr(result, "fold_table"):
      print(result.fold_table())
    print(evaluator.summary())
    skipped = getattr(result, "skipped", None)
    if skipped:
      shown = "\n  ".join(f"{path} ({why})" for path, why in list(skipped.items())[:20])
      more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
      print(f"skipped {len(skipped)} unreadable files:\n  {shown}{more}")
    written = [p for p in (getattr(result, "json_path", None), getattr(result, "roc_path", None),
                           getattr(result, "pairs_file", None)
                           if evaluator.type_name == "identity_pairs" else None) if p]
    if written:
      print(f"wrote {' and '.join(written)}")


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
