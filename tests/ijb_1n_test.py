"""IJB 1:N: a hand-worked case and random galleries against a brute-force loop over the
full probe x gallery score matrix (NIST's TPIR@FPIR and insightface's)."""

import math

import numpy as np
import pytest

from facejax import errors
from facejax.evaluation import ijb_1n


def _unit(v):
  v = np.asarray(v, np.float64)
  return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_identify_by_hand():
  galleries = {"G1": (_unit([[1, 0], [0, 1]]), np.array([10, 11])),
               "G2": (_unit([[-1, 0]]), np.array([20]))}
  probes = _unit([[0.8, 0.6], [0.8, 0.6], [-0.6, 0.8], [-1, 0]])
  subjects = np.array([10, 11, 20, 20])
  # Scores (G1 a, G1 b, G2): p0 .8 .6 -.8 (mate first); p1 .8 .6 -.8 (mate second);
  # p2 -.6 .8 .6 (mate second); p3 -1 0 1 (mate first).
  got = ijb_1n.identify(probes, subjects, galleries, fpirs=(0.01, 0.5), ranks=(1, 2),
                        chunk_size=3)
  assert got["rank"] == {1: 0.5, 2: 1.0}
  low, half = got["tpir_at_fpir"]
  # G1's non-mated searches p2, p3 have best G1 scores .8 and 0: at FPIR .5 the threshold
  # is 0 and p0 (.8, first) is found, p1 is not; at .01 the threshold is .8, which p0's .8
  # does not exceed. G2's non-mated p0, p1 score -.8 there: p2 and p3 are found at both.
  assert half["per_gallery"]["G1"]["tpir"] == 0.5 and half["per_gallery"]["G1"]["threshold"] == 0
  assert half["per_gallery"]["G2"]["tpir"] == 1.0
  assert half["tpir"] == 0.75 and low["tpir"] == 0.5
  # insightface: non-mate scores .8 .8 .6 0 -.6 -.8 -.8 -1; ceil(4 f)-th largest is .8 at
  # both points, and only p3's mate (1.0) is above it.
  assert [r["tpir"] for r in got["tpir_at_fpir_insightface"]] == [0.25, 0.25]


def _brute_force(probes, subjects, galleries, fpirs, ranks):
  names = list(galleries)
  feats = np.concatenate([galleries[g][0] for g in names])
  gsub = np.concatenate([galleries[g][1] for g in names])
  owner = np.concatenate([[g] * len(galleries[g][1]) for g in names])
  scores = probes @ feats.T
  order = np.argsort(-scores, axis=1)
  rank, mate_score = {}, {}
  nonmate = []
  for p, s in enumerate(subjects):
    for position, j in enumerate(order[p]):
      if gsub[j] == s:
        rank[p], mate_score[p] = position + 1, scores[p, j]
      else:
        nonmate.append(scores[p, j])
  mated = sorted(rank)
  cmc = {k: sum(rank[p] <= k for p in mated) / len(mated) for k in ranks}
  nist = []
  for f in fpirs:
    per = []
    for g in names:
      cols = [j for j in range(len(gsub)) if owner[j] == g]
      mates = [p for p in mated if owner[[j for j in range(len(gsub)) if gsub[j] == subjects[p]][0]] == g]
      best = sorted((max(scores[p, cols]) for p in range(len(subjects)) if p not in mates),
                    reverse=True)
      k = int(math.floor(f * len(best)))
      threshold = best[k] if k < len(best) else -np.inf
      top_of = lambda p: cols[int(np.argmax(scores[p, cols]))]
      per.append(np.mean([gsub[top_of(p)] == subjects[p] and mate_score[p] > threshold
                          for p in mates]))
    nist.append(np.mean(per))
  nonmate = sorted(nonmate, reverse=True)
  legacy = [np.mean([mate_score.get(p, -np.inf) > nonmate[math.ceil(len(subjects) * f) - 1]
                     for p in range(len(subjects))]) for f in fpirs]
  return cmc, nist, legacy


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_identify_matches_brute_force(chunk):
  rng = np.random.default_rng(chunk)
  dim, people = 8, 60
  centers = _unit(rng.normal(size=(people, dim)))
  galleries = {"G1": (_unit(centers[:25] + rng.normal(0, 0.3, (25, dim))), np.arange(25)),
               "G2": (_unit(centers[25:50] + rng.normal(0, 0.3, (25, dim))), np.arange(25, 50))}
  subjects = rng.integers(0, people, 90)  # subjects 50..59 have no gallery template
  probes = _unit(centers[subjects] + rng.normal(0, 0.5, (90, dim)))
  fpirs, ranks = (0.01, 0.1, 0.3), (1, 5, 10)
  got = ijb_1n.identify(probes, subjects, galleries, fpirs=fpirs, ranks=ranks, chunk_size=chunk)
  cmc, nist, legacy = _brute_force(probes, subjects, galleries, fpirs, ranks)
  assert got["num_mated"] == int((subjects < 50).sum())
  for k in ranks:
    assert got["rank"][k] == pytest.approx(cmc[k], abs=1e-12)
  np.testing.assert_allclose([r["tpir"] for r in got["tpir_at_fpir"]], nist, atol=1e-12)
  np.testing.assert_allclose([r["tpir"] for r in got["tpir_at_fpir_insightface"]], legacy,
                             atol=1e-12)
  assert 0 < got["rank"][1] < got["rank"][10] <= 1


def test_lists_name_the_file_and_line(tmp_path):
  meta = tmp_path / "meta"
  meta.mkdir()
  (meta / "ijbc_1N_gallery_G1.csv").write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n1,5,a.jpg\n1,5,b.jpg\n")
  (meta / "ijbc_1N_gallery_G2.csv").write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n2,6,c.jpg\n2,7,d.jpg\n")
  (meta / "ijbc_1N_probe_mixed.csv").write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n3,5,e.jpg\n")
  assert ijb_1n.has_lists(tmp_path, "ijbc") and not ijb_1n.has_lists(tmp_path, "ijbb")
  with pytest.raises(errors.DataError, match=r"ijbc_1N_gallery_G2.csv:3: template 2 has subjects 6 and 7"):
    ijb_1n.read_lists(tmp_path, "ijbc")
  (meta / "ijbc_1N_gallery_G2.csv").write_text("TEMPLATE_ID,SUBJECT_ID\n2,5\n")
  with pytest.raises(errors.DataError, match=r"subjects \[5\] are in both galleries"):
    ijb_1n.read_lists(tmp_path, "ijbc")
  (meta / "ijbc_1N_gallery_G2.csv").write_text("TEMPLATE_ID,SUBJECT_ID\n2,x\n")
  with pytest.raises(errors.DataError, match=r"G2.csv:2: expected a template id"):
    ijb_1n.read_lists(tmp_path, "ijbc")
