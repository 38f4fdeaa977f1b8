"""Monocular depth metrics of the released depth evaluation (Monocular-Depth-Estimation-Toolbox conventions).

Per image, over the pixels with ``min_depth < gt < max_depth`` (and inside the Eigen crop for NYU or the Garg
crop for KITTI, when asked): ``a1, a2, a3`` (fraction with ``max(gt/pred, pred/gt) < 1.25^k``), ``abs_rel``,
``sq_rel``, ``rmse``, ``rmse_log``, ``log_10``, ``silog`` (x100). The reported value of each metric is its
mean over the images (images without a valid pixel are left out).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dinov2 import distributed

__all__ = ["DEPTH_METRICS", "DepthMetric", "depth_metrics", "eval_mask"]

DEPTH_METRICS = ("a1", "a2", "a3", "abs_rel", "rmse", "log_10", "rmse_log", "silog", "sq_rel")


def depth_metrics(pred: Tensor, gt: Tensor) -> dict[str, float]:
    """The metrics of matching 1-D tensors of valid predicted and true depths (positive)."""
    pred, gt = pred.double(), gt.double()
    if gt.numel() == 0:
        return dict.fromkeys(DEPTH_METRICS, math.nan)
    thresh = torch.maximum(gt / pred, pred / gt)
    err = torch.log(pred) - torch.log(gt)
    return {
        "a1": float((thresh < 1.25).double().mean()),
        "a2": float((thresh < 1.25**2).double().mean()),
        "a3": float((thresh < 1.25**3).double().mean()),
        "abs_rel": float(((gt - pred).abs() / gt).mean()),
        "rmse": float(((gt - pred) ** 2).mean().sqrt()),
        "log_10": float((torch.log10(gt) - torch.log10(pred)).abs().mean()),
        "rmse_log": float((err**2).mean().sqrt()),
        "silog": float(((err**2).mean() - err.mean() ** 2).clamp_min(0).sqrt() * 100),
        "sq_rel": float(((gt - pred) ** 2 / gt).mean()),
    }


def eval_mask(gt: Tensor, min_depth: float, max_depth: float, crop: str | None = None) -> Tensor:
    """Valid pixels of ``gt [H, W]``: ``min_depth < gt < max_depth``, inside the ``eigen`` (NYU: rows 45:471,
    columns 41:601) or ``garg`` (KITTI, relative) crop when asked."""
    mask = (gt > min_depth) & (gt < max_depth)
    if crop is None:
        return mask
    height, width = gt.shape[-2:]
    region = torch.zeros_like(mask)
    if crop == "eigen":
        region[..., 45:471, 41:601] = True
    elif crop == "garg":
        region[..., int(0.40810811 * height) : int(0.99189189 * height),
               int(0.03594771 * width) : int(0.96405229 * width)] = True  # fmt: skip
    else:
        raise ValueError(f"crop must be None, 'eigen' or 'garg', got {crop!r}")
    return mask & region


class DepthMetric:
    """Per-image metrics summed over batches (and processes); :meth:`compute` gives their means."""

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, crop: str | None = None) -> None:
        self.min_depth, self.max_depth, self.crop = min_depth, max_depth, crop
        self.sums = torch.zeros(len(DEPTH_METRICS), dtype=torch.float64)
        self.counts = torch.zeros(len(DEPTH_METRICS), dtype=torch.float64)

    def update(self, pred: Tensor, gt: Tensor) -> None:
        """``pred`` ``[B, 1, H, W]`` or ``[B, H, W]`` and ``gt`` ``[B, H, W]`` in metres."""
        pred = pred.reshape(gt.shape)
        for p, g in zip(pred, gt):
            mask = eval_mask(g, self.min_depth, self.max_depth, self.crop)
            values = torch.tensor([depth_metrics(p[mask], g[mask])[k] for k in DEPTH_METRICS], dtype=torch.float64)
            finite = ~torch.isnan(values)
            self.sums += torch.where(finite, values, torch.zeros_like(values))
            self.counts += finite.double()

    def all_reduce(self) -> None:
        distributed.all_reduce(self.sums)
        distributed.all_reduce(self.counts)

    def compute(self) -> dict[str, float]:
        return {k: float(s / c) if c else math.nan for k, s, c in zip(DEPTH_METRICS, self.sums, self.counts)}
