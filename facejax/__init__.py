"""facejax: FaceNet-style face recognition in JAX/Flax."""

__version__ = "0.1.0"

import os as _os

# TensorFlow (used for tf.data only) logs oneDNN notices when it is imported,
# which facejax's data modules do before any main() could run: so this one
# default has to be set here. A value the user set is kept.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# facejax's default XLA_FLAGS are not set here: `cli.run` sets them for the
# command-line entry points (see `facejax.xla_flags`).
