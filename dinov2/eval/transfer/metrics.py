"""Metrics of the transfer suite that the logistic-regression protocol does not already have: PASCAL VOC 2007's
11-point interpolated average precision (Everingham et al. 2010), per class and averaged.

Per class, images are sorted by decreasing score; ``difficult`` images (target 0) are neither true nor false
positives (the VOC devkit's classification rule); precision at recall r is the largest precision at any recall
>= r, averaged over r in {0, 0.1, ..., 1}.
"""

from __future__ import annotations

import numpy as np

__all__ = ["voc07_average_precision", "voc07_mean_average_precision"]


def voc07_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """11-point AP of one class: ``scores`` [N], ``targets`` [N] in {1 present, 0 difficult, -1 absent}."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    targets = np.asarray(targets)[order]
    true_pos, false_pos = np.cumsum(targets > 0), np.cumsum(targets < 0)
    n_positives = int((targets > 0).sum())
    if n_positives == 0:
        return float("nan")
    recall = true_pos / n_positives
    precision = true_pos / np.maximum(true_pos + false_pos, 1)
    points = [precision[recall >= t].max(initial=0.0) for t in np.linspace(0, 1, 11)]
    return float(np.mean(points))


def voc07_mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> tuple[float, list[float]]:
    """Mean over classes of :func:`voc07_average_precision` (classes without a positive left out): scores and
    targets [N, K]. Returns (mAP, AP per class), in [0, 1]."""
    aps = [voc07_average_precision(scores[:, k], targets[:, k]) for k in range(targets.shape[1])]
    return float(np.nanmean(aps)), aps
