"""configs/ as layers: each experiment differs from its base only in the keys it states.

The keys an experiment states are read from its source (and from the helpers of
configs/common.py and the sibling configs it calls), without running it; the
keys it differs in are found by comparing its config, for every variant, with
the plain base built from the same model, optimizer and loss.
"""

import ast
import importlib
import inspect
import re

import ml_collections
import pytest

import configs
from configs import common, insightface

# Keyword arguments of common.base and the keys they set.
_BASE_ARGS = {"model": "model", "optimizer": "optimizer", "loss": "loss",
              "image_size": "data.image_size", "resize_size": "data.resize_size"}


def _dotted(node: ast.AST) -> str | None:
  """`c.data.image_size` -> "data.image_size" (None for anything not rooted at `c`)."""
  parts = []
  while isinstance(node, ast.Attribute):
    parts.append(node.attr)
    node = node.value
  if isinstance(node, ast.Name) and node.id == "c":
    return ".".join(reversed(parts))
  return None


def _stated_keys(fn) -> set[str]:
  """Dotted keys `fn` assigns to `c`, updates, or hands to base/helpers (recursively)."""
  keys = set()
  tree = ast.parse(inspect.getsource(inspect.getmodule(fn)))
  body = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == fn.__name__)
  for node in ast.walk(body):
    if isinstance(node, ast.Delete):  # del c.evals["lfw_view2"]
      for t in node.targets:
        if isinstance(t, ast.Subscript) and _dotted(t.value) and isinstance(t.slice, ast.Constant):
          keys.add(f"{_dotted(t.value)}.{t.slice.value}")
    elif isinstance(node, (ast.Assign, ast.AugAssign)):
      targets = node.targets if isinstance(node, ast.Assign) else [node.target]
      for t in targets:
        for e in (t.elts if isinstance(t, ast.Tuple) else [t]):
          if _dotted(e):
            keys.add(_dotted(e))
    elif isinstance(node, ast.Call):
      func = node.func
      helper = (func.id if isinstance(func, ast.Name) else
                func.attr if isinstance(func.value, ast.Name) and func.value.id == "common"
                else None)
      if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
          and func.value.id == "insightface"):
        keys |= _stated_keys(getattr(insightface, func.attr))  # the RecordIO recipes' base
      elif helper == "base":
        keys |= {_BASE_ARGS[k.arg] for k in node.keywords}
      elif helper in ("smoke", "facenet_inception", "smoke_evals"):
        keys |= _stated_keys(getattr(common, helper))
      elif isinstance(func, ast.Attribute) and func.attr == "update" and _dotted(func.value):
        keys |= {f"{_dotted(func.value)}.{k.arg}" for k in node.keywords}
      elif isinstance(func, ast.Attribute) and func.attr == "get_config":
        keys |= _stated_keys(getattr(configs, func.value.id).get_config)  # a sibling config
  return keys


def _flat(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _variants(module) -> list[str | None]:
  block = module.__doc__.split("Variants (", 1)[1].split("\n\n", 1)[0]
  return [None if v == "(none)" else v for v in re.findall(r"^  (\(none\)|\w+)  ", block, re.M)]


@pytest.mark.parametrize("name", configs.EXPERIMENTS)
def test_experiment_differs_from_its_base_only_in_what_it_states(name):
  module = importlib.import_module(f"configs.{name}")
  stated = _stated_keys(module.get_config)
  if stated & {"num_identities", "images_per_identity"}:
    stated.add("batch_size")  # the base's batch_size is a reference to P x K
  assert stated, name
  for variant in _variants(module):
    c = module.get_config(variant)
    plain = common.base(model=c.model.to_dict(), optimizer=c.optimizer, loss=c.loss.to_dict(),
                        image_size=c.data.image_size, resize_size=c.data.resize_size)
    new, old = _flat(c.to_dict()), _flat(plain.to_dict())
    is_stated = lambda k: any(k == s or k.startswith(s + ".") for s in stated)
    # Keys only an experiment adds or removes (an evaluator of its own) must be stated too.
    assert not {k for k in set(new) ^ set(old) if not is_stated(k)}, (name, variant)
    differing = {k for k in set(new) & set(old) if new[k] != old[k]}
    unstated = {k for k in differing if not is_stated(k)}
    assert not unstated, f"configs/{name}.py:{variant or ''} differs from the base in {unstated}"


def test_the_helper_sees_assignments_updates_and_helpers():
  # A hand-worked case: the keys nn4_small2_center states, through its sibling.
  stated = _stated_keys(configs.nn4_small2_center.get_config)
  assert {"data.sampling", "loss", "optimizer", "batch_size", "data.min_images_per_identity",
          "num_identities", "images_per_identity", "evals.lfw_view1.every_steps"} <= stated
  assert {"model", "data.source_crop", "num_train_steps", "data.max_identities"} <= stated


def test_unknown_variant_names_the_file_and_the_variants():
  with pytest.raises(ValueError, match=r"configs/nn1.py: unknown variant 'cpuu'.*'cpu'"):
    configs.get_config("nn1:cpuu")


def test_base_is_locked_and_batch_follows_p_x_k():
  c = configs.get_config("nn1")
  with pytest.raises(AttributeError, match='Did you mean "random_flip"'):
    c.data.random_flp = True
  c.num_identities = 10
  assert c.batch_size == 10 * c.images_per_identity  # a reference, not a copy
  c = configs.get_config("sphereface20")
  c.num_identities = 10
  assert c.batch_size == 256  # shuffled batches state their own size
  assert isinstance(c.optimizer, ml_collections.ConfigDict) and c.optimizer.name == "sgd"
