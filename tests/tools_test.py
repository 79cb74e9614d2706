"""facejax.tools on real LFW images: embed, verify, identify, cluster, visualise, bad input.

One module-scoped checkpoint of the nn1 smoke net (initialised and saved the
way the trainer saves, no training) and one embedded identity folder are
shared by the tests; every verb is checked against an independent numpy /
sklearn / scipy reference or a hand-worked case.
"""

import csv
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from face_folders import gif_faces, pgm_faces
import configs
from facejax import checkpointing, errors
from facejax.data import datasets
from facejax.data.identity_folder import scan_identity_folder
from facejax.distances import distance_matrix, pair_distances
from facejax.evaluation import lfw_eval
from facejax.evaluation import metrics as metrics_lib
from facejax.models import create_model
from facejax.tools import cluster as cluster_lib
from facejax.tools import common, embed, identify, verify, visualise

REPO = pathlib.Path(__file__).resolve().parents[1]
STEP = 3
THRESHOLD = 0.37


def _smoke(lfw_root):
  c = configs.get_config("nn1:smoke")
  c.data.data_dir = str(lfw_root.parent)
  return c


def _save_checkpoint(config, workdir):
  """An initialised net saved as the trainer saves a step (model, train, meta items)."""
  model = create_model(config.model)
  h, w = datasets.hw(config.data.image_size)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, h, w, 3)), train=False))(
      jax.random.key(0))
  model_vars = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  manager = checkpointing.make_manager(workdir, async_save=False)
  checkpointing.save(manager, STEP, model_vars, {"step": jnp.array(STEP, jnp.int32)},
                     checkpointing.checkpoint_meta(config, STEP), force=True)
  manager.wait_until_finished()
  manager.close()


def _write_eval_json(path, threshold, distance="euclidean", protocol="view2", step=STEP):
  """An evaluation JSON in evaluate_lfw's format, from synthetic pair distances."""
  rng = np.random.default_rng(1)
  issame = np.tile([True, False], 300)
  dist = np.where(issame, rng.normal(0.8, 0.3, 600), rng.normal(1.4, 0.3, 600)).clip(0, 4)
  v = metrics_lib.evaluate_verification(dist, issame)
  result = lfw_eval.LfwEvalResult(protocol=protocol, step=step, distance=distance, flip="none",
                                  subtract_mean=False, num_pairs=600, num_images=0,
                                  verification=v, json_path=None, roc_path=None)
  d = result.to_dict()
  d["threshold"] = threshold  # a recognisable value
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(d, f)
  return d


@pytest.fixture(scope="module")
def env(lfw_root, tmp_path_factory):
  """(config, workdir, model, identity folder, its embeddings)."""
  base = tmp_path_factory.mktemp("tools")
  config = _smoke(lfw_root)
  workdir = str(base / "run")
  _save_checkpoint(config, workdir)
  _write_eval_json(os.path.join(workdir, "eval", f"lfw_{STEP}.json"), THRESHOLD)
  # 8 identities (the first by name with >= 4 images), 5 images each at most.
  ds = scan_identity_folder(lfw_root / "lfw", min_images_per_identity=4, max_identities=8)
  faces = base / "faces"
  for idx in ds.indices_by_class():
    for i in idx[:5]:
      dst = faces / ds.paths[i]
      dst.parent.mkdir(parents=True, exist_ok=True)
      os.symlink(ds.abspath(i), dst)
  model = common.load_model(config, workdir)
  images = common.collect_images(faces)
  emb = embed.embed_images(model, images, batch_size=16, progress=False)
  return config, workdir, model, faces, emb


# --- inputs -------------------------------------------------------------------------------------

