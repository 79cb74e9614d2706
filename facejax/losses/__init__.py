"""Metric-learning losses for face embeddings."""

from facejax.losses.triplet import (
    TRIPLET_LOSSES,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    get_triplet_loss,
    pairwise_squared_distances,
    semi_hard_triplet_loss,
)

__all__ = [
    "TRIPLET_LOSSES",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "get_triplet_loss",
    "pairwise_squared_distances",
    "semi_hard_triplet_loss",
]
