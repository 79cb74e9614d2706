"""facejax: FaceNet-style face recognition in JAX/Flax."""

__version__ = "0.1.0"

import os as _os

# TensorFlow (used for tf.data only) logs oneDNN notices at import; keep warnings.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from facejax import xla_flags as _xla_flags  # noqa: E402

_xla_flags.set_default_xla_cpu_flags()
