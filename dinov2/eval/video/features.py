"""Clip features from frame features: every sampled frame through the frozen backbone, then one vector per clip.

``mean``: the average of the frames' class tokens [D] (the DINOv2 paper for UCF-101 and Kinetics-400);
``concat``: their concatenation in time order [num_frames * D] (for Something-Something v2, where the order of
the frames is the signal).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["AGGREGATIONS", "ClipEncoder", "aggregate_frames"]

AGGREGATIONS = ("mean", "concat")


def aggregate_frames(frame_features: Tensor, aggregation: str) -> Tensor:
    """[B, T, D] frame features -> [B, D] (``mean``) or [B, T * D] (``concat``)."""
    if aggregation == "mean":
        return frame_features.mean(dim=1)
    if aggregation == "concat":
        return frame_features.flatten(1)
    raise ValueError(f"unknown frame aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")


class ClipEncoder(nn.Module):
    """clips [B, T, 3, H, W] -> clip features (see :func:`aggregate_frames`) of a frozen ``backbone``
    (``backbone(images) -> [N, D]`` class tokens); the frames of a batch go through the backbone together."""

    def __init__(self, backbone: nn.Module, aggregation: str = "mean"):
        super().__init__()
        aggregate_frames(torch.zeros(1, 1, 1), aggregation)  # an unknown name fails here, not after extraction
        self.backbone, self.aggregation = backbone, aggregation

    def forward(self, clips: Tensor) -> Tensor:
        batch, frames = clips.shape[:2]
        features = self.backbone(clips.flatten(0, 1))  # [B * T, D]
        return aggregate_frames(features.float().view(batch, frames, -1), self.aggregation)
