"""Linear transfer to the fine-grained datasets of the DINOv2 paper (``python -m dinov2.eval.transfer``).

:mod:`~dinov2.eval.transfer.datasets`: the 12 datasets (torchvision readers or ours, splits, metrics) and image
folders; :mod:`~dinov2.eval.transfer.metrics`: VOC 2007 11-point mAP; :mod:`~dinov2.eval.transfer.multilabel`:
one-vs-rest logistic regression with the released solver; :mod:`~dinov2.eval.transfer.cli`: the command line.
"""

from dinov2.eval.transfer.cli import cli_main, eval_transfer_with_model, get_args_parser, main
from dinov2.eval.transfer.datasets import TRANSFER_DATASETS, TransferSpec, dataset_splits, folder_splits
from dinov2.eval.transfer.metrics import voc07_average_precision, voc07_mean_average_precision
from dinov2.eval.transfer.multilabel import eval_multilabel_log_regression, fit_one_vs_rest

__all__ = [
    "TRANSFER_DATASETS",
    "TransferSpec",
    "cli_main",
    "dataset_splits",
    "eval_multilabel_log_regression",
    "eval_transfer_with_model",
    "fit_one_vs_rest",
    "folder_splits",
    "get_args_parser",
    "main",
    "voc07_average_precision",
    "voc07_mean_average_precision",
]
