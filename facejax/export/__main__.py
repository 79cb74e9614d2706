r"""python -m facejax.export --config=C --workdir=W --format=saved_model|tflite|onnx --output=PATH

Writes the newest good checkpoint of W (or --step) as a model that takes uint8 aligned
crops and returns unit embeddings, and PATH.json beside it (`facejax.export`). A bad
request (no checkpoint, unknown format, PATH exists without --overwrite, no ONNX
converter) prints one line and exits with status 2.
"""

import json

from absl import flags, logging
from ml_collections import config_flags

from facejax import cli, export, inference

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file of the checkpoint.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/ (and eval/).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: newest good).")
# Strings, not enums: export_model names a bad value in one `error:` line (exit status 2).
flags.DEFINE_string("format", None, f"What to write: one of {export.FORMATS}.")
flags.DEFINE_string("output", None, "The model's path: a folder for saved_model, a file else.")
flags.DEFINE_string("flip", None, f"Flip fusion inside the model, one of {inference.FLIPS} "
                    "(default: config.eval.flip, what the evaluator uses).")
flags.DEFINE_boolean("overwrite", False, "Replace an existing output and its JSON.")
flags.mark_flags_as_required(["config", "workdir", "format", "output"])


def main(argv):
  del argv
  info = export.export_model(FLAGS.config, FLAGS.workdir, FLAGS.format, FLAGS.output,
                             step=FLAGS.step, flip=FLAGS.flip, overwrite=FLAGS.overwrite)
  logging.info("wrote %s and %s", FLAGS.output, export.sidecar_path(FLAGS.output))
  print(json.dumps({"output": FLAGS.output, "net": info["net"], "step": info["step"],
                    "input": info["input"]["shape"], "output_dim": info["output"]["shape"][1],
                    "flip": info["inside_the_model"]["flip"]}))


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
