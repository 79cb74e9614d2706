"""insightface .bin sets: the safe reader against hand-assembled pickles, make_bin, and the
verification_bin evaluator against the identity-folder evaluator on the same pairs."""

import io
import os
import pickle
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from facejax import errors
from facejax.data import verification_bin
from facejax.evaluation import identity_pairs, registry
from facejax.inference import Embedder
from facejax.models import create_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _jpeg(seed: int, size: int = 24) -> bytes:
  rng = np.random.default_rng(seed)
  out = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(out, format="JPEG")
  return out.getvalue()


def _py2_pickle(images: list[bytes], issame: list[bool]) -> bytes:
  """What Python 2's cPickle.dump((bins, issame_list), f, protocol=2) writes for str images,
  assembled opcode by opcode: no global at all."""
  out = [b"\x80\x02", b"]", b"("]  # PROTO 2, EMPTY_LIST, MARK
  for data in images:
    if len(data) < 256:
      out.append(b"U" + bytes([len(data)]) + data)  # SHORT_BINSTRING
    else:
      out.append(b"T" + struct.pack("<I", len(data)) + data)  # BINSTRING
  out += [b"e", b"]", b"("]  # APPENDS, EMPTY_LIST, MARK
  out += [b"\x88" if s else b"\x89" for s in issame]  # NEWTRUE / NEWFALSE
  out += [b"e", b"\x86", b"."]  # APPENDS, TUPLE2, STOP
  return b"".join(out)


# The reader does not decode: one short item exercises SHORT_BINSTRING, the JPEGs BINSTRING.
IMAGES = [_jpeg(i) for i in range(7)] + [b"short"]
ISSAME = [True, False, True, False]


def _check(vbin):
  assert vbin.images == IMAGES
  np.testing.assert_array_equal(vbin.issame, ISSAME)
  assert vbin.num_pairs == 4


def test_python2_str_pickle_loads(tmp_path):
  path = tmp_path / "py2.bin"
  path.write_bytes(_py2_pickle(IMAGES, ISSAME))
  assert len(IMAGES[0]) > 255 and len(IMAGES[-1]) < 256  # both opcodes
  _check(verification_bin.read_bin(path))


def test_python3_bytes_pickle_and_write_bin_load(tmp_path):
  for protocol in (3, 4, 5):
    path = tmp_path / f"py3_{protocol}.bin"
    path.write_bytes(pickle.dumps((IMAGES, ISSAME), protocol=protocol))
    _check(verification_bin.read_bin(path))
  written = verification_bin.write_bin(tmp_path / "w.bin", IMAGES, ISSAME)
  # insightface loads with plain pickle.load: the written file must be a plain pickle.
  bins, issame = pickle.loads(open(written, "rb").read())
  assert bins == IMAGES and issame == ISSAME


@pytest.mark.parametrize("module", ["numpy._core.multiarray", "numpy.core.multiarray"])
def test_ndarray_images_load_under_both_numpy_names(tmp_path, module):
  # cfp2pack / agedb2pack keep cv2.imencode's uint8 array; insightface's small_lfw.bin holds
  # (n, 1) arrays under PROTO 3. (Protocol 2 from Python 3 would add _codecs.encode, a
  # global no published file names: refused.)
  arrays = [np.frombuffer(b, np.uint8).reshape(-1, 1) for b in IMAGES]
  data = pickle.dumps((arrays, ISSAME), protocol=3)
  for name in (b"numpy._core.multiarray", b"numpy.core.multiarray"):
    data = data.replace(name + b"\n", module.encode() + b"\n")
  assert module.encode() in data
  path = tmp_path / "nd.bin"
  path.write_bytes(data)
  _check(verification_bin.read_bin(path))


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f"touch {self.marker}",))


def test_a_foreign_global_is_refused_and_nothing_runs(tmp_path):
  marker = tmp_path / "ran"
  path = tmp_path / "evil.bin"
  path.write_bytes(pickle.dumps(([_Evil(marker)] + IMAGES[1:], ISSAME), protocol=2))
  with pytest.raises(verification_bin.BinFormatError) as e:
    verification_bin.read_bin(path)
  assert str(path) in str(e.value) and "system" in str(e.value) and "\n" not in str(e.value)
  assert not marker.exists()
  # The same file through plain pickle does run the command: the test would notice.
  pickle.loads(path.read_bytes())
  assert marker.exists()


