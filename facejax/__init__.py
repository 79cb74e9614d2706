"""facejax: FaceNet-style face recognition in JAX/Flax."""

__version__ = "0.1.0"
