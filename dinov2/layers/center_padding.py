"""Fitting images to the patch size: zero padding to a multiple, centred (the released
``dinov2.hub.utils.CenterPadding``), or stretching to one (DINOv3's ``StretchToMultiple``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CenterPadding", "StretchToMultiple"]


class CenterPadding(nn.Module):
    """Zero-pad the last two dimensions up to a multiple of ``multiple`` (the released ``CenterPadding``).

    The padding is split as ``left = total // 2``, ``right = total - left`` (the odd pixel goes right/bottom).
    Deviation: the release runs ``forward`` under ``torch.inference_mode()``, so nothing padded by it can be
    trained; here it is an ordinary differentiable op (same values).
    """

    def __init__(self, multiple: int):
        super().__init__()
        self.multiple = multiple

    def _get_pad(self, size: int) -> tuple[int, int]:
        new_size = math.ceil(size / self.multiple) * self.multiple
        pad_size = new_size - size
        pad_size_left = pad_size // 2
        return pad_size_left, pad_size - pad_size_left

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.pad takes (left, right) pairs from the last dimension backwards: width first, then height.
        pads = [*self._get_pad(x.shape[-1]), *self._get_pad(x.shape[-2])]
        return F.pad(x, pads)


class StretchToMultiple(nn.Module):
    """Resize (bilinear) the last two dimensions up to the next multiple of ``multiple``; unchanged when both already
    are (DINOv3's ``StretchToMultiple``, the depthers' other way to fit the patch size)."""

    def __init__(self, multiple: int):
        super().__init__()
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *shape, channels, height, width = x.shape
        new_height = math.ceil(height / self.multiple) * self.multiple
        new_width = math.ceil(width / self.multiple) * self.multiple
        if (new_height, new_width) == (height, width):
            return x
        x = F.interpolate(x.reshape(-1, channels, height, width), size=(new_height, new_width), mode="bilinear")
        return x.reshape(*shape, channels, new_height, new_width)
