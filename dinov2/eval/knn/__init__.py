"""k-NN evaluation (released module ``dinov2.eval.knn``; ``python -m dinov2.eval.knn``).

:mod:`~dinov2.eval.knn.core`: the protocol on features (votes, few-shot draws, results); :mod:`~dinov2.eval.knn.cli`:
the command line and :func:`eval_knn_with_model`. The search is :class:`dinov2.features.KnnIndex`.
"""

from dinov2.eval.knn.cli import RESIZE_RATIO, eval_knn_with_model, get_args_parser, main
from dinov2.eval.knn.core import (
    DEFAULT_NB_KNN,
    DEFAULT_TEMPERATURE,
    eval_knn,
    few_shot_k_list,
    format_knn_results,
    knn_class_scores,
    released_knn_results,
    sample_few_shot_indices,
)
from dinov2.features.knn import KnnIndex

__all__ = [
    "DEFAULT_NB_KNN",
    "DEFAULT_TEMPERATURE",
    "RESIZE_RATIO",
    "KnnIndex",
    "knn_class_scores",
    "sample_few_shot_indices",
    "few_shot_k_list",
    "eval_knn",
    "released_knn_results",
    "format_knn_results",
    "get_args_parser",
    "eval_knn_with_model",
    "main",
]
