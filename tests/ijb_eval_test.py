"""IJB 1:1 and 1:N: pooling by hand, streaming TAR@FAR against sorted impostors and sklearn, and a
miniature IJB layout of LFW faces scored end to end (Python and `--ijb`) against brute force."""

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from facejax import errors
from facejax.evaluation import ijb_eval, registry
from facejax.inference import Embedder
from facejax.models import create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_pooling_by_hand():
  # Template 7: media 1 has two frames (averaged), media 2 one still; template 3: one image.
  features = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 3.0]])
  tids = np.array([7, 7, 7, 3])
  mids = np.array([1, 1, 2, 5])
  templates, pooled = ijb_eval.pool_templates(features, tids, mids)
  assert templates.tolist() == [3, 7]
  # 7: mean([1,0],[0,1]) + [2,0] = [2.5, 0.5] -> / sqrt(6.5); 3: [0, 3] -> [0, 1].
  np.testing.assert_allclose(pooled[1], np.array([2.5, 0.5]) / math.sqrt(6.5), rtol=1e-6)
  np.testing.assert_allclose(pooled[0], [0.0, 1.0])


def _brute_tar(genuine, impostor, far):
  """TAR at FAR from all impostor scores sorted: the threshold lets floor(far N) through."""
  top = np.sort(impostor)[::-1]
  k = int(math.floor(far * len(impostor)))
  threshold = top[k] if k < len(top) else -np.inf
  return float((genuine > threshold).mean()), int((impostor > threshold).sum())


@pytest.mark.parametrize("chunk", [1, 37, 10_000])
def test_streaming_tar_at_far_matches_sorted_impostors(chunk):
  rng = np.random.default_rng(chunk)
  genuine = rng.normal(0.6, 0.2, 500).round(2)  # rounded: ties between and within classes
  impostor = rng.normal(0.0, 0.2, 20_000).round(2)
  fars = (1e-4, 1e-3, 1e-2, 1e-1)
  stream = ijb_eval.TarAtFar(genuine, impostor.size, fars)
  for i in range(0, impostor.size, chunk):
    stream.add_impostors(impostor[i:i + chunk])
  assert stream.top.size <= int(0.1 * impostor.size) + 1  # bounded, not every score
  got = stream.result()
  for row, far in zip(got["tar_at_far"], fars):
    tar, accepted = _brute_tar(genuine, impostor, far)
    assert row["tar"] == pytest.approx(tar, abs=1e-12)
    assert row["false_accepts"] == accepted <= far * impostor.size
  labels = np.r_[np.ones(genuine.size), np.zeros(impostor.size)]
  assert got["auc"] == pytest.approx(skm.roc_auc_score(labels, np.r_[genuine, impostor]),
                                     abs=1e-12)


PEOPLE, PER_PERSON = 24, 6  # 144 images, 48 templates