def test_collect_images_reads_folders_lists_and_names_bad_paths(env, tmp_path):
  _, _, _, faces, _ = env
  ids = common.collect_images(faces)
  assert ids.labelled and len(set(ids.labels)) == 8
  assert all(pathlib.Path(p).parent.name == label for p, label in zip(ids.paths, ids.labels))
  two = sorted(set(ids.labels))[1:3]
  people = tmp_path / "people.txt"
  people.write_text("2\n" + "".join(f"{n}\t5\n" for n in two))
  assert sorted(set(common.collect_images(faces, people=people).labels)) == two
  first = common.collect_images(faces, people=two, max_identities=1)
  assert first.labels == [two[0]] * ids.labels.count(two[0])
  flat = common.collect_images(faces, labels="none")
  assert flat.paths == ids.paths and set(flat.labels) == {""}
  # A list file: relative paths, an optional label column, comments.
  listing = tmp_path / "list.txt"
  relative = os.path.relpath(ids.paths[1], tmp_path)
  listing.write_text(f"# probes\n{ids.paths[0]}\tsomeone\n{relative}\n")
  got = common.collect_images(listing)
  assert got.paths == [ids.paths[0], str(tmp_path / relative)]
  assert got.labels == ["someone", ""]
  with pytest.raises(FileNotFoundError, match="no_such_folder"):
    common.collect_images(tmp_path / "no_such_folder")
  (tmp_path / "empty" / "Nobody").mkdir(parents=True)
  (tmp_path / "empty" / "notes.json").write_text("{}")
  with pytest.raises(ValueError, match=f"no image files .* under folder {tmp_path / 'empty'}"):
    common.collect_images(tmp_path / "empty")
  (tmp_path / "mixed" / "A").mkdir(parents=True)
  os.symlink(ids.paths[0], tmp_path / "mixed" / "top.jpg")
  os.symlink(ids.paths[1], tmp_path / "mixed" / "A" / "a.jpg")
  assert common.collect_images(tmp_path / "mixed").labels == ["", ""]  # recursive, unlabelled
  with pytest.raises(ValueError, match="top.jpg"):
    common.collect_images(tmp_path / "mixed", labels="subfolder")


# --- embed --------------------------------------------------------------------------------------

def test_embed_converts_odd_images_skips_unreadable_and_saves_without_pickle(env, tmp_path):
  config, workdir, model, faces, _ = env
  src = sorted(faces.glob("*/*.jpg"))[0]
  rgb = Image.open(src).convert("RGB")
  folder = tmp_path / "odd"
  folder.mkdir()
  rgb.convert("L").save(folder / "gray.png")
  rgb.convert("CMYK").save(folder / "cmyk.jpg")
  rgb.convert("RGBA").save(folder / "rgba.png")
  rgb.save(folder / "plain.jpg")
  (folder / "junk.jpg").write_bytes(b"this is not a JPEG")
  (folder / "truncated.jpg").write_bytes((folder / "plain.jpg").read_bytes()[:200])
  images = common.collect_images(folder)
  result = embed.embed_images(model, images, batch_size=2, progress=False)
  names = [os.path.basename(n) for n in result.names]
  assert names == ["cmyk.jpg", "gray.png", "plain.jpg", "rgba.png"]
  assert sorted(os.path.basename(p) for p in result.skipped) == ["junk.jpg", "truncated.jpg"]
  assert all("unreadable" in r for r in result.skipped.values())
  assert "junk.jpg" in result.summary()
  # Batches of 2 give the embeddings one big batch gives.
  whole = model.embedder.embed_files(result.names, progress=False)
  np.testing.assert_allclose(result.embeddings, whole.embeddings, rtol=1e-5, atol=1e-6)

  path = embed.save_npz(result, tmp_path / "odd.npz")
  with np.load(path, allow_pickle=False) as f:
    assert f["names"].dtype.kind == "U" and f["labels"].dtype.kind == "U"
    assert f["embeddings"].dtype == np.float32 and f["embeddings"].shape == (4, 32)
    assert str(f["checkpoint"]) == workdir and int(f["step"]) == STEP
    assert sorted(os.path.basename(p) for p in f["skipped_names"]) == ["junk.jpg", "truncated.jpg"]
  back = embed.load_npz(path)
  assert back.names == result.names and back.labels == ["", "", "", ""]
  np.testing.assert_array_equal(back.embeddings, result.embeddings)
  assert back.standardization == config.data.standardization == "fixed"
  # A threshold calibrated with another standardisation is used with that one.
  white = embed.embed_images(model, images, standardization="prewhiten", progress=False)
  assert white.standardization == "prewhiten"
  assert not np.allclose(white.embeddings, result.embeddings, atol=1e-3)


