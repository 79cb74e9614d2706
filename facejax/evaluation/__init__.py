"""Evaluation, separate from training: `evaluate_lfw(config, workdir=...)` on LFW View 1/2,
`evaluate_identity_folder(config, folder, workdir=...)` on any identity folder.

To embed images with a checkpoint yourself, use `facejax.inference.Embedder`
(`Embedder.from_workdir(config, workdir).embed_files(paths)`); distances live in
`facejax.distances`, and `facejax.evaluation.results` names and finds the result files
under `<workdir>/eval/`.
"""

from facejax.evaluation.identity_pairs import IdentityFolderOptions, evaluate_identity_folder
from facejax.evaluation.lfw_eval import EvalOptions, LfwEvalResult, evaluate_lfw, load_pairs

__all__ = ["EvalOptions", "IdentityFolderOptions", "LfwEvalResult", "evaluate_identity_folder",
           "evaluate_lfw", "load_pairs"]
