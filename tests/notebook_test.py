"""notebooks/evaluate.ipynb runs headless, top to bottom, on a freshly initialised smoke model."""

import pathlib
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

from evaluation_test import fresh_checkpoint  # noqa: E402 -- tests/ is on sys.path

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "evaluate.ipynb"


def _outputs(cell, kind):
  """Text of `cell`'s stream outputs, or its display_data/execute_result bundles' `kind`."""
  if kind == "text":
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
  return [o.data[kind] for o in cell.outputs
          if o.output_type in ("display_data", "execute_result") and kind in o.get("data", {})]


def test_the_committed_notebook_carries_no_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, cell.source[:60]


# About 50 s on 2 cores (a kernel start and a dozen jit compilations): run by
# .ci/run's slow line, kept out of the default suite's 15-minute budget.
@pytest.mark.slow
def test_notebook_evaluates_verifies_identifies_and_maps(smoke_config, lfw_root, tmp_path,
                                                         monkeypatch):
  workdir = tmp_path / "w"
  fresh_checkpoint(smoke_config, workdir, step=3)
  # The kernel inherits this environment.
  monkeypatch.setenv("FACEJAX_NOTEBOOK_CONFIG", "configs/nn1.py:smoke")
  monkeypatch.setenv("FACEJAX_NOTEBOOK_WORKDIR", str(workdir))
  monkeypatch.setenv("FACEJAX_NOTEBOOK_PROTOCOL", "dev_test_10fold")
  monkeypatch.setenv("FACEJAX_DATA_DIR", str(lfw_root.parent))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.delenv("FACEJAX_NOTEBOOK_STEP", raising=False)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # Started in notebooks/, as Jupyter would: the notebook finds the repository root itself.
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
  code = [c for c in nb.cells if c.cell_type == "code"]
  text = "\n".join(_outputs(c, "text") for c in code)

  assert "nn1 (32-d) from " in text and "step 3" in text
  table = next(c for c in code if "fold_table" in c.source)
  lines = _outputs(table, "text").splitlines()
  assert lines[0].split()[:4] == ["fold", "pairs", "same", "diff"]
  assert [line.split()[1:4] for line in lines[2:12]] == [["100", "50", "50"]] * 10
  accuracy = float(re.search(r"LFW dev_test_10fold \(1000 pairs.*accuracy (\S+) ±", text).group(1))
  assert 0.0 <= accuracy <= 1.0
  roc = next(c for c in code if "roc_fpr" in c.source)
  assert len(_outputs(roc, "image/png")) == 1
  assert len(re.findall(r"^(SAME person|DIFFERENT people): euclidean distance", text, re.M)) == 2
  assert re.search(r"identified \d+ probe\(s\) against 8 gallery images of 8 identities", text)
  assert "closed set" in text and "DIR@FAR" in text
  tsne = code[-1]
  assert len(_outputs(tsne, "image/png")) == 1
  assert (workdir / "eval" / "tsne_3.png").stat().st_size > 1000
  assert (workdir / "eval" / "lfw_dev_test_10fold_3.json").is_file()
