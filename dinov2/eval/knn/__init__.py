"""k-NN evaluation (released module ``dinov2.eval.knn``; ``python -m dinov2.eval.knn``).

:mod:`~dinov2.eval.knn.core`: the protocol on features (votes, few-shot draws, results); :mod:`~dinov2.eval.knn.cli`:
the command line and :func:`eval_knn_with_model`. The search is :class:`dinov2.features.KnnIndex`.
"""

from dinov2.eval.knn import core
from dinov2.eval.knn.cli import RESIZE_RATIO, eval_knn_with_model, get_args_parser, main
from dinov2.eval.knn.core import *  # noqa: F403  (the protocol's released names, listed in core.__all__)
from dinov2.features.knn import KnnIndex

__all__ = [*core.__all__, "RESIZE_RATIO", "KnnIndex", "get_args_parser", "eval_knn_with_model", "main"]