def test_a_checkpoint_of_another_net_is_refused_naming_both(env):
  config, workdir, _, _, _ = env
  other = config.copy_and_resolve_references()
  other.model.embedding_dim = 16
  with pytest.raises(checkpointing.IncompatibleCheckpointError,
                     match="model.embedding_dim=32 but the config asks for model.embedding_dim=16"):
    common.load_model(other, workdir)


def test_tools_read_pgm_and_extensionless_gif_folders(env, lfw_root, tmp_path):
  _, workdir, model, _, _ = env
  cal = common.calibration(workdir, model.step)
  for fmt, build in (("pgm", pgm_faces), ("gif", gif_faces)):
    root = build(lfw_root, tmp_path / fmt)
    (root / "notes.txt").write_text("not a face\n")  # at the top: named as skipped, not read
    images = common.collect_images(root, labels="subfolder")
    assert len(images) == 15 and len(set(images.labels)) == 5, fmt
    result = embed.embed_images(model, images, progress=False)
    assert len(result.names) == 15, fmt
    assert result.skipped == {str(root / "notes.txt"): "not an image (no image suffix or content)"}
    assert result.embeddings.shape == (15, 32)
    np.testing.assert_allclose(np.linalg.norm(result.embeddings, axis=1), 1.0, atol=1e-5)
    check = verify.verify(model, result.names[0], result.names[1], cal)
    assert np.isfinite(check.distance), fmt
  flat = common.collect_images(tmp_path / "gif", labels="none")
  assert str(tmp_path / "gif" / "notes.txt") in flat.left_out and len(flat) == 15


# --- verify -------------------------------------------------------------------------------------

def test_verify_distance_is_the_numpy_distance_of_the_embeddings(env):
  _, workdir, model, _, emb = env
  cal = common.calibration(workdir, model.step)
  assert cal.threshold == THRESHOLD and cal.source.endswith(f"lfw_{STEP}.json")
  for i, j in [(0, 1), (0, 7)]:  # one same-identity pair, one different
    result = verify.verify(model, emb.names[i], emb.names[j], cal)
    a, b = (emb.embeddings[k] / np.linalg.norm(emb.embeddings[k]) for k in (i, j))
    np.testing.assert_allclose(result.distance, np.sum((a - b) ** 2), rtol=1e-4, atol=1e-5)
    assert result.same == (result.distance < THRESHOLD)
    assert f"lfw_{STEP}.json" in result.summary()
  manual = common.calibration(workdir, model.step, threshold=4.0)
  assert verify.verify(model, emb.names[0], emb.names[7], manual).same
  assert manual.source == "--threshold"
  with pytest.raises(FileNotFoundError, match="missing.jpg") as e:
    verify.verify(model, emb.names[0], "/nowhere/missing.jpg", cal)
  assert isinstance(e.value, errors.UserError)


