"""Embeddings of arbitrary image files, aligned on the fly: what single-image tools call.

`embed_files(config, variables, paths, align_spec=...)` reads each file with
Pillow (grayscale, CMYK, RGBA all become RGB), aligns it with MTCNN when an
`align.AlignSpec` is given (the same spec the training tree was aligned
with, so a probe photo is cropped like the training faces), then runs the
evaluation preprocessing of `config.data` and the net. Files that cannot be
read, or with no face under fallback "skip", are returned in `skipped`
with the reason instead of stopping the batch.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Sequence

import ml_collections
import numpy as np
from PIL import Image

from facejax.data import align, datasets, input_pipeline
from facejax.evaluation.lfw_eval import embed_table
from facejax.models import create_model


@dataclasses.dataclass
class FileEmbeddings:
  """embeddings [N, D] float32 for `paths` (the files that worked, in input order);
  `records` the alignment record of each (empty without alignment); `skipped` {path: reason}."""
  paths: list[str]
  embeddings: np.ndarray
  records: list[dict]
  skipped: dict[str, str]


def _png(image: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format="PNG")
  return buf.getvalue()


def embed_files(config: ml_collections.ConfigDict, variables: dict,
                paths: Sequence[str | os.PathLike], *, align_spec: align.AlignSpec | None = None,
                detector: align.Detector | None = None, batch_size: int | None = None,
                flip: str | None = None) -> FileEmbeddings:
  """Embeds image files; see the module docstring."""
  if align_spec is not None and detector is None:
    detector = align.Detector(align_spec.min_face_size)
  kept, encoded, records, skipped = [], [], [], {}
  for path in map(str, paths):
    try:
      image = align.read_rgb(path)
    except Exception as e:  # noqa: BLE001 -- report the file, go on with the others
      skipped[path] = f"unreadable: {type(e).__name__}: {e}"[:200]
      continue
    record = {}
    if align_spec is not None:
      image, record = align.align_image(image, detector, align_spec)
      if image is None:
        skipped[path] = record["detail"]
        continue
    kept.append(path)
    encoded.append(_png(image))
    records.append(record)
  if not kept:
    return FileEmbeddings([], np.zeros((0, config.model.embedding_dim), np.float32), [], skipped)
  table = input_pipeline.ImageTable(kept, encoded)
  emb = embed_table(create_model(config.model), variables, table,
                    datasets.preprocessing(config.data, train=False),
                    batch_size or config.eval.batch_size, flip or config.eval.flip)
  return FileEmbeddings(kept, emb, records, skipped)
