"""IJB-C-sized 1:1 scoring: facejax's streaming TAR@FAR against insightface's eval_ijbc approach.

Synthetic templates at IJB-C's size (SCALE.md section 3): 23,124 templates of 512-D unit
features, 19,557 genuine and 15,638,932 impostor template pairs. Each side runs in its own
process so that its peak RSS is its own:

* facejax: `facejax.evaluation.ijb_eval.IjbEvaluator.score`'s loop (pairs scored in chunks of
  `--chunk`, default 20,000 as the evaluator, into `TarAtFar`, which keeps the top impostors
  and the genuine scores);
* insightface-style peer: every score computed (in 100k-pair chunks, as eval_ijbc.py) into one
  array of 15.66M scores, then `sklearn.metrics.roc_curve` over all of them and the TPR at the
  ROC point nearest each FAR.

Both read the same pair arrays (2 x 15.66M int64 indices, the meta file's content). "RSS
before" is the process after its imports and the data; "scoring peak" is the most memory the
scoring itself held at once (numpy's buffers, traced by tracemalloc). The TARs of the two are
printed side by side.

  python benchmarks/ijb_scoring_bench.py [--impostors=15638932] [--chunk=20000]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

TEMPLATES, GENUINE, IMPOSTORS, DIM = 23_124, 19_557, 15_638_932, 512
FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def make_data(num_impostors: int, seed: int = 0):
  """Unit template features [T, D] (genuine pairs correlated), pair indices, labels."""
  rng = np.random.default_rng(seed)
  feats = rng.standard_normal((TEMPLATES, DIM), dtype=np.float32)
  a_gen = rng.integers(0, TEMPLATES // 2, GENUINE)
  b_gen = a_gen + TEMPLATES // 2
  # A genuine partner shares a quarter of its direction with its template (cosine ~0.25, where
  # impostor cosines spread ~1/sqrt(512)): TARs between 0 and 1 at IJB-C's FARs.
  feats[b_gen] = 0.25 * feats[a_gen] + 0.97 * feats[b_gen]
  feats /= np.linalg.norm(feats, axis=1, keepdims=True)
  a_imp = rng.integers(0, TEMPLATES, num_impostors)
  b_imp = (a_imp + rng.integers(1, TEMPLATES, num_impostors)) % TEMPLATES
  a = np.concatenate([a_gen, a_imp])
  b = np.concatenate([b_gen, b_imp])
  labels = np.zeros(a.size, bool)
  labels[:GENUINE] = True
  return feats, a, b, labels


def run_facejax(feats, a, b, labels, chunk):
  from facejax.evaluation import ijb_eval  # pylint: disable=import-outside-toplevel
  scores_of = lambda idx: np.einsum("ij,ij->i", feats[a[idx]], feats[b[idx]])
  genuine, impostor = np.flatnonzero(labels), np.flatnonzero(~labels)
  stream = ijb_eval.TarAtFar(scores_of(genuine), impostor.size, FARS)
  for i in range(0, impostor.size, chunk):
    stream.add_impostors(scores_of(impostor[i:i + chunk]))
  out = stream.result()
  return [r["tar"] for r in out["tar_at_far"]], out["auc"]


def run_insightface_style(feats, a, b, labels, chunk):
  from sklearn import metrics  # pylint: disable=import-outside-toplevel
  score = np.zeros(a.size, np.float32)
  for i in range(0, a.size, chunk):
    score[i:i + chunk] = np.einsum("ij,ij->i", feats[a[i:i + chunk]], feats[b[i:i + chunk]])
  fpr, tpr, _ = metrics.roc_curve(labels, score)
  fpr, tpr = np.flipud(fpr), np.flipud(tpr)
  tars = [float(tpr[np.argmin(np.abs(fpr - far))]) for far in FARS]
  return tars, float(metrics.auc(np.flipud(fpr), np.flipud(tpr)))


def child(side: str, impostors: int, chunk: int) -> None:
  # Libraries first, so that "data RSS" holds the imports and the pairs, and the peak above
  # it is the scoring's own.
  if side == "facejax":
    from facejax.evaluation import ijb_eval  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
  else:
    from sklearn import metrics  # noqa: F401 pylint: disable=import-outside-toplevel,unused-import
  feats, a, b, labels = make_data(impostors)
  base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  tracemalloc.start()  # numpy reports its buffers to tracemalloc: the scoring's own peak
  start = time.perf_counter()
  if side == "facejax":
    tars, auc = run_facejax(feats, a, b, labels, chunk)
  else:  # eval_ijbc.py's own chunk
    tars, auc = run_insightface_style(feats, a, b, labels, 100_000)
  seconds = time.perf_counter() - start
  traced_peak = tracemalloc.get_traced_memory()[1]
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  print(json.dumps({"side": side, "seconds": seconds, "peak_rss_mib": peak / 1024,
                    "data_rss_mib": base / 1024, "scoring_peak_mib": traced_peak / 2**20,
                    "tars": tars, "auc": auc}))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--impostors", type=int, default=IMPOSTORS)
  parser.add_argument("--chunk", type=int, default=20_000, help="facejax's pairs per chunk")
  parser.add_argument("--child", choices=("facejax", "insightface"))
  args = parser.parse_args()
  if args.child:
    child(args.child, args.impostors, args.chunk)
    return
  sys.path.insert(0, __file__.rsplit("/", 1)[0])
  import _common  # pylint: disable=import-outside-toplevel
  print("\n".join(_common.environment_lines({"templates": str(TEMPLATES),
                                             "genuine pairs": str(GENUINE),
                                             "impostor pairs": str(args.impostors),
                                             "chunk": str(args.chunk)})))
  results = {}
  for side in ("facejax", "insightface"):
    out = subprocess.run([sys.executable, __file__, f"--child={side}",
                          f"--impostors={args.impostors}", f"--chunk={args.chunk}"],
                         capture_output=True, text=True, check=True)
    results[side] = json.loads(out.stdout.strip().splitlines()[-1])
  rows = []
  for side, name in (("facejax", "facejax streaming (TarAtFar)"),
                     ("insightface", "insightface-style (all scores + roc_curve)")):
    r = results[side]
    rows.append([name, f"{r['seconds']:.1f}", f"{r['data_rss_mib']:.0f}",
                 f"{r['peak_rss_mib']:.0f}", f"{r['scoring_peak_mib']:.0f}",
                 " ".join(f"{100 * t:.2f}" for t in r["tars"]), f"{r['auc']:.5f}"])
  _common.print_table(["scoring", "seconds", "RSS before MiB", "peak RSS MiB",
                       "scoring peak MiB (tracemalloc)", "TAR% @ FAR 1e-6..1e-1", "AUC"], rows)


if __name__ == "__main__":
  main()