def test_threshold_json_choice_conversion_and_missing_json(tmp_path):
  w = str(tmp_path / "w")
  with pytest.raises(FileNotFoundError, match=r"python -m facejax.evaluation .*--threshold"):
    common.calibration(w, 5)
  _write_eval_json(f"{w}/eval/lfw_dev_test_5.json", 0.5, protocol="dev_test", step=5)
  _write_eval_json(f"{w}/eval/lfw_2.json", 0.6, step=2)
  _write_eval_json(f"{w}/eval/lfw_5.json", 0.7, step=5)
  assert common.calibration(w, 5).threshold == 0.7  # View 2 of the model's step
  with open(f"{w}/eval/lfw_2.json") as f:
    saved = json.load(f)
  saved["standardization"] = "prewhiten"
  with open(f"{w}/eval/lfw_2.json", "w") as f:
    json.dump(saved, f)
  assert common.calibration(w, 2).standardization == "prewhiten"
  assert common.calibration(w, 2).threshold == 0.6
  other = common.calibration(w, 9)  # no JSON of step 9: View 2, newest step
  assert other.threshold == 0.7 and "calibrated on step 5, the model is step 9" in other.describe()
  os.remove(f"{w}/eval/lfw_5.json")
  assert common.calibration(w, 5).threshold == 0.5  # this step's View 1 before an older View 2
  cos = common.calibration(w, 2, distance="cosine")
  assert cos.distance == "cosine" and cos.threshold == pytest.approx(0.3)
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
  # Same decisions in both distances, and distance_matrix is pair_distances for all pairs.
  d_euc, d_cos = (distance_matrix(x, y, d) for d in ("euclidean", "cosine"))
  np.testing.assert_array_equal(d_euc < 0.6, d_cos < cos.threshold)
  np.testing.assert_allclose(np.diag(d_euc), pair_distances(x, y, "euclidean"), atol=1e-12)
  np.testing.assert_allclose(np.diag(d_cos), pair_distances(x, y, "cosine"), atol=1e-12)


# --- identify -----------------------------------------------------------------------------------

def test_open_set_metrics_on_a_hand_worked_case():
  inf = np.inf
  class_dist = np.array([
      [0.2, 0.6, 0.9],  # known A: rank 1, 0.2 < 0.5 -> detected and identified
      [0.3, 0.4, 0.8],  # known B: A is nearer -> rank 2
      [0.9, 0.8, 0.7],  # known C: rank 1 but 0.7 >= 0.5
      [0.45, 0.45, 1.0],  # known A: tie with B, A sorts first -> rank 1, 0.45 < 0.5
      [0.1, 0.9, 0.9],  # unknown, accepted at 0.5 (false alarm)
      [0.6, 0.7, 0.8],  # unknown, rejected
      [0.5, 0.9, 0.9],  # unknown, 0.5 is not < 0.5: rejected
      [0.35, 1.0, 1.0]])  # unknown, false alarm
  true = np.array([0, 1, 2, 0, -1, -1, -1, -1])
  m = identify.open_set_metrics(class_dist, true, 0.5, ranks=(1, 2),
                                far_targets=(0.1, 0.25, 0.5, 1.0))
  assert (m.num_known, m.num_unknown) == (4, 4)
  assert m.rank_accuracy == {1: 0.75, 2: 1.0}
  assert (m.dir_at_threshold, m.far_at_threshold) == (0.5, 0.5)
  # Unknown nearest distances sorted: 0.1, 0.35, 0.5, 0.6.
  assert m.threshold_at_far == {0.1: 0.1, 0.25: 0.35, 0.5: 0.5, 1.0: inf}
  assert m.far_reached == {0.1: 0.0, 0.25: 0.25, 0.5: 0.5, 1.0: 1.0}
  assert m.dir_at_far == {0.1: 0.0, 0.25: 0.25, 0.5: 0.5, 1.0: 0.75}


