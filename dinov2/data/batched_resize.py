"""Batched ``RandomResizedCrop`` pixels: cut and resize many boxes of many images with a few matrix products.

The CPU path resizes each uint8 crop with torch's antialiased bicubic kernel, which reproduces PIL: separable,
horizontal pass first, each pass an integer dot product with fixed-point weights, ``(sum + 2^(p-1)) >> p`` clipped
to [0, 255]. Its float weights are PIL's (bicubic ``a = -0.5`` stretched by the down-scaling factor, cut at the
box edges, normalised), rounded to int16 at the largest precision ``p`` at which the largest weight of the axis fits.

Here the same integer weights are written as matrices over the full (zero-padded) image width / height, zero
outside each box, so that every crop of a batch resizes with two batched products instead of kernels per crop. The
products are exact: each integer weight is split into a high and a low byte, whose products with 8-bit levels sum
to integers below 2^24, exact in float32 even where float32 matmuls run in TF32 or bf16 (both hold the bytes and the
levels exactly). The crops therefore equal the CPU path's bit for bit. Boxes more than ~64 times larger than their
output (images over ~6000 px) would overflow that bound; those chunks use float64 products.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["resize_weights", "fixed_point_weights", "resized_crops"]

_A = -0.5  # bicubic coefficient of PIL and of torch's antialiased kernels
_MAX_CHUNK_ELEMENTS = 1 << 25  # float32 elements of the largest tensor of one chunk (128 MiB)
_MAX_FLOAT32_TAPS = 257  # taps per output sample below which byte products sum exactly in float32 (255*255*257 < 2^24)


def _cubic(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic kernel (``a = -0.5``, support ``(-2, 2)``) in the evaluation order of torch's ``aa_filter``."""
    t = t.abs()
    near = ((_A + 2.0) * t - (_A + 3.0)) * t * t + 1.0
    far = ((_A * t - 5.0 * _A) * t + 8.0 * _A) * t - 4.0 * _A
    return torch.where(t < 1.0, near, torch.where(t < 2.0, far, 0.0))


def resize_weights(start: torch.Tensor, length: torch.Tensor, out_size: int, extent: int) -> torch.Tensor:
    """Antialiased bicubic weights ``[K, out_size, extent]`` (float64) resizing ``[start, start + length)`` of a
    line of ``extent`` pixels to ``out_size`` samples, for ``K`` boxes (``start`` / ``length`` int ``[K]``).

    Row ``j`` is centred at ``(j + 0.5) * length / out_size`` in box coordinates; taps outside the box get no
    weight; rows sum to 1 (PIL's ``precompute_coeffs``, torch's ``_compute_indices_min_size_weights_aa``).
    """
    scale = length.to(torch.float64) / out_size  # [K] source pixels per output pixel
    inverse = torch.where(scale >= 1.0, 1.0 / scale, 1.0)  # the filter stretches only when down-scaling
    device = start.device
    center = scale[:, None] * (torch.arange(out_size, device=device, dtype=torch.float64) + 0.5)  # [K, S]
    position = torch.arange(extent, device=device, dtype=torch.float64) - start[:, None]  # [K, P], box coordinates
    inside = (position >= 0) & (position < length[:, None])  # [K, P]
    t = ((position[:, None, :] - center[:, :, None]) + 0.5) * inverse[:, None, None]  # [K, S, P]
    weights = _cubic(t) * inside[:, None, :]
    return weights / weights.sum(-1, keepdim=True)