def _mini_ijb(lfw_root, root):
  """root/meta + root/loose_crop: each person gives 2 templates of 3 images, one a still and
  two frames of one "video"; landmarks are LFW's typical face position, jittered."""
  rng = np.random.default_rng(0)
  names = sorted(p.name for p in (lfw_root / "lfw").iterdir()
                 if len(list(p.glob("*.jpg"))) >= PER_PERSON)[:PEOPLE]
  (root / "meta").mkdir(parents=True)
  (root / "loose_crop").mkdir()
  template = ijb_eval.ALIGN_SPEC.template_points()
  faces, points, templates = [], [], []
  for p, name in enumerate(names):
    for k, src in enumerate(sorted((lfw_root / "lfw" / name).glob("*.jpg"))[:PER_PERSON]):
      image = f"{p}_{k}.jpg"
      os.symlink(src, root / "loose_crop" / image)
      tid = 2 * p + k // 3 + 1
      mid = 1000 * tid + (0 if k % 3 == 0 else 1)  # a still, then two frames of one media
      faces.append(f"{image} {tid} {mid}")
      landmarks = (template - 56) * 1.15 + [125, 122] + rng.normal(0, 1.5, (5, 2))
      score = rng.uniform(0.6, 1.0)
      points.append(" ".join([image, *(f"{v:.3f}" for v in landmarks.reshape(-1)),
                              f"{score:.4f}"]))
    templates.append((2 * p + 1, 2 * p + 2))
  pairs = [f"{a} {b} 1" for a, b in templates]
  tids = [t for pair in templates for t in pair]
  pairs += [f"{a} {b} 0" for i, a in enumerate(tids) for b in tids[i + 1:]
            if (a - 1) // 2 != (b - 1) // 2]
  (root / "meta" / "ijbc_face_tid_mid.txt").write_text("\n".join(faces) + "\n")
  (root / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(points) + "\n")
  (root / "meta" / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
  # 1:N: the first template of people 0-9 in G1, of 10-19 in G2; every second template
  # probes, people 20-23 with no mate in either gallery.
  header = "TEMPLATE_ID,SUBJECT_ID,FILENAME\n"
  rows = lambda people, k: "".join(f"{2 * p + k},{p},{p}_{i}.jpg\n" for p in people
                                   for i in range(3))
  (root / "meta" / "ijbc_1N_gallery_G1.csv").write_text(header + rows(range(10), 1))
  (root / "meta" / "ijbc_1N_gallery_G2.csv").write_text(header + rows(range(10, 20), 1))
  (root / "meta" / "ijbc_1N_probe_mixed.csv").write_text(header + rows(range(PEOPLE), 2))
  return root


def _brute_force(meta, features, fars):
  """Pooling with dicts and loops, every pair scored, impostors sorted."""
  by_template = {}
  for f, t, m in zip(features, meta.template_ids, meta.media_ids):
    by_template.setdefault(int(t), {}).setdefault(int(m), []).append(f)
  pooled = {}
  for t, media in by_template.items():
    v = sum(np.mean(frames, axis=0) for frames in media.values())
    pooled[t] = v / np.linalg.norm(v)
  scores = np.array([pooled[a] @ pooled[b] for a, b in meta.pairs])
  genuine, impostor = scores[meta.labels], scores[~meta.labels]
  return [_brute_tar(genuine, impostor, far)[0] for far in fars], pooled


def test_mini_ijb_matches_brute_force_and_runs_from_the_cli(smoke_config, lfw_root, tmp_path):
  root = _mini_ijb(lfw_root, tmp_path / "IJBC")
  c = smoke_config
  size = c.data.image_size
  model = create_model(c.model)
  variables = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
  embedder = Embedder.from_variables(c, variables, batch_size=32, step=5)
  fars = (1e-3, 1e-2, 1e-1, 0.3)
  evaluator = registry.build("ijbc", dict(type="ijb", root=str(root), fars=fars, chunk_size=50),
                             c, embedder, out_dir=tmp_path / "eval")
  scalars = evaluator.run()
  result = evaluator.last_result
  meta = evaluator.meta()
  assert meta.set_name == "ijbc" and len(meta.images) == PEOPLE * PER_PERSON
  assert result.num_templates == 2 * PEOPLE and result.num_genuine == PEOPLE
  assert result.num_impostors == (2 * PEOPLE) * (2 * PEOPLE - 2) // 2
  features, unreadable = evaluator.image_features(embedder, meta)
  assert not unreadable and np.all(np.linalg.norm(features, axis=1) > 0)
  # flip + detector score: e(x) + e(mirror x) (each a unit vector), times the score.
  norms = np.linalg.norm(features, axis=1) / meta.scores
  assert np.all(norms <= 2 + 1e-5) and np.all(norms > 1)
  expected, pooled = _brute_force(meta, features, fars)
  got = [row["tar"] for row in result.tar_at_far]
  np.testing.assert_allclose(got, expected, atol=1e-6)
  assert scalars["tar@far=1e-01"] == pytest.approx(expected[2])
  # 1:N from the lists, against the brute-force loop on the hand-pooled templates.
  from ijb_1n_test import _brute_force as brute_1n  # pylint: disable=import-outside-toplevel
  galleries = {g: (np.array([pooled[2 * p + 1] for p in people]), np.array(list(people)))
               for g, people in (("G1", range(10)), ("G2", range(10, 20)))}
  probes = np.array([pooled[2 * p + 2] for p in range(PEOPLE)])
  cmc, nist, legacy = brute_1n(probes, np.arange(PEOPLE), galleries, (0.01, 0.1), (1, 5, 10))
  found = result.identification
  assert found["num_probes"] == PEOPLE and found["num_mated"] == 20
  assert found["rank"] == pytest.approx(cmc, abs=1e-6)
  np.testing.assert_allclose([r["tpir"] for r in found["tpir_at_fpir"]], nist, atol=1e-6)
  np.testing.assert_allclose([r["tpir"] for r in found["tpir_at_fpir_insightface"]], legacy,
                             atol=1e-6)
  assert scalars["rank1"] == pytest.approx(cmc[1]) and "tpir@fpir=1e-01" in scalars
  with open(result.json_path) as f:
    saved = json.load(f)
  assert [r["far"] for r in saved["tar_at_far"]] == list(fars)
  assert os.path.basename(result.json_path).startswith("ijb-ijbc@IJBC-")
  assert os.path.getsize(result.roc_path) > 1000

  # The same from the command line, on a checkpoint.
  from evaluation_test import fresh_checkpoint  # pylint: disable=import-outside-toplevel
  fresh_checkpoint(c, tmp_path / "w")
  env = dict(os.environ, FACEJAX_DATA_DIR=str(lfw_root.parent), JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "facejax.evaluation", "--config=configs/nn1.py:smoke",
       f"--workdir={tmp_path / 'w'}", f"--ijb={root}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "IJBC 1:1 (48 templates, 24 genuine + 1104 impostor pairs)" in out.stdout
  assert "IJBC 1:N (24 probe templates, galleries {'G1': 10, 'G2': 10}): rank-1" in out.stdout
  assert (tmp_path / "w" / "eval").is_dir()


def test_bad_meta_names_the_file_and_line(tmp_path):
  meta = tmp_path / "IJBB" / "meta"
  meta.mkdir(parents=True)
  (meta / "ijbb_face_tid_mid.txt").write_text("a.jpg 1 1\nb.jpg 2\n")
  (meta / "ijbb_name_5pts_score.txt").write_text("")
  (meta / "ijbb_template_pair_label.txt").write_text("1 2 1\n")
  with pytest.raises(errors.DataError, match=r"ijbb_face_tid_mid.txt:2: 2 fields, expected 3"):
    ijb_eval.read_meta(tmp_path / "IJBB")
  with pytest.raises(errors.MissingDataError, match="ijbc_face_tid_mid.txt"):
    ijb_eval.read_meta(tmp_path / "IJBB", "ijbc")
