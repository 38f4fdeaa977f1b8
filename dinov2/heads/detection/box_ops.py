"""Box arithmetic of the detector: boxes are ``(cx, cy, w, h)`` or ``(x0, y0, x1, y1)`` in pixels, last dim 4."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import box_convert

__all__ = ["box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh", "delta2bbox"]


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``[..., 4]`` centre, width, height -> corners."""
    return box_convert(boxes, "cxcywh", "xyxy")


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``[..., 4]`` corners -> centre, width, height."""
    return box_convert(boxes, "xyxy", "cxcywh")


def delta2bbox(
    proposals: Tensor,
    deltas: Tensor,
    max_shape: tuple[Tensor, Tensor] | None = None,
    wh_ratio_clip: float = 16 / 1000,
) -> Tensor:
    """Corners ``[..., 4]`` of ``proposals`` (``[..., 4]`` cx, cy, w, h) moved by ``deltas`` ``[..., 4]``: centre by
    ``(dx w, dy h)``, size times ``exp(dw), exp(dh)`` (clamped to ``|log wh_ratio_clip|``); with ``max_shape``
    (heights, widths, each broadcasting to ``[..., 1]``) clipped to ``[0, width] x [0, height]``."""
    max_ratio = abs(math.log(wh_ratio_clip))
    dwh = deltas[..., 2:].clamp(min=-max_ratio, max=max_ratio)
    centres = proposals[..., :2] + proposals[..., 2:] * deltas[..., :2]
    sizes = proposals[..., 2:] * dwh.exp()
    boxes = torch.cat([centres - sizes * 0.5, centres + sizes * 0.5], dim=-1)
    if max_shape is not None:
        boxes[..., 0::2].clamp_(min=0).clamp_(max=max_shape[1])
        boxes[..., 1::2].clamp_(min=0).clamp_(max=max_shape[0])
    return boxes
