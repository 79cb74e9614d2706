r"""Everyday face tools on any checkpoint: the verb comes first.

  python -m facejax.tools embed INPUT --config=C --workdir=W [--step=N] --output=emb.npz \
      [--quantize=int8]
  python -m facejax.tools verify A.jpg B.jpg --config=C --workdir=W [--threshold=T]
  python -m facejax.tools identify --gallery=DIR --probes=P[,P2] --config=C --workdir=W
  python -m facejax.tools identify --split_from=DIR --unknown_fraction=0.2 --config=C --workdir=W
  python -m facejax.tools identify --gallery=G.npz --probes=P.npz [--workdir=W]
  python -m facejax.tools cluster INPUT --config=C --workdir=W --method=agglomerative|dbscan \
      --output=clusters.csv [--link_dir=D]
  python -m facejax.tools visualise tsne emb.npz --output=tsne.png
  python -m facejax.tools visualise roc W1/eval/lfw_800.json W2/eval/lfw_800.json --output=roc.png

INPUT: an image, a folder (recursive; an identity folder when its images lie
in per-person subfolders), or a list file (path[<TAB>label] per line).
`cluster` and `identify` (--gallery, --probes) also take `.npz` files from `embed`
(int8 ones too); with two files --config/--workdir are only needed for a threshold
that is not given. The two may come from different models (harmonic embeddings:
a v1 gallery searched with v2 probes); the threshold is then the probes' model's.
Thresholds default to the one calibrated on LFW in `<workdir>/eval/lfw_*.json`
(the config's LFW images and settings: `facejax.evaluation.results`). With --align,
the images where MTCNN found no face are counted and named. A user error (missing
file, no checkpoint, no calibration) prints one line and exits with status 2.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from facejax import checkpointing, cli, errors, quantization
from facejax.data import align
from facejax.distances import DISTANCES
from facejax.tools import cluster as cluster_lib
from facejax.tools import common, embed, identify, verify, visualise

VERBS = ("embed", "verify", "identify", "cluster", "visualise")

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file of the checkpoint.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/ (and eval/).")
flags.DEFINE_integer("step", None, "Checkpoint step (default: newest good).")
flags.DEFINE_string("output", None, "Output file: .npz (embed), .csv (identify, cluster), "
                    ".png (visualise).")
flags.DEFINE_enum("labels", "auto", common.LABEL_MODES, "How folder inputs are labelled.")
flags.DEFINE_integer("min_images", 1, "Identity folders: keep identities with >= this many.")
flags.DEFINE_integer("max_identities", None, "Identity folders: keep the first N by name.")
flags.DEFINE_string("people", None, "Identity folders: keep only the people of this people file "
                    "(e.g. LFW's peopleDevTest.txt).")
flags.DEFINE_boolean("align", False, "Align each image with MTCNN first (crop, 160 px, "
                     "margin 32) for unaligned photos.")
flags.DEFINE_integer("batch_size", None, "Images per net call (default: config.eval.batch_size).")
flags.DEFINE_float("threshold", None, "Decision threshold (default: calibrated on LFW).")
flags.DEFINE_enum("distance", None, list(DISTANCES), "Distance (default: the calibration's).")
flags.DEFINE_string("quantize", "none", "embed: 'int8' stores int8 codes of the unit "
                    "embeddings, one byte a dimension (facejax.quantization).")
flags.DEFINE_string("gallery", None, "identify: gallery identity folder.")
flags.DEFINE_list("probes", None, "identify: probe files, folders or list files.")
flags.DEFINE_string("split_from", None, "identify: build a seeded open-set gallery/probe split "
                    "from this identity folder instead of --gallery/--probes.")
flags.DEFINE_float("unknown_fraction", 0.2, "identify --split_from: identities held out.")
flags.DEFINE_integer("gallery_per_identity", 1, "identify --split_from: gallery images each.")
flags.DEFINE_integer("seed", 0, "Seed of the open-set split and of t-SNE.")
flags.DEFINE_integer("k", 5, "identify: identities listed per probe.")
flags.DEFINE_list("far_targets", ["0.01", "0.1"], "identify: FARs for DIR@FAR.")
flags.DEFINE_enum("method", "agglomerative", list(cluster_lib.METHODS), "cluster: algorithm.")
flags.DEFINE_integer("min_samples", 3, "cluster --method=dbscan: core point neighbourhood.")
flags.DEFINE_string("link_dir", None, "cluster: symlink faces into one folder per cluster.")
flags.DEFINE_integer("top_identities", 10, "visualise tsne: identities shown.")
flags.DEFINE_float("perplexity", 30.0, "visualise tsne: t-SNE perplexity.")
flags.DEFINE_boolean("log_x", False, "visualise roc: log-scale FPR axis.")


def _usage(message: str):
  raise app.UsageError(message + "\n\n" + __doc__)


def _model() -> common.FaceModel:
  if FLAGS.config is None or FLAGS.workdir is None:
    _usage("this verb needs --config and --workdir")
  spec = align.AlignSpec() if FLAGS.align else None
  return common.load_model(FLAGS.config, FLAGS.workdir, FLAGS.step, align_spec=spec)


def _calibration(workdir: str, step, config=None) -> common.Calibration:
  ev = config.eval if config is not None else None
  return common.calibration(workdir, step, threshold=FLAGS.threshold, distance=FLAGS.distance,
                            default_distance=ev.distance if ev else "euclidean",
                            default_flip=ev.flip if ev else "none", config=config)


def _images(sources, **kwargs) -> common.ImageList:
  return common.collect_many(sources, labels=FLAGS.labels, min_images=FLAGS.min_images,
                             max_identities=FLAGS.max_identities, people=FLAGS.people, **kwargs)


def run_embed(args):
  if len(args) != 1 or not FLAGS.output:
    _usage("embed: give one INPUT and --output=FILE.npz")
  quantization.check_quantization(FLAGS.quantize)  # before the images are embedded
  images = _images(args)
  model = _model()
  # Embed as the checkpoint's LFW evaluation did, so that a later `cluster
  # x.npz` or `identify` compares these embeddings with a threshold that was
  # calibrated on the same kind (flip, standardisation); else the config's.
  found = common.find_eval_json(model.workdir, model.step, config=model.config)
  cal = common.read_calibration(found) if found else None
  result = embed.embed_images(model, images, flip=cal.flip if cal else None,
                              standardization=cal.standardization if cal else None,
                              batch_size=FLAGS.batch_size)
  embed.save_npz(result, FLAGS.output, quantize=FLAGS.quantize)
  return result


def run_verify(args):
  if len(args) != 2:
    _usage("verify: give two image files")
  model = _model()
  cal = _calibration(model.workdir, model.step, model.config)
  return verify.verify(model, args[0], args[1], cal)


def run_identify(args):
  if args:
    _usage(f"identify takes --gallery/--probes or --split_from, not {args}")
  far_targets = [float(f) for f in FLAGS.far_targets]
  if FLAGS.split_from:
    images = _images([FLAGS.split_from])
    split = identify.open_set_split(images, unknown_fraction=FLAGS.unknown_fraction,
                                    gallery_per_identity=FLAGS.gallery_per_identity,
                                    seed=FLAGS.seed)
    print(split.summary())
    gallery, probes = split.gallery, split.probes
  elif FLAGS.gallery and FLAGS.probes and (
      FLAGS.gallery.endswith(".npz") or any(x.endswith(".npz") for x in FLAGS.probes)):
    result = _identify_embedded(far_targets)
    if FLAGS.output:
      result.write_csv(FLAGS.output)
    return result
  elif FLAGS.gallery and FLAGS.probes:
    gallery = common.collect_images(FLAGS.gallery, labels="subfolder")
    probes = _images(FLAGS.probes)
  else:
    _usage("identify: give --gallery and --probes, or --split_from")
  model = _model()
  cal = _calibration(model.workdir, model.step, model.config)
  result = identify.identify(model, gallery, probes, cal, k=FLAGS.k, far_targets=far_targets,
                             batch_size=FLAGS.batch_size)
  if FLAGS.output:
    result.write_csv(FLAGS.output)
  return result


def _warn_unlike_calibration(embedded: dict, cal) -> None:
  """One warning line per setting (flip, standardisation) on which the embeddings
  `embedded` {name: embed.EmbedResult} differ from each other or from the threshold's
  calibration: the threshold then measures other distances."""
  for what in ("flip", "standardization"):
    used = {name: getattr(data, what) for name, data in embedded.items()}
    calibrated = getattr(cal, what)
    if len(set(used.values())) > 1 or (calibrated is not None
                                       and calibrated not in used.values()):
      sides = ", ".join(f"{name} {what}={value}" for name, value in used.items())
      print(f"warning: {sides}, threshold calibrated with {what}={calibrated}",
            file=sys.stderr)


def _identify_embedded(far_targets):
  """identify with an embeddings file on one side or both (the other side is embedded
  as the file was: same flip and standardisation)."""
  if len(FLAGS.probes) > 1 and any(x.endswith(".npz") for x in FLAGS.probes):
    _usage("identify: give one probes .npz, or image sources")
  gallery = embed.load_npz(FLAGS.gallery) if FLAGS.gallery.endswith(".npz") else None
  probes = embed.load_npz(FLAGS.probes[0]) if FLAGS.probes[0].endswith(".npz") else None
  model = None
  if gallery is None or probes is None:
    model = _model()
    made = gallery or probes
    how = dict(flip=made.flip, standardization=made.standardization,
               batch_size=FLAGS.batch_size)
    if gallery is None:
      gallery = embed.embed_images(model, common.collect_images(FLAGS.gallery,
                                                                labels="subfolder"), **how)
    else:
      probes = embed.embed_images(model, _images(FLAGS.probes), **how)
  if model is not None:
    cal = _calibration(model.workdir, model.step, model.config)
  else:
    cal = _calibration(FLAGS.workdir or probes.checkpoint,
                       FLAGS.step if FLAGS.step is not None else probes.step, FLAGS.config)
  if (gallery.checkpoint, gallery.step) != (probes.checkpoint, probes.step):
    print(f"gallery embedded by {gallery.checkpoint} step {gallery.step}, probes by "
          f"{probes.checkpoint} step {probes.step}: a cross-model search")
  _warn_unlike_calibration({"gallery": gallery, "probes": probes}, cal)
  return identify.identify_embedded(
      gallery.names, gallery.labels, gallery.embeddings, probes.names, probes.labels,
      probes.embeddings, cal, k=FLAGS.k, far_targets=far_targets,
      skipped={**gallery.skipped, **probes.skipped}, no_face=gallery.no_face + probes.no_face,
      probes_source=FLAGS.probes[0])


def run_cluster(args):
  if len(args) != 1:
    _usage("cluster: give one INPUT (folder, list file or embeddings .npz)")
  if args[0].endswith(".npz"):
    data = embed.load_npz(args[0])
    workdir = FLAGS.workdir or data.checkpoint
    step = FLAGS.step if FLAGS.step is not None else data.step
    cal = _calibration(workdir, step, FLAGS.config)
    _warn_unlike_calibration({args[0]: data}, cal)
  else:
    images = _images(args)
    model = _model()
    cal = _calibration(model.workdir, model.step, model.config)
    data = embed.embed_images(model, images, flip=cal.flip, standardization=cal.standardization,
                              batch_size=FLAGS.batch_size)
  result = cluster_lib.cluster(data.names, data.labels, data.embeddings, cal,
                               method=FLAGS.method, min_samples=FLAGS.min_samples,
                               skipped=data.skipped, no_face=data.no_face)
  if FLAGS.output:
    cluster_lib.write_csv(result, FLAGS.output)
  if FLAGS.link_dir:
    cluster_lib.link_clusters(result, FLAGS.link_dir)
  return result


def run_visualise(args):
  if len(args) < 2 or args[0] not in ("tsne", "roc") or not FLAGS.output:
    _usage("visualise: `tsne EMB.npz` or `roc EVAL.json [EVAL.json ...]`, with --output=FILE.png")
  if args[0] == "tsne":
    if len(args) != 2:
      _usage("visualise tsne: give one embeddings .npz")
    return visualise.tsne_plot(args[1], FLAGS.output, top_identities=FLAGS.top_identities,
                               perplexity=FLAGS.perplexity, seed=FLAGS.seed)
  return visualise.roc_overlay(args[1:], FLAGS.output, log_x=FLAGS.log_x)


RUNNERS = {"embed": run_embed, "verify": run_verify, "identify": run_identify,
           "cluster": run_cluster, "visualise": run_visualise}


def run_verb(argv):
  """argv = [program, verb, positional...] with the flags parsed -> the verb's result."""
  if len(argv) < 2 or argv[1] not in VERBS:
    _usage(f"the first argument must be a verb: one of {VERBS}")
  result = RUNNERS[argv[1]](argv[2:])
  print(result.summary())
  return result


def main(argv):
  try:
    run_verb(argv)  # app.run exits with main's return value: return nothing
  except checkpointing.IncompatibleCheckpointError as e:
    # A checkpoint of another net is the user's to fix: one line naming both nets.
    raise errors.CheckpointError(str(e)) from None


def run():
  cli.run(main)


if __name__ == "__main__":
  run()
