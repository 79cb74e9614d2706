"""Metric-learning losses for face embeddings."""

from facejax.losses.classification import (
    CLASSIFICATION_LOSSES,
    a_softmax_lambda,
    a_softmax_logits,
    angular_margin_loss,
    arcface_logits,
    center_loss_term,
    combined_margin_logits,
    cosface_logits,
    softmax_center_loss,
    softmax_loss,
    update_centers,
)
from facejax.losses.triplet import (
    TRIPLET_LOSSES,
    batch_all_triplet_loss,
    batch_hard_triplet_loss,
    get_triplet_loss,
    pairwise_squared_distances,
    semi_hard_triplet_loss,
)

__all__ = [
    "CLASSIFICATION_LOSSES",
    "TRIPLET_LOSSES",
    "a_softmax_lambda",
    "a_softmax_logits",
    "angular_margin_loss",
    "arcface_logits",
    "batch_all_triplet_loss",
    "batch_hard_triplet_loss",
    "center_loss_term",
    "combined_margin_logits",
    "cosface_logits",
    "get_triplet_loss",
    "pairwise_squared_distances",
    "semi_hard_triplet_loss",
    "softmax_center_loss",
    "softmax_loss",
    "update_centers",
]

from facejax.losses.heads import (  # noqa: E402
    FEATURE_SOURCES,
    HEADS,
    ArcFaceHead,
    ASoftmaxHead,
    CenterHead,
    CombinedMarginHead,
    CosFaceHead,
    Head,
    SoftmaxHead,
    TripletHead,
    init_head,
)
from facejax.losses.partial_fc import PartialFCHead  # noqa: E402
from facejax.losses.harmonic import HarmonicTripletHead, harmonic_triplet_loss  # noqa: E402
from facejax.losses.objective import make_objective  # noqa: E402

HEADS["partial_fc"] = PartialFCHead
HEADS["harmonic"] = HarmonicTripletHead

__all__ += ["FEATURE_SOURCES", "HEADS", "ArcFaceHead", "ASoftmaxHead", "CenterHead",
            "CombinedMarginHead", "CosFaceHead", "HarmonicTripletHead", "Head", "PartialFCHead",
            "SoftmaxHead", "TripletHead", "harmonic_triplet_loss", "init_head", "make_objective"]
