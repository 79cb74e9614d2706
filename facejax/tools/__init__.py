"""Everyday face tools on any checkpoint: embed, verify, identify, cluster, visualise.

Library first, CLI second. Each verb is a module with a function of its name
returning a dataclass with `summary()`:

  from facejax import tools
  from facejax.tools import identify
  model = tools.load_model(config, workdir)   # a facejax.inference.Embedder inside
  cal = tools.calibration(workdir, model.step, config=config)
  result = identify.identify(model, gallery, probes, cal)

CLI: `python -m facejax.tools <verb> --config=... --workdir=... [--step=N] ...`.
The package exports the shared pieces only, so `facejax.tools.verify` etc.
stay the modules.
"""

from facejax.tools.common import (Calibration, FaceModel, ImageList, calibration,
                                  collect_images, load_model)

__all__ = ["Calibration", "FaceModel", "ImageList", "calibration", "collect_images",
           "load_model"]