def test_open_set_split_is_seeded_and_keeps_unknowns_out_of_the_gallery(env):
  images = common.collect_images(env[3])
  a = identify.open_set_split(images, unknown_fraction=0.25, seed=3)
  b = identify.open_set_split(images, unknown_fraction=0.25, seed=3)
  assert a.gallery.paths == b.gallery.paths and a.probes.paths == b.probes.paths
  assert len(a.unknown) == 2 and len(a.known) == 6
  assert not set(a.unknown) & set(a.gallery.labels)
  assert sorted(set(a.gallery.labels)) == a.known
  for name in a.known:  # one gallery image each, the rest probes
    assert a.gallery.labels.count(name) == 1 and a.probes.labels.count(name) >= 3
  for name in a.unknown:
    assert a.probes.labels.count(name) == images.labels.count(name)
  assert sorted(a.gallery.paths + a.probes.paths) == sorted(images.paths)
  assert identify.open_set_split(images, unknown_fraction=0.25, seed=4).unknown != a.unknown


def _brute_force_identify(g_emb, g_labels, p_emb, p_labels, threshold):
  """Loops over every probe, identity and gallery image with pair_distances."""
  ids = sorted(set(g_labels))
  dist = np.empty((len(p_emb), len(ids)))
  for p in range(len(p_emb)):
    for c, name in enumerate(ids):
      rows = [i for i, l in enumerate(g_labels) if l == name]
      dist[p, c] = pair_distances(np.repeat(p_emb[p:p + 1], len(rows), 0),
                                  g_emb[rows], "euclidean").min()
  order = np.argsort(dist, axis=1, kind="stable")
  known = [l in ids for l in p_labels]
  rank = [list(order[p]).index(ids.index(l)) for p, l in enumerate(p_labels) if known[p]]
  nearest = dist.min(1)
  u = np.array([nearest[p] for p in range(len(p_labels)) if not known[p]])
  hit = [rank[i] == 0 and nearest[p] < threshold
         for i, p in enumerate(p for p in range(len(p_labels)) if known[p])]
  return ids, dist, order, np.mean(np.array(rank) == 0), np.mean(np.array(rank) < 5), \
      np.mean(hit), np.mean(u < threshold)


def test_identify_ranks_match_numpy_brute_force(env):
  _, _, _, _, emb = env
  images = common.ImageList(emb.names, emb.labels, "faces")
  split = identify.open_set_split(images, unknown_fraction=0.25, seed=0)
  row = {n: i for i, n in enumerate(emb.names)}
  g = emb.embeddings[[row[p] for p in split.gallery.paths]]
  p = emb.embeddings[[row[x] for x in split.probes.paths]]
  cal = common.Calibration(threshold=0.05, distance="euclidean", flip="none", source="test")
  ids, class_dist, answers, top_ids, top_d, m = identify.identify_embeddings(
      g, split.gallery.labels, p, split.probes.labels, cal, k=5, far_targets=(0.1,))
  ref_ids, ref_dist, ref_order, rank1, rank5, dir_t, far_t = _brute_force_identify(
      g, split.gallery.labels, p, split.probes.labels, cal.threshold)
  assert ids == ref_ids
  np.testing.assert_allclose(class_dist, ref_dist, atol=1e-6)
  np.testing.assert_allclose(top_d, np.take_along_axis(ref_dist, ref_order[:, :5], 1), atol=1e-6)
  # Identity order may only differ where two identities are within round-off.
  gaps = np.diff(np.sort(ref_dist, axis=1), axis=1)[:, :5]
  clear = np.all(gaps > 1e-5, axis=1)
  assert clear.mean() > 0.8
  for i in np.flatnonzero(clear):
    assert top_ids[i] == [ref_ids[j] for j in ref_order[i, :5]]
  assert answers == [t[0] if d[0] < cal.threshold else "unknown" for t, d in zip(top_ids, top_d)]
  assert m.rank_accuracy[1] == pytest.approx(rank1) and m.rank_accuracy[5] == pytest.approx(rank5)
  assert m.dir_at_threshold == pytest.approx(dir_t) and m.far_at_threshold == pytest.approx(far_t)
  n_unknown = sum(label in split.unknown for label in split.probes.labels)
  assert n_unknown > 0
  assert (m.num_known, m.num_unknown) == (len(split.probes) - n_unknown, n_unknown)


