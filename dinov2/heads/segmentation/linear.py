"""The released segmentation head (mmseg ``BNHead``): batch norm + 1x1 conv on patch features.

Keys (under ``decode_head.`` in the released ``*_head.pth`` files): ``conv_seg.{weight,bias}``,
``bn.{weight,bias,running_mean,running_var,num_batches_tracked}``. The release uses ``SyncBatchNorm``; a plain
``BatchNorm2d`` has the same keys and, in eval mode, the same arithmetic (convert with
``nn.SyncBatchNorm.convert_sync_batchnorm`` to train on several processes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BNHead", "LinearSegmentationHead"]


class LinearSegmentationHead(nn.Module):
    """``conv_seg(bn(concat(resize(features))))``: per-patch class logits.

    ``in_channels``: channels of each input map (one per tapped block; the release's linear heads take the last
    block, the ``ms`` heads the last 4). Inputs ``[B, C_i, h, w]`` are resized (bilinear) to the first one's grid
    and concatenated. Output ``[B, num_classes, h, w]`` (token resolution).
    """

    def __init__(self, in_channels: Sequence[int], num_classes: int, *, align_corners: bool = False) -> None:
        super().__init__()
        self.in_channels = [int(c) for c in in_channels]
        self.channels = sum(self.in_channels)
        self.num_classes = int(num_classes)
        self.align_corners = align_corners
        self.conv_seg = nn.Conv2d(self.channels, self.num_classes, kernel_size=1)  # registered first (key order)
        self.bn = nn.BatchNorm2d(self.channels)
        nn.init.normal_(self.conv_seg.weight, mean=0.0, std=0.01)  # mmseg BaseDecodeHead.init_weights
        nn.init.zeros_(self.conv_seg.bias)

    def features(self, inputs: Sequence[Tensor]) -> Tensor:
        """Resized and concatenated inputs ``[B, sum(in_channels), h, w]`` (before the batch norm)."""
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"the segmentation head expects {len(self.in_channels)} feature maps, got {len(inputs)}")
        size = inputs[0].shape[2:]
        maps = [
            x if x.shape[2:] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)
            for x in inputs
        ]
        return torch.cat(maps, dim=1)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.conv_seg(self.bn(self.features(inputs)))


BNHead = LinearSegmentationHead  # the released class name (``dinov2.eval.segmentation.models.BNHead``)