def test_truncated_and_mismatched_files_give_one_line_naming_the_file(tmp_path):
  good = pickle.dumps((IMAGES, ISSAME), protocol=4)
  cut = tmp_path / "cut.bin"
  cut.write_bytes(good[: len(good) // 2])
  wrong = tmp_path / "wrong.bin"
  wrong.write_bytes(pickle.dumps((IMAGES, ISSAME[:3]), protocol=4))
  for path, words in ((cut, "truncated"), (wrong, "3 pairs")):
    with pytest.raises(errors.DataError) as e:
      verification_bin.read_bin(path)
    assert str(path) in str(e.value) and words in str(e.value) and "\n" not in str(e.value)
  with pytest.raises(errors.MissingDataError):
    verification_bin.read_bin(tmp_path / "none.bin")


def test_unknown_evaluator_keyword_fails_at_construction_naming_it(smoke_config):
  with pytest.raises(errors.ConfigError) as e:
    registry.build("agedb", dict(type="verification_bin", path="x.bin", flipp="sum"),
                   smoke_config)
  assert "config.evals.agedb.flipp" in str(e.value) and "'flip'" in str(e.value)
  with pytest.raises(errors.ConfigError, match="config.evals.agedb.path"):
    registry.build("agedb", dict(type="verification_bin"), smoke_config)


def _faces(lfw_root, root, size):
  """root/<Name>/<k>.jpg: 6 LFW people x 4 faces, centre crops resized to `size`."""
  names = sorted(p.name for p in (lfw_root / "lfw").iterdir()
                 if len(list(p.glob("*.jpg"))) >= 4)[:6]
  for name in names:
    (root / name).mkdir(parents=True)
    for k, f in enumerate(sorted((lfw_root / "lfw" / name).glob("*.jpg"))[:4]):
      Image.open(f).crop((60, 60, 190, 190)).resize((size, size)).save(root / name / f"{k}.jpg",
                                                                       quality=95)
  return root


def test_bin_evaluator_equals_identity_pairs_on_the_same_pairs(smoke_config, lfw_root, tmp_path):
  """make_bin packs the pairs an identity-folder evaluation drew; the .bin evaluator scores
  them (10 consecutive folds) exactly as the identity-folder evaluator does."""
  c = smoke_config
  size = c.data.image_size
  c.data.update(source_crop=0, resize_size=size)
  folder = _faces(lfw_root, tmp_path / "faces", size)
  model = create_model(c.model)
  variables = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), train=False)
  embedder = Embedder.from_variables(c, variables, batch_size=16, step=0)
  ident = registry.build("folder", dict(type="identity_pairs", folder=str(folder), num_pairs=60),
                         c, embedder, out_dir=tmp_path / "eval")
  ident.run()
  pairs_file = ident.last_result.pairs_file
  out = tmp_path / "mine.bin"
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  run = subprocess.run(
      [sys.executable, "-m", "facejax.evaluation.make_bin", f"--output={out}",
       f"--identity_folder={folder}", f"--pairs_file={pairs_file}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert "60 pairs" in run.stdout
  vbin = verification_bin.read_bin(out)
  assert vbin.num_pairs == 60
  # Fold by fold, in the pairs file's order: the .bin's consecutive folds are its folds.
  pairs, folds = identity_pairs.read_pairs(pairs_file, identity_pairs.folder_listing(folder))
  np.testing.assert_array_equal(np.diff(folds) >= 0, True)
  np.testing.assert_array_equal(vbin.issame, [p.issame for p in pairs])
  with open(folder / pairs[0].path_a, "rb") as f:
    assert vbin.images[0] == f.read()  # JPEG files are stored untouched
  binev = registry.build("mine", dict(type="verification_bin", path=str(out)), c, embedder,
                         out_dir=tmp_path / "eval")
  scalars = binev.run()
  a, b = ident.last_result, binev.last_result
  np.testing.assert_allclose(b.distances, a.distances, rtol=1e-6, atol=1e-6)
  assert scalars["accuracy"] == pytest.approx(a.accuracy, abs=1e-12)
  assert os.path.basename(b.json_path).startswith("bin-mine@")
  assert os.path.exists(b.json_path) and os.path.exists(b.roc_path)
  # make_bin refuses to overwrite without --overwrite, in one line.
  again = subprocess.run(
      [sys.executable, "-m", "facejax.evaluation.make_bin", f"--output={out}",
       f"--identity_folder={folder}", f"--pairs_file={pairs_file}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert again.returncode == 2 and "--overwrite" in again.stderr
  assert "Traceback" not in again.stderr
