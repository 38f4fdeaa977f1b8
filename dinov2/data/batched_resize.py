"""Batched ``RandomResizedCrop`` pixels: cut and resize many boxes of many images with a few matrix products.

PIL's antialiased bicubic resize (which torch's uint8 kernel, used by the CPU path, reproduces) is separable: a box
``[top, top + h) x [left, left + w)`` resized to ``S x S`` is ``Wy @ box @ Wx^T``, where row ``j`` of ``Wx`` holds
the filter weights of output column ``j`` over the ``w`` source columns (bicubic ``a = -0.5`` stretched by the
down-scaling factor, cut at the box edges and normalised to sum 1). Writing ``Wx`` over the image's full width,
zero outside the box, turns every crop of a batch into two batched products over zero-padded images, whatever the
boxes: a constant number of kernels per batch on a GPU instead of several per crop.

Like the uint8 kernel, the horizontal pass comes first and both passes round to 8-bit levels (half up) and clip to
[0, 255]; the results equal the CPU path's crops except where the uint8 kernel's fixed-point weights tip a value
sitting within ~0.01 of a half level (measured in ``tests/data/test_gpu_augment.py``). Weights are computed in
float64 and applied in float32; where float32 products may run in reduced precision (TF32 / bf16 on CUDA, or a
``torch.set_float32_matmul_precision`` other than ``"highest"``) each weight matrix is split into a part exact in
bf16 and a remainder, so that the products of 8-bit levels stay accurate to ~1e-4 level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["resize_weights", "resized_crops"]

_A = -0.5  # bicubic coefficient of PIL and of torch's antialiased kernels
_MAX_CHUNK_ELEMENTS = 1 << 25  # float32 elements of the largest tensor of one chunk (128 MiB)


def _cubic(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with ``a = -0.5``, support ``(-2, 2)``."""
    t = t.abs()
    near = ((_A + 2.0) * t - (_A + 3.0)) * t * t + 1.0
    far = (((t - 5.0) * t + 8.0) * t - 4.0) * _A
    return torch.where(t < 1.0, near, torch.where(t < 2.0, far, 0.0))


def resize_weights(start: torch.Tensor, length: torch.Tensor, out_size: int, extent: int) -> torch.Tensor:
    """Antialiased bicubic weights ``[K, out_size, extent]`` (float64) resizing ``[start, start + length)`` of a
    line of ``extent`` pixels to ``out_size`` samples, for ``K`` boxes (``start`` / ``length`` int ``[K]``).

    Row ``j`` is centred at ``start + (j + 0.5) * length / out_size``; taps outside the box get no weight and the
    row sums to 1 (PIL's ``precompute_coeffs``).
    """
    scale = length.to(torch.float64) / out_size  # [K] source pixels per output pixel
    filter_scale = scale.clamp(min=1.0)  # the filter stretches only when down-scaling
    device = start.device
    center = (torch.arange(out_size, device=device, dtype=torch.float64) + 0.5) * scale[:, None]  # [K, S]
    position = torch.arange(extent, device=device, dtype=torch.float64) - start[:, None]  # [K, P], box coordinates
    inside = (position >= 0) & (position < length[:, None])  # [K, P]
    t = (position[:, None, :] + 0.5 - center[:, :, None]) / filter_scale[:, None, None]  # [K, S, P]
    weights = _cubic(t) * inside[:, None, :]
    return weights / weights.sum(-1, keepdim=True)


def _exact_bf16_split(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``weights = high + low`` with ``high`` keeping 8 significant bits (exact in bf16 and TF32)."""
    high = (weights.view(torch.int32) & -65536).view(torch.float32)
    return high, weights - high


def _full_precision_matmul(device: torch.device) -> bool:
    return device.type == "cpu" and torch.get_float32_matmul_precision() == "highest"


def level_matmul(left: torch.Tensor, right: torch.Tensor, weights_on_left: bool) -> torch.Tensor:
    """``left @ right`` where one operand holds 8-bit levels (exact in any float format) and the other weights.

    Accurate to float32 even where float32 matmuls run in TF32 / bf16: the weights are then split in two parts
    that those formats hold exactly (or nearly: ~2^-16 relative), at twice the cost.
    """
    if _full_precision_matmul(left.device):
        return left @ right
    if weights_on_left:
        high, low = _exact_bf16_split(left)
        return high @ right + low @ right
    high, low = _exact_bf16_split(right)
    return left @ high + left @ low


def _to_levels_(x: torch.Tensor) -> torch.Tensor:
    """Round half up and clip to [0, 255], in place (the uint8 kernels' ``(sum + half) >> bits`` then clip)."""
    return x.add_(0.5).floor_().clamp_(0.0, 255.0)


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


def _resize_chunk(
    images: list[torch.Tensor], boxes: torch.Tensor, groups: Sequence[tuple[int, int]]
) -> list[torch.Tensor]:
    """Crops of one chunk of ``b`` images: ``[n, b, 3, S, S]`` float levels per group ``(n, S)``."""
    b = len(images)
    height = max(image.shape[-2] for image in images)
    width = max(image.shape[-1] for image in images)
    device = images[0].device
    padded = torch.zeros((b, 3, height, width), dtype=torch.float32, device=device)
    for index, image in enumerate(images):
        padded[index, :, : image.shape[-2], : image.shape[-1]].copy_(image)  # uint8 -> float
    top, left, box_h, box_w = boxes.to(device=device, non_blocking=True).unbind(-1)  # [b, n] each
    horizontal, first = [], 0
    for n, size in groups:  # [b * n, S, width] -> [b, width, n * S]
        w = resize_weights(left[:, first : first + n].flatten(), box_w[:, first : first + n].flatten(), size, width)
        horizontal.append(w.view(b, n * size, width).transpose(1, 2))
        first += n
    wx = torch.cat(horizontal, dim=2).to(torch.float32)  # [b, width, sum n*S]
    rows = _to_levels_(level_matmul(padded.view(b, 3 * height, width), wx, weights_on_left=False))  # [b, 3H, sum nS]
    outputs, first, column = [], 0, 0
    for n, size in groups:
        columns = rows[..., column : column + n * size].reshape(b, 3, height, n, size)
        columns = columns.permute(0, 3, 2, 1, 4).reshape(b * n, height, 3 * size)  # [b*n, H, 3*S]
        wy = resize_weights(top[:, first : first + n].flatten(), box_h[:, first : first + n].flatten(), size, height)
        out = _to_levels_(level_matmul(wy.to(torch.float32), columns, weights_on_left=True))  # [b*n, S, 3*S]
        outputs.append(out.view(b, n, size, 3, size).permute(1, 0, 3, 2, 4))  # [n, b, 3, S, S]
        first, column = first + n, column + n * size
    return outputs


def resized_crops(
    images: Sequence[torch.Tensor],
    boxes: torch.Tensor,
    groups: Sequence[tuple[int, int]],
    max_chunk_elements: int = _MAX_CHUNK_ELEMENTS,
) -> list[torch.Tensor]:
    """Cut and resize the crops of a batch of images, crop-major.

    Args:
        images: ``B`` uint8 (or float 0..255) images ``[3, H_i, W_i]`` on one device.
        boxes: int64 ``[B, n_crops, 4]`` ``(top, left, height, width)`` of every crop (any device; CPU is best).
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
        index = torch.tensor(chunk, device=device)
        for output, result in zip(outputs, results):
            output.index_copy_(1, index, result)
    return outputs