def test_identify_end_to_end_drops_a_gallery_identity_with_no_usable_image(env, tmp_path):
  _, workdir, model, faces, emb = env
  gallery = tmp_path / "gallery"
  names = sorted(set(emb.labels))[:3]
  for name in names:
    (gallery / name).mkdir(parents=True)
    os.symlink(sorted((faces / name).iterdir())[0], gallery / name / "g.jpg")
  (gallery / "Broken_Person").mkdir()
  (gallery / "Broken_Person" / "bad.jpg").write_bytes(b"no image here")
  (gallery / "Empty_Person").mkdir()
  everyone = sorted(set(emb.labels))
  probes = common.ImageList([str(sorted((faces / n).iterdir())[1]) for n in everyone], everyone,
                            "probes")
  cal = common.calibration(workdir, model.step, threshold=4.0)
  result = identify.identify(model, common.collect_images(gallery, labels="subfolder"), probes,
                             cal, k=2, progress=False)
  assert result.gallery_dropped == ["Broken_Person", "Empty_Person"]
  assert result.gallery_identities == names and "Broken_Person" in result.summary()
  assert result.metrics.num_known == 3 and result.metrics.num_unknown == 5
  assert result.metrics.far_at_threshold == 1.0  # threshold 4 accepts everyone
  assert result.top_distances.shape == (8, 2)
  out = result.write_csv(tmp_path / "ids.csv")
  assert open(out).readline().strip() == ("probe,label,answer,identity_1,distance_1,"
                                          "identity_2,distance_2")


