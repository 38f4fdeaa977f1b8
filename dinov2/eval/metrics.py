"""Classification metrics of the evaluation protocols (released module name): they live in
:mod:`dinov2.features.metrics`, below training and evaluation, which both score k-NN with them."""

from dinov2.features.metrics import (
    AccuracyAveraging,
    ImageNetReaLAccuracy,
    MetricType,
    TopKAccuracy,
    build_metric,
    build_topk_accuracy_metric,
    build_topk_imagenet_real_accuracy_metric,
    target_ranks,
)

__all__ = [
    "MetricType",
    "AccuracyAveraging",
    "TopKAccuracy",
    "ImageNetReaLAccuracy",
    "build_metric",
    "build_topk_accuracy_metric",
    "build_topk_imagenet_real_accuracy_metric",
    "target_ranks",
]
