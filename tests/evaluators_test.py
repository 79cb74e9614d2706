"""The evaluator registry: schedules, the ablation of any pair evaluator, open-set
identification against brute force, and a training run that logs LFW View 1, a .bin and an
identity folder to TensorBoard on schedule."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax import errors
from facejax.data import verification_bin
from facejax.evaluation import registry
from facejax.inference import Embedder
from facejax.models import create_model
from facejax.tools import identify
from facejax.tools.common import collect_images


def test_schedule():
  spec = dict(type="lfw", every_steps=3, at_end=False)
  assert [s for s in range(1, 10) if registry.is_due(spec, s, last=False)] == [3, 6, 9]
  assert registry.is_due(spec, 9, last=True) and not registry.is_due(spec, 10, last=True)
  assert registry.is_due(dict(type="lfw", every_steps=0), 5, last=True)  # at_end: default True
  assert not registry.is_due(dict(type="lfw", every_steps=0), 5, last=False)


def test_every_type_names_its_unknown_keys(smoke_config):
  specs = {"lfw": {}, "identity_pairs": dict(folder="x"), "verification_bin": dict(path="x"),
           "ijb": dict(root="x"), "open_set": dict(folder="x"), "ablation": dict(of="lfw_dev_test")}
  assert set(specs) == set(registry.types())
  for type_name, kwargs in specs.items():
    registry.build("e", dict(type=type_name, **kwargs), smoke_config)  # builds without data
    with pytest.raises(errors.ConfigError, match=r"config.evals.e.bogus: unknown key"):
      registry.build("e", dict(type=type_name, bogus=1, **kwargs), smoke_config)


def test_ablation_names_its_table_after_the_pairs(smoke_config, tmp_path):
  """Each pair evaluator names the ablation table of its pairs; for LFW, the same name as
  `python -m facejax.evaluation.ablation` writes (`results.ablation_key`)."""
  from facejax.evaluation import results  # pylint: disable=import-outside-toplevel
  c = smoke_config
  stem = lambda of: registry.build("a", dict(type="ablation", of=of), c).inner.settings_key(3).stem
  assert stem(dict(type="lfw", protocol="dev_test")) == "lfw_view1_settings_3"
  assert stem("lfw_dev_test") == results.ablation_key(c, "dev_test_10fold", 3).stem
  folder = results.folder_slug(tmp_path)
  assert stem(dict(type="verification_bin", path=str(tmp_path / "agedb_30.bin"))) == \
      f"bin-agedb_30_settings@{folder}_3"
  assert stem(dict(type="identity_pairs", folder=str(tmp_path))) == \
      f"identity_settings@{folder}_3"
  for name in ("lfw_view1_settings_3.json", f"bin-agedb_30_settings@{folder}_3.json"):
    assert results.ResultKey.parse(name).stem + ".json" == name


@pytest.fixture(scope="module")
def embedder(lfw_root):
  from configs import nn1
  c = nn1.get_config("smoke")
  c.data.data_dir = str(lfw_root.parent)
  size = c.data.image_size
  v = create_model(c.model).init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
  return Embedder.from_variables(c, v, batch_size=32, step=2)


def _people(lfw_root, n, per_person):
  return sorted(p for p in (lfw_root / "lfw").iterdir()
                if len(list(p.glob("*.jpg"))) >= per_person)[:n]


def _small_bin(lfw_root, path):
  """40 pairs of LFW originals: 20 genuine, 20 impostor, alternating in 10 folds."""
  people = _people(lfw_root, 20, 2)
  files = [sorted(p.glob("*.jpg"))[:2] for p in people]
  images, issame = [], []
  for i in range(20):
    same = [files[i][0], files[i][1]]
    diff = [files[i][0], files[(i + 1) % 20][1]]
    for pair, flag in ((same, True), (diff, False)):
      images += [f.read_bytes() for f in pair]
      issame.append(flag)
  return verification_bin.write_bin(path, images, issame)


def test_ablation_of_a_bin_equals_the_bin_evaluator_setting_by_setting(embedder, lfw_root,
                                                                       tmp_path):
  c = embedder.config
  path = _small_bin(lfw_root, tmp_path / "small.bin")
  spec = dict(type="verification_bin", path=path)
  settings = (("cosine", "concat", True), ("euclidean", "none", False))
  ablation = registry.build("abl", dict(type="ablation", of=spec, settings=settings), c,
                            embedder, out_dir=tmp_path / "eval")
  scalars = ablation.run()
  rows, info = ablation.last_result
  assert info["num_pairs"] == 40 and info["protocol"] == "bin-small"
  assert os.path.basename(info["json_path"]).startswith("bin-small_settings@")
  for (distance, flip, mean), row in zip(settings, rows):
    single = registry.build("one", dict(spec, distance=distance, flip=flip, subtract_mean=mean),
                            c, embedder, out_dir=None)
    single.run()
    assert row["accuracy"] == pytest.approx(single.last_result.accuracy, abs=1e-12)
    assert row["auc"] == pytest.approx(single.last_result.verification.auc, abs=1e-12)
  assert scalars["cosine/concat/mean_sub/accuracy"] == rows[0]["accuracy"]


def test_open_set_rank1_matches_brute_force(embedder, lfw_root, tmp_path):
  folder = tmp_path / "faces"
  folder.mkdir()
  for person in _people(lfw_root, 12, 4):
    os.symlink(person, folder / person.name, target_is_directory=True)
  ev = registry.build("os", dict(type="open_set", folder=str(folder), min_images=4, seed=3),
                      embedder.config, embedder, out_dir=tmp_path / "eval")
  scalars = ev.run()
  # Brute force: the same seeded split, every probe against every gallery image.
  split = identify.open_set_split(collect_images(folder, labels="subfolder", min_images=4),
                                  seed=3)
  e = embedder.replace(flip=embedder.config.eval.flip)
  g = e.embed_files(split.gallery.paths).embeddings
  p = e.embed_files(split.probes.paths).embeddings
  d = ((p[:, None, :] - g[None, :, :]) ** 2).sum(-1)
  nearest = np.array(split.gallery.labels)[d.argmin(1)]
  known = np.isin(split.probes.labels, split.known)
  rank1 = np.mean(nearest[known] == np.array(split.probes.labels)[known])
  assert scalars["rank1"] == pytest.approx(rank1, abs=1e-12)
  assert 0 <= scalars["dir@far=0.1"] <= 1 and os.path.exists(ev.last_result.json_path)


def _event_tags(workdir):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tags = {}
  for path in glob.glob(os.path.join(workdir, "tensorboard", "events.*")):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
  return tags


def test_training_logs_each_evaluator_on_schedule(smoke_config, lfw_root, tmp_path):
  from facejax import train  # pylint: disable=import-outside-toplevel
  from face_folders import pgm_faces  # pylint: disable=import-outside-toplevel
  c = smoke_config
  path = _small_bin(lfw_root, tmp_path / "small.bin")
  folder = pgm_faces(lfw_root, tmp_path / "pgm")
  c.num_train_steps = 4
  c.checkpoint.every_steps = 4
  c.evals = dict(
      lfw_view1=dict(type="lfw", protocol="view1", every_steps=2, at_end=False),
      small_bin=dict(type="verification_bin", path=path, every_steps=2),
      faces=dict(type="identity_pairs", folder=str(folder), num_pairs=40, every_steps=4))
  train.train_and_evaluate(c, str(tmp_path / "w"))
  tags = _event_tags(str(tmp_path / "w"))
  assert sorted(tags["eval/lfw_view1/accuracy"]) == [2, 4]
  assert sorted(tags["eval/small_bin/accuracy"]) == [2, 4]  # every 2 steps; step 4 is the end
  assert sorted(tags["eval/faces/auc"]) == [4]
  names = os.listdir(tmp_path / "w" / "eval")
  assert {"lfw_view1_2.json", "lfw_view1_4.json"} <= set(names)
  assert any(n.startswith("bin-small@") and n.endswith("_4.json") for n in names)
  assert any(n.startswith("identity@pgm-") and n.endswith("_4.json") for n in names)
