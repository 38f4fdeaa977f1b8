"""Sliding-window inference as mmseg 0.x ``EncoderDecoder.slide_inference`` (and the released depther) does it.

Windows of ``crop`` pixels start every ``stride`` pixels; the last window of a row/column is shifted back to end
at the image border; a window larger than the image is clipped to the image (run as it is, without padding).
Window outputs are summed on a canvas and divided by the number of windows covering each pixel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from torch import Tensor

__all__ = ["as_pairs", "sliding_window_average", "window_boxes"]


def as_pairs(values: Sequence[int] | int) -> tuple[int, int]:
    """``512`` or ``[512, 512]`` -> ``(512, 512)``."""
    if isinstance(values, int):
        return values, values
    first, second = values
    return int(first), int(second)


def window_boxes(height: int, width: int, crop, stride) -> Iterator[tuple[int, int, int, int]]:
    """``(y1, y2, x1, x2)`` of every window, row by row (mmseg's order and arithmetic)."""
    (h_crop, w_crop), (h_stride, w_stride) = as_pairs(crop), as_pairs(stride)
    if min(h_crop, w_crop, h_stride, w_stride) <= 0:
        raise ValueError(f"crop {crop} and stride {stride} must be positive")
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2 = min(h_idx * h_stride + h_crop, height)
            x2 = min(w_idx * w_stride + w_crop, width)
            yield max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2


def sliding_window_average(img: Tensor, predict: Callable[[Tensor], Tensor], out_channels: int, crop, stride) -> Tensor:
    """Average of ``predict(window) [B, out_channels, h, w]`` over the windows: ``[B, out_channels, H, W]``.

    ``predict`` must return an output of its window's size (e.g. logits resized to the crop).
    """
    batch, _, height, width = img.shape
    canvas = None
    count = img.new_zeros((1, 1, height, width))
    for y1, y2, x1, x2 in window_boxes(height, width, crop, stride):
        out = predict(img[:, :, y1:y2, x1:x2])
        if out.shape[-2:] != (y2 - y1, x2 - x1) or out.shape[1] != out_channels:
            raise ValueError(
                f"window prediction has shape {tuple(out.shape)}, expected [B, {out_channels}, {y2 - y1}, {x2 - x1}]"
            )
        if canvas is None:
            canvas = out.new_zeros((batch, out_channels, height, width))
        canvas[:, :, y1:y2, x1:x2] += out
        count[:, :, y1:y2, x1:x2] += 1
    return canvas / count.to(canvas.dtype)