def test_cli_identifies_between_two_int8_embeddings_files_by_the_codes(env, tmp_path):
  """`identify --gallery=G.npz --probes=P.npz`, no model: answers and distances are those of
  a brute-force search over the int8 codes themselves (renormalised)."""
  _, workdir, _, _, emb = env
  split = identify.open_set_split(common.ImageList(emb.names, emb.labels, "faces"),
                                  unknown_fraction=0.25, seed=0)
  row = {n: i for i, n in enumerate(emb.names)}

  def save(part, name):
    sub = dataclasses.replace(emb, names=list(part.paths), labels=list(part.labels),
                              embeddings=emb.embeddings[[row[x] for x in part.paths]])
    return embed.save_npz(sub, tmp_path / name, quantize="int8")

  g_file, p_file = save(split.gallery, "g.npz"), save(split.probes, "p.npz")
  proc = subprocess.run([sys.executable, "-m", "facejax.tools", "identify", f"--gallery={g_file}",
                         f"--probes={p_file}", "--k=2", f"--output={tmp_path / 'ids.csv'}"],
                        capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"lfw_{STEP}.json" in proc.stdout and "rank-1" in proc.stdout
  codes_g = np.load(g_file)["embeddings"]
  codes_p = np.load(p_file)["embeddings"]
  assert codes_g.dtype == codes_p.dtype == np.int8
  ids, dist, order, rank1, _, dir_t, far_t = _brute_force_identify(
      codes_g.astype(np.float64), split.gallery.labels, codes_p.astype(np.float64),
      split.probes.labels, THRESHOLD)
  with open(tmp_path / "ids.csv") as f:
    rows = list(csv.DictReader(f))
  assert [r["probe"] for r in rows] == split.probes.paths
  for r, d, o in zip(rows, dist, order):
    assert float(r["distance_1"]) == pytest.approx(d[o[0]], abs=2e-6)
    assert r["answer"] == (ids[o[0]] if d[o[0]] < THRESHOLD else "unknown")
  assert f"rank-1 {rank1:.4f}" in proc.stdout
  assert f"DIR {dir_t:.4f}, FAR {far_t:.4f}" in proc.stdout

  # Embeddings of different sizes cannot be compared: one line, exit 2.
  small = dataclasses.replace(emb, embeddings=emb.embeddings[:, :8])
  bad = embed.save_npz(small, tmp_path / "small.npz")
  proc = subprocess.run([sys.executable, "-m", "facejax.tools", "identify", f"--gallery={g_file}",
                         f"--probes={bad}"], capture_output=True, text=True, cwd=REPO,
                        timeout=300)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "cannot be compared" in proc.stderr


# --- cluster ------------------------------------------------------------------------------------

def test_pairwise_prf_matches_an_all_pairs_loop_and_a_hand_case():
  assert cluster_lib.pairwise_prf([0, 0, 0, 1, 1], [0, 0, 1, 1, 1]) == (0.5, 0.5, 0.5)
  rng = np.random.default_rng(0)
  truth, pred = rng.integers(0, 7, 120), rng.integers(0, 9, 120)
  tp = fp = fn = 0
  for i in range(120):
    for j in range(i + 1, 120):
      same_c, same_t = pred[i] == pred[j], truth[i] == truth[j]
      tp += same_c and same_t
      fp += same_c and not same_t
      fn += same_t and not same_c
  p, r, f = cluster_lib.pairwise_prf(truth.astype(str), pred)
  assert p == pytest.approx(tp / (tp + fp)) and r == pytest.approx(tp / (tp + fn))
  assert f == pytest.approx(2 * p * r / (p + r))


def test_clustering_matches_scipy_average_linkage_and_scores_noise_as_singletons(env, tmp_path):
  from scipy.cluster import hierarchy
  from scipy.spatial.distance import squareform
  from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
  _, _, _, _, emb = env
  d = distance_matrix(emb.embeddings, emb.embeddings, "euclidean")
  np.fill_diagonal(d, 0)
  t = float(np.median(d[np.triu_indices(len(d), 1)]))  # a threshold that merges some
  cal = common.Calibration(threshold=t, distance="euclidean", flip="none", source="test")
  agg = cluster_lib.cluster(emb.names, emb.labels, emb.embeddings, cal)
  ref = hierarchy.fcluster(hierarchy.linkage(squareform(d, checks=False), "average"), t,
                           criterion="distance")
  assert adjusted_rand_score(ref, agg.clusters) == 1.0
  assert 1 < agg.num_clusters < len(emb.names)
  assert agg.nmi == pytest.approx(normalized_mutual_info_score(emb.labels, agg.clusters))
  assert (agg.precision, agg.recall, agg.f_score) == pytest.approx(
      cluster_lib.pairwise_prf(emb.labels, agg.clusters))

  db = cluster_lib.cluster(emb.names, emb.labels, emb.embeddings,
                           common.Calibration(np.quantile(d, 0.05), "euclidean", "none", "test"),
                           method="dbscan", min_samples=3)
  assert (db.clusters == cluster_lib.NOISE).any()
  singles = cluster_lib.noise_as_singletons(db.clusters)
  assert len(set(singles)) == db.num_clusters + np.sum(db.clusters == cluster_lib.NOISE)
  assert db.nmi == pytest.approx(normalized_mutual_info_score(emb.labels, singles))
  assert cluster_lib.cluster(emb.names, emb.labels, emb.embeddings,
                             common.Calibration(5.0, "euclidean", "none", "t")).num_clusters == 1

  rows = cluster_lib.write_csv(agg, tmp_path / "c.csv")
  assert open(rows).read().count("\n") == len(emb.names) + 1
  links = cluster_lib.link_clusters(agg, tmp_path / "links")
  linked = sorted(tmp_path.joinpath("links").glob("cluster_*/*"))
  assert len(linked) == len(emb.names) and all(p.is_symlink() for p in linked)
  with pytest.raises(FileExistsError, match="not empty"):
    cluster_lib.link_clusters(agg, links)


# --- visualise and the CLI ----------------------------------------------------------------------

def _assert_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with Image.open(path) as im:
    im.verify()
  assert os.path.getsize(path) > 5000


def test_tsne_and_roc_overlay_write_pngs(env, tmp_path):
  _, workdir, _, _, emb = env
  npz = embed.save_npz(emb, tmp_path / "faces.npz")
  t = visualise.tsne_plot(npz, tmp_path / "tsne.png", top_identities=5)
  _assert_png(t.path)
  assert t.num_points == sum(emb.labels.count(n) for n in t.identities) and len(t.identities) == 5
  other = tmp_path / "other_run" / "eval" / "lfw_dev_test_9.json"
  saved = _write_eval_json(str(other), 1.0, protocol="dev_test", step=9)
  r = visualise.roc_overlay([os.path.join(workdir, "eval", f"lfw_{STEP}.json"), other],
                            tmp_path / "roc.png")
  _assert_png(r.path)
  sources = [label.split(" ")[0] for label, _, _ in r.curves]
  assert sources == ["run/lfw_3", "other_run/lfw_dev_test_9"]
  assert r.curves[1][1:] == (saved["accuracy"], saved["auc"])
  with pytest.raises(FileNotFoundError, match="nope.json"):
    visualise.roc_overlay([tmp_path / "nope.json"], tmp_path / "x.png")


# Two CLI processes (imports + compile each, ~30 s): .ci/run's slow line.
@pytest.mark.slow
def test_cli_embeds_a_folder_and_clusters_the_npz(env, tmp_path):
  _, workdir, _, faces, emb = env
  base = [sys.executable, "-m", "facejax.tools"]
  cfg = [f"--config={REPO / 'configs' / 'nn1.py'}:smoke", f"--workdir={workdir}",
         f"--config.data.data_dir={env[0].data.data_dir}"]
  out = tmp_path / "cli.npz"
  proc = subprocess.run(base + ["embed", str(faces), f"--output={out}"] + cfg,
                        capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"embedded {len(emb.names)} image(s)" in proc.stdout
  cli = embed.load_npz(out)
  assert cli.names == emb.names and cli.labels == emb.labels and cli.step == STEP
  np.testing.assert_allclose(cli.embeddings, emb.embeddings, rtol=1e-5, atol=1e-6)
  proc = subprocess.run(base + ["cluster", str(out), f"--output={tmp_path / 'c.csv'}"],
                        capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"lfw_{STEP}.json" in proc.stdout and "pairwise precision" in proc.stdout
  proc = subprocess.run(base + ["embed", str(tmp_path / "no_faces_here"), f"--output={out}"] + cfg,
                        capture_output=True, text=True, cwd=REPO, timeout=300)
  # A user error: one line, exit status 2 (facejax.cli), no traceback, no Orbax chatter.
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert f"error: no such file or folder: {tmp_path / 'no_faces_here'}" in proc.stderr
  assert "read only" not in proc.stderr and "orbax" not in proc.stderr.lower()


def test_a_setting_unlike_the_other_side_or_the_calibration_is_one_warning_line(capsys):
  from types import SimpleNamespace
  from facejax.tools.__main__ import _warn_unlike_calibration
  cal = SimpleNamespace(flip="none", standardization="fixed")
  gallery = SimpleNamespace(flip="none", standardization="fixed")
  probes = SimpleNamespace(flip="concat", standardization="fixed")
  _warn_unlike_calibration({"gallery": gallery, "probes": probes}, cal)
  assert capsys.readouterr().err.splitlines() == [
      "warning: gallery flip=none, probes flip=concat, threshold calibrated with flip=none"]
  # One file embedded unlike the calibration; then one agreeing with it: no line.
  _warn_unlike_calibration({"e.npz": probes}, cal)
  assert capsys.readouterr().err.splitlines() == [
      "warning: e.npz flip=concat, threshold calibrated with flip=none"]
  _warn_unlike_calibration({"e.npz": gallery}, cal)
  _warn_unlike_calibration({"e.npz": gallery}, SimpleNamespace(flip=None, standardization=None))
  assert capsys.readouterr().err == ""