def fixed_point_weights(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's int16 weights of ``weights`` ``[K, S, P]``: ``(integers as float64 [K, S, P], precision int64 [K])``.

    The precision of each box is the first ``p < 22`` with ``int(0.5 + max_weight * 2^(p+1)) >= 2^15`` (else 22);
    weights are ``weights * 2^p`` rounded half away from zero (torch's ``_compute_index_ranges_int16_weights``).
    """
    largest = weights.amax(dim=(1, 2))  # [K]
    powers = 2.0 ** torch.arange(1, 23, device=weights.device, dtype=torch.float64)  # 2^(p + 1), p = 0..21
    reached = torch.floor(0.5 + largest[:, None] * powers) >= 2.0**15  # [K, 22]
    precision = (~reached).to(torch.int64).cumprod(1).sum(1)  # leading False count: first p reached, or 22
    scaled = weights * (2.0 ** precision.to(torch.float64))[:, None, None]
    return torch.sign(scaled) * torch.floor(scaled.abs() + 0.5), precision


def _fixed_point_pass(
    data: torch.Tensor, weights: torch.Tensor, precision: torch.Tensor, weights_on_left: bool, dtype: torch.dtype
) -> torch.Tensor:
    """One pass of the uint8 kernel: ``clip((data . weights + 2^(p-1)) >> p, 0, 255)`` as float32 levels.

    ``data`` holds 8-bit levels, ``weights`` integers (float64), ``precision`` broadcasts against the result. The
    weights split into bytes, ``w = 256 * high + low`` (``low`` in [0, 256)), so both products are exact; then
    ``(256 * S_high + S_low + 2^(p-1)) >> p == (S_high + 2^(p-9) + (S_low >> 8)) >> (p - 8)`` keeps every term an
    integer below 2^24 (``p >= 13`` always: the largest normalised weight is below 2).
    """
    high = torch.floor(weights / 256.0)
    low = (weights - 256.0 * high).to(dtype)
    high, data = high.to(dtype), data.to(dtype)
    s_high, s_low = (high @ data, low @ data) if weights_on_left else (data @ high, data @ low)
    step = 2.0 ** (precision - 8).to(dtype)  # 2^(p-8)
    total = s_high.add_(step / 2.0).add_(torch.floor(s_low / 256.0))  # + 2^(p-9) + (S_low >> 8)
    return torch.floor(total.div_(step)).clamp_(0.0, 255.0).to(torch.float32)


def _chunks(sizes: list[tuple[int, int]], columns: int, max_elements: int) -> list[list[int]]:
    """Image indices grouped (by decreasing area) so that a chunk's padded tensors stay under ``max_elements``."""
    order = sorted(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1], reverse=True)
    chunks, current, max_h, max_w = [], [], 0, 0
    for index in order:
        height, width = sizes[index]
        new_h, new_w = max(max_h, height), max(max_w, width)
        if current and (len(current) + 1) * 3 * new_h * max(new_w, columns) > max_elements:
            chunks.append(current)
            current, new_h, new_w = [], height, width
        current.append(index)
        max_h, max_w = new_h, new_w
    return chunks + [current]


def _product_dtype(boxes: torch.Tensor, groups: Sequence[tuple[int, int]]) -> torch.dtype:
    """float32 when every output sample has fewer than ``_MAX_FLOAT32_TAPS`` taps (decided on the host)."""
    first, taps = 0, 0
    for n, size in groups:
        longest = int(boxes[:, first : first + n, 2:].max())  # host-side: boxes stay on the CPU
        taps = max(taps, 2 * math.ceil(2.0 * max(longest / size, 1.0)) + 1)
        first += n
    return torch.float32 if taps < _MAX_FLOAT32_TAPS else torch.float64


def _resize_chunk(
    images: list[torch.Tensor], boxes: torch.Tensor, groups: Sequence[tuple[int, int]]
) -> list[torch.Tensor]:
    """Crops of one chunk of ``b`` images: ``[n, b, 3, S, S]`` float levels per group ``(n, S)``."""
    b, device, dtype = len(images), images[0].device, _product_dtype(boxes, groups)
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    padded = torch.zeros((b, 3, height, width), dtype=dtype, device=device)
    for index, image in enumerate(images):
        padded[index, :, : image.shape[-2], : image.shape[-1]].copy_(image)  # uint8 -> float
    top, left, box_h, box_w = boxes.to(device=device, non_blocking=True).unbind(-1)  # [b, n] each
    horizontal, precisions, first = [], [], 0
    for n, size in groups:  # integer weights [b * n, S, width] -> [b, width, n * S]
        w = resize_weights(left[:, first : first + n].flatten(), box_w[:, first : first + n].flatten(), size, width)
        w, precision = fixed_point_weights(w)
        horizontal.append(w.view(b, n * size, width).transpose(1, 2))
        precisions.append(precision.view(b, n, 1).expand(b, n, size).reshape(b, 1, n * size))
        first += n
    rows = _fixed_point_pass(
        padded.view(b, 3 * height, width), torch.cat(horizontal, 2), torch.cat(precisions, 2), False, dtype
    )  # [b, 3H, sum n*S]: the uint8 kernel's intermediate image
    outputs, first, column = [], 0, 0
    for n, size in groups:
        columns = rows[..., column : column + n * size].reshape(b, 3, height, n, size)
        columns = columns.permute(0, 3, 2, 1, 4).reshape(b * n, height, 3 * size)  # [b*n, H, 3*S]
        w = resize_weights(top[:, first : first + n].flatten(), box_h[:, first : first + n].flatten(), size, height)
        w, precision = fixed_point_weights(w)
        out = _fixed_point_pass(columns, w, precision.view(-1, 1, 1), True, dtype)  # [b*n, S, 3*S]
        outputs.append(out.view(b, n, size, 3, size).permute(1, 0, 3, 2, 4))  # [n, b, 3, S, S]
        first, column = first + n, column + n * size
    return outputs


def resized_crops(
    images: Sequence[torch.Tensor],
    boxes: torch.Tensor,
    groups: Sequence[tuple[int, int]],
    max_chunk_elements: int = _MAX_CHUNK_ELEMENTS,
) -> list[torch.Tensor]:
    """Cut and resize the crops of a batch of images, crop-major, as ``fast_augment.resized_crop`` does each.

    Args:
        images: ``B`` uint8 images ``[3, H_i, W_i]`` on one device.
        boxes: int64 ``[B, n_crops, 4]`` ``(top, left, height, width)`` of every crop, on the CPU.
        groups: ``(count, size)`` of consecutive crops sharing an output size, e.g. ``[(2, 224), (8, 96)]``.
        max_chunk_elements: images are processed in chunks whose padded tensors hold at most this many floats.

    Returns:
        one float32 tensor ``[count, B, 3, size, size]`` of 8-bit levels per group (crop-major).
    """
    if boxes.shape[:2] != (len(images), sum(n for n, _ in groups)) or boxes.shape[-1] != 4:
        raise ValueError(
            f"resized_crops: boxes must be [B={len(images)}, n_crops={sum(n for n, _ in groups)}, 4], "
            f"got {tuple(boxes.shape)}"
        )
    device = images[0].device
    outputs = [torch.empty((n, len(images), 3, size, size), device=device) for n, size in groups]
    sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
    columns = sum(n * size for n, size in groups)
    for chunk in _chunks(sizes, columns, max_chunk_elements):
        results = _resize_chunk([images[i] for i in chunk], boxes[chunk], groups)
        index = torch.tensor(chunk).to(device, non_blocking=True)  # no synchronising copy
        for output, result in zip(outputs, results):
            output.index_copy_(1, index, result)
    return outputs
