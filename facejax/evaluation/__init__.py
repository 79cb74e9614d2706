"""Evaluation, separate from training: `evaluate_lfw(config, workdir=...)` on LFW View 1/2,
`evaluate_identity_folder(config, folder, workdir=...)` on any identity folder."""

from facejax.evaluation.identity_pairs import evaluate_identity_folder
from facejax.evaluation.lfw_eval import (EvalOptions, LfwEvalResult, embed_table, evaluate_lfw,
                                         load_pairs)

__all__ = ["EvalOptions", "LfwEvalResult", "evaluate_identity_folder", "evaluate_lfw",
           "embed_table", "load_pairs"]
