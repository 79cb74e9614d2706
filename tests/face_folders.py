"""Identity folders of LFW faces in the formats TensorFlow cannot read by name: `.pgm`, and
GIF files without an extension named like the Yale faces (`subject01.happy`)."""

import pathlib

from PIL import Image

# Five LFW people with at least 3 images: 15 images, 15 genuine pairs.
PEOPLE = ("Aaron_Peirsol", "Abdullah_Gul", "Adam_Sandler", "Al_Gore", "Alvaro_Uribe")
MOODS = ("happy", "sad", "sleepy")


def _sources(lfw_root, per_person):
  for name in PEOPLE:
    yield name, sorted((pathlib.Path(lfw_root) / "lfw" / name).glob("*.jpg"))[:per_person]


def pgm_faces(lfw_root, root, per_person=3) -> pathlib.Path:
  """root/<Name>/<Name>_000k.pgm: 8-bit grayscale (PIL mode L) PGM files."""
  root = pathlib.Path(root)
  for name, files in _sources(lfw_root, per_person):
    (root / name).mkdir(parents=True, exist_ok=True)
    for f in files:
      Image.open(f).convert("L").save(root / name / (f.stem + ".pgm"))
  return root


def gif_faces(lfw_root, root, per_person=3) -> pathlib.Path:
  """root/<subjectNN>/<subjectNN>.<mood>: palette GIFs with no image extension (Yale style)."""
  root = pathlib.Path(root)
  for k, (_, files) in enumerate(_sources(lfw_root, per_person)):
    subject = f"subject{k + 1:02d}"
    (root / subject).mkdir(parents=True, exist_ok=True)
    for f, mood in zip(files, MOODS):
      Image.open(f).convert("P", palette=Image.Palette.ADAPTIVE).save(
          root / subject / f"{subject}.{mood}", format="GIF")
  return root
