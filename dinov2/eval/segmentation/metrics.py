"""Semantic segmentation metrics as mmseg computes them: areas summed over the whole evaluation set, then ratios.

Per class ``c``: ``IoU = |pred = c and label = c| / |pred = c or label = c|`` and ``Acc = |pred = c and
label = c| / |label = c|`` over the pixels whose label is not ``ignore_index``; ``mIoU`` / ``mAcc`` average the
classes present (a class that never occurs in labels nor predictions has IoU NaN and is left out); ``aAcc`` is
the pixel accuracy. Values are fractions (0..1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dinov2 import distributed

__all__ = ["SegmentationMetric", "intersect_and_union"]


def intersect_and_union(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """``[4, K]`` float64 areas (intersection, union, prediction, label) of one or more class maps."""
    if pred.shape != label.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and label {tuple(label.shape)} must have the same shape")
    valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
    pred, label = pred[valid].long(), label[valid].long()
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted classes must be in [0, {num_classes}), got {pred.min()}..{pred.max()}")
    area_intersect = torch.bincount(pred[pred == label], minlength=num_classes)
    area_pred = torch.bincount(pred, minlength=num_classes)
    area_label = torch.bincount(label, minlength=num_classes)
    union = area_pred + area_label - area_intersect
    return torch.stack([area_intersect, union, area_pred, area_label]).double().cpu()


class SegmentationMetric:
    """Accumulates areas over batches (and processes) and reports mIoU, mAcc, aAcc and per-class values."""

    def __init__(self, num_classes: int, ignore_index: int = 255, class_names: list[str] | None = None) -> None:
        self.num_classes, self.ignore_index = int(num_classes), ignore_index
        self.class_names = list(class_names) if class_names else [str(i) for i in range(self.num_classes)]
        self.areas = torch.zeros(4, self.num_classes, dtype=torch.float64)

    def update(self, pred: Tensor, label: Tensor) -> None:
        """``pred`` and ``label``: class maps of the same shape (``[B, H, W]`` or ``[H, W]``)."""
        self.areas += intersect_and_union(pred, label, self.num_classes, self.ignore_index)

    def all_reduce(self) -> None:
        """Sum the areas of every process (a no-op on one process)."""
        distributed.all_reduce(self.areas)

    def compute(self) -> dict:
        intersect, union, _, label = self.areas
        iou = intersect / union  # NaN where the class is absent from labels and predictions
        acc = intersect / label
        mean = lambda x: float(x[~torch.isnan(x)].mean()) if (~torch.isnan(x)).any() else math.nan  # noqa: E731
        total = float(label.sum())
        return {
            "mIoU": mean(iou),
            "mAcc": mean(acc),
            "aAcc": float(intersect.sum()) / total if total else math.nan,
            "IoU": {name: float(v) for name, v in zip(self.class_names, iou)},
            "Acc": {name: float(v) for name, v in zip(self.class_names, acc)},
        }
