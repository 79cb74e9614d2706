"""facejax.quantization and `tools embed --quantize=int8`: hand-worked codes, distances of
the integer codes against numpy, the saved file, and what int8 does to verification."""

import numpy as np
import pytest

from facejax import errors, quantization
from facejax.distances import distance_matrix, pair_distances
from facejax.tools import embed


def test_codes_of_a_hand_worked_vector():
  # D = 4: scale = 127 * 2 / 8 = 31.75. Unit row (0.5, -0.5, 0.5, 0.5) -> 15.875 -> 16.
  codes, scale = quantization.quantize_int8(np.array([[1.0, -1.0, 1.0, 1.0]]))
  assert scale == 31.75
  np.testing.assert_array_equal(codes, [[16, -16, 16, 16]])
  assert codes.dtype == np.int8
  # A spike beyond 8 sigma is clipped at 127: (1, 0, 0, 0) * 31.75 stays under; D = 256 does not.
  e = np.zeros((1, 256))
  e[0, 0] = 1.0
  codes, scale = quantization.quantize_int8(e)
  assert scale == 254.0 and codes[0, 0] == 127
  assert quantization.clipped_fraction(e) == 1 / 256


def test_distances_are_those_of_the_integer_codes():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(50, 128)) * rng.uniform(0.5, 2.0, size=(50, 1))
  codes, scale = quantization.quantize_int8(emb)
  c = codes.astype(np.int64)
  cos = (c @ c.T) / np.outer(np.linalg.norm(c, axis=1), np.linalg.norm(c, axis=1))
  stored = quantization.dequantize(codes, scale)
  np.testing.assert_allclose(distance_matrix(stored, stored, "cosine"), 1 - np.clip(cos, -1, 1),
                             atol=1e-6)
  np.testing.assert_allclose(distance_matrix(stored, stored, "euclidean"),
                             2 - 2 * np.clip(cos, -1, 1), atol=2e-6)
  # The codes' error is the rounding: at most half a step per coordinate of the unit row.
  unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  assert np.abs(stored - unit).max() <= 0.5 / scale + 1e-7
  # ... so a unit row moves by at most 0.5 sqrt(D) / scale = 0.5 * 8 / 127 in L2, whatever D.
  moved = np.linalg.norm(stored - unit, axis=1)
  assert moved.max() <= 0.5 * quantization.INT8_CLIP_SIGMAS / 127 + 1e-7


def test_int8_npz_round_trip_keeps_names_and_distances(tmp_path):
  rng = np.random.default_rng(1)
  emb = rng.normal(size=(6, 512)).astype(np.float32)
  result = embed.EmbedResult(names=[f"img{i}.png" for i in range(6)], labels=list("aabbcc"),
                             embeddings=emb, checkpoint="w", step=3)
  path = embed.save_npz(result, tmp_path / "e8.npz", quantize="int8")
  with np.load(path, allow_pickle=False) as f:
    assert f["embeddings"].dtype == np.int8 and f["embeddings"].nbytes == 6 * 512
    assert str(f["quantization"]) == "int8"
  back = embed.load_npz(path)
  assert back.quantization == "int8" and back.names == result.names and back.step == 3
  codes, scale = quantization.quantize_int8(emb)
  np.testing.assert_array_equal(back.embeddings, codes.astype(np.float32) / np.float32(scale))
  float_back = embed.load_npz(embed.save_npz(result, tmp_path / "e.npz"))
  assert float_back.quantization == "none"
  np.testing.assert_array_equal(float_back.embeddings, emb)


def test_bad_quantization_is_named(tmp_path):
  result = embed.EmbedResult(names=["a"], labels=[""], embeddings=np.ones((1, 4)),
                             checkpoint="w", step=None)
  with pytest.raises(errors.ConfigError, match="int4"):
    embed.save_npz(result, tmp_path / "x.npz", quantize="int4")
  assert not (tmp_path / "x.npz").exists()
  np.savez(tmp_path / "bad.npz", names=np.array(["a"]), labels=np.array([""]),
           embeddings=np.ones((1, 4), np.float32), quantization=np.array("int8"))
  with pytest.raises(errors.DataError, match="bad.npz"):
    embed.load_npz(tmp_path / "bad.npz")


def test_ablation_refuses_an_unknown_quantization_before_embedding():
  from facejax.evaluation import ablation
  # No embedder at all: the check must come before any image is embedded.
  with pytest.raises(errors.ConfigError, match="int4"):
    ablation.score_settings(None, None, object(), quantizations=("none", "int4"))
