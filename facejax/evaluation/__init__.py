"""LFW evaluation, separate from training: `evaluate_lfw(config, workdir=...)`."""

from facejax.evaluation.lfw_eval import LfwEvalResult, evaluate_lfw, embed_table, load_pairs

__all__ = ["LfwEvalResult", "evaluate_lfw", "embed_table", "load_pairs"]
