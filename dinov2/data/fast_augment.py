"""Tensor implementation of the multi-crop pixel operations (the fast path of ``DataAugmentationDINO``).

The image is turned into a uint8 ``[3, H, W]`` tensor once (a channels-last view of the decoded
pixels, no copy); each crop is cut and resized on uint8 (antialiased bicubic, like PIL), converted
to float32 once, and every colour operation works in float on the 0..255 scale; the result is
rounded to 8-bit levels (as the PIL path yields) and normalised in one step. Random parameters are
not drawn here: ``augmentations.py`` draws them with the same calls, in the same order, as the
torchvision v1 transforms of the released (PIL) path.

The colour operations also take a batch ``[K, 3, H, W]`` with one factor per crop (a tensor
``[K, 1, 1, 1]``) on any device: the device path (``gpu_augment.py``) runs the same functions on
batches of crops. Their constants follow the input's device and dtype (scalars, or tensors made on
the input's device: nothing is copied from the host).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as nnf
from PIL import Image
from torchvision.transforms.v2 import functional as tvf

__all__ = [
    "to_uint8_chw",
    "resized_crop",
    "hflip",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_saturation",
    "adjust_hue",
    "to_grayscale",
    "gaussian_blur",
    "gaussian_blur_batch",
    "solarize",
    "normalization_constants",
    "normalize_255",
]

_LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601-2 weights, as PIL's convert("L")
_LUMA = torch.tensor(_LUMA_WEIGHTS)


def to_uint8_chw(image: Image.Image | torch.Tensor | np.ndarray) -> torch.Tensor:
    """RGB uint8 ``[3, H, W]`` from a PIL image, an ``[H, W, 3]`` array or a ``[3, H, W]``/``[1, H, W]`` tensor.

    PIL images and arrays become a channels-last view (strides ``(1, 3W, 3)``), which the uint8
    resize kernels read fastest.
    """
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        image = np.array(image)  # [H, W, 3], writable copy
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 array [H, W, 3], got {image.dtype} {image.shape}")
        return torch.from_numpy(image).permute(2, 0, 1)
    if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8 or image.ndim != 3:
        raise ValueError(f"expected a PIL image or a uint8 tensor [3, H, W], got {type(image).__name__}")
    if image.shape[0] == 1:
        return image.expand(3, -1, -1)
    if image.shape[0] != 3:
        raise ValueError(f"expected a uint8 tensor [3, H, W] (RGB), got shape {tuple(image.shape)}")
    return image


def resized_crop(image: torch.Tensor, top: int, left: int, height: int, width: int, size: int) -> torch.Tensor:
    """Crop ``[top:top+height, left:left+width]`` of a uint8 ``[3, H, W]`` image, resize to ``[3, size, size]``.

    Antialiased bicubic (PIL's ``BICUBIC`` semantics), uint8 in and out.
    """
    return tvf.resized_crop(
        image, top, left, height, width, [size, size], interpolation=tvf.InterpolationMode.BICUBIC, antialias=True
    )


def hflip(x: torch.Tensor) -> torch.Tensor:
    """Mirror ``[C, H, W]`` left-right."""
    return x.flip(-1)


Factor = float | torch.Tensor  # a number, or one value per crop of a batch: [K, 1, 1, 1]


def adjust_brightness(x: torch.Tensor, factor: Factor) -> torch.Tensor:
    """``x * factor`` clipped to [0, 255]; ``x`` float ``[..., 3, H, W]`` on the 0..255 scale."""
    return x.mul(factor).clamp_(0.0, 255.0)


def _luma(x: torch.Tensor) -> torch.Tensor:
    """601-2 grey level ``[..., 1, H, W]`` of ``x`` ``[..., 3, H, W]``."""
    if x.dim() == 3 and x.device.type == "cpu":  # one image in a worker: the released formula, bit for bit
        return torch.tensordot(_LUMA.to(x.dtype), x, dims=1).unsqueeze(0)
    # batches / accelerators: elementwise with scalar weights, so no constant is copied to the device (a
    # synchronising copy) and no TF32 / bf16 matmul setting can round the weights
    r, g, b = x.split(1, dim=-3)
    return r * _LUMA_WEIGHTS[0] + g * _LUMA_WEIGHTS[1] + b * _LUMA_WEIGHTS[2]


def adjust_contrast(x: torch.Tensor, factor: Factor) -> torch.Tensor:
    """Blend with the mean grey level of each image: ``mean + factor * (x - mean)``, clipped."""
    luma = _luma(x)
    mean = luma.mean() if x.dim() == 3 else luma.mean(dim=(-3, -2, -1), keepdim=True)  # [] or [K, 1, 1, 1]
    return x.sub(mean).mul_(factor).add_(mean).clamp_(0.0, 255.0)


def adjust_saturation(x: torch.Tensor, factor: Factor) -> torch.Tensor:
    """Blend with the per-pixel grey level: ``grey + factor * (x - grey)``, clipped."""
    grey = _luma(x)  # [..., 1, H, W]
    return x.sub(grey).mul_(factor).add_(grey).clamp_(0.0, 255.0)


_HUE_OFFSETS = (5.0, 3.0, 1.0)  # n of R, G, B in the closed form below


def adjust_hue(x: torch.Tensor, factor: Factor) -> torch.Tensor:
    """Rotate the HSV hue by ``factor`` turns (``factor`` in [-0.5, 0.5]); value and saturation are kept.

    Uses the closed form ``channel_n = V - C * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 * hue) mod 6``, ``n = 5, 3, 1`` for R, G, B and chroma ``C = max - min``.
    """
    maxc = x.amax(-3, keepdim=True)  # [..., 1, H, W]
    chroma = maxc - x.amin(-3, keepdim=True)
    inv_chroma = torch.where(chroma > 0, chroma.reciprocal(), 0.0)
    r, g, b = x.split(1, dim=-3)
    hue = torch.where(
        maxc == r,
        (g - b).mul_(inv_chroma),
        torch.where(maxc == g, (b - r).mul_(inv_chroma).add_(2.0), (r - g).mul_(inv_chroma).add_(4.0)),
    )  # [..., 1, H, W], sextants in (-1, 5]
    hue.add_(6.0 * factor)
    k = torch.cat([hue + offset for offset in _HUE_OFFSETS], dim=-3)  # [..., 3, H, W], no device constant
    k.sub_(torch.floor(k * (1.0 / 6.0)).mul_(6.0))  # k mod 6 (cheaper than remainder on CPU)
    ramp = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    return maxc - ramp.mul_(chroma)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Grey level (601-2 luma) repeated on 3 channels."""
    return _luma(x).expand_as(x).contiguous()


def _gaussian_kernel1d(kernel_size: int, sigma: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Normalised Gaussian weights ``[kernel_size]`` (``sigma`` a number) or ``[K, kernel_size]`` (``sigma`` ``[K]``),
    on the device and in the dtype of ``like``."""
    half = (kernel_size - 1) * 0.5
    pos = torch.linspace(-half, half, kernel_size, device=like.device, dtype=like.dtype)
    if isinstance(sigma, torch.Tensor):
        pos = pos / sigma.to(like).unsqueeze(-1)  # [K, kernel_size]
    else:
        pos = pos / sigma
    weights = torch.exp(-0.5 * pos**2)
    return weights / weights.sum(-1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: float, kernel_size: int = 9) -> torch.Tensor:
    """Gaussian blur of a float ``[C, H, W]`` image with reflect padding (torchvision's kernel).

    Applied separably as sums of shifted views, which on CPU is several times faster than a
    depthwise ``conv2d``; the result equals the 2-D convolution up to float rounding.
    """
    _, height, width = x.shape
    weights = _gaussian_kernel1d(kernel_size, sigma, x).tolist()
    pad = kernel_size // 2
    padded = nnf.pad(x.unsqueeze(0), (pad, pad, pad, pad), mode="reflect")[0]  # [C, H + 2p, W + 2p]
    rows = padded[:, :, :width] * weights[0]  # [C, H + 2p, W]
    for shift in range(1, kernel_size):
        rows.add_(padded[:, :, shift : shift + width], alpha=weights[shift])
    out = rows[:, :height] * weights[0]  # [C, H, W]
    for shift in range(1, kernel_size):
        out.add_(rows[:, shift : shift + height], alpha=weights[shift])
    return out


def gaussian_blur_batch(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int = 9) -> torch.Tensor:
    """Gaussian blur of a float batch ``[K, C, H, W]``, one ``sigma`` per image (``[K]``), reflect padding.

    The same separable sums of shifted views as :func:`gaussian_blur`, with per-image weights.
    """
    height, width = x.shape[-2:]
    weights = _gaussian_kernel1d(kernel_size, sigma, x).view(-1, kernel_size, 1, 1, 1).unbind(1)  # [K, 1, 1, 1] each
    pad = kernel_size // 2
    padded = nnf.pad(x, (pad, pad, pad, pad), mode="reflect")  # [K, C, H + 2p, W + 2p]
    rows = padded[..., :width] * weights[0]  # [K, C, H + 2p, W]
    for shift in range(1, kernel_size):
        rows.addcmul_(padded[..., shift : shift + width], weights[shift])
    out = rows[..., :height, :] * weights[0]  # [K, C, H, W]
    for shift in range(1, kernel_size):
        out.addcmul_(rows[..., shift : shift + height, :], weights[shift])
    return out


def solarize(x: torch.Tensor, threshold: float = 128.0) -> torch.Tensor:
    """Invert the levels at or above ``threshold`` (0..255 scale): ``255 - x`` where ``x >= threshold``."""
    return torch.where(x >= threshold, 255.0 - x, x)


def normalization_constants(mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` ``[3, 1, 1]`` such that ``x * scale - shift = (x / 255 - mean) / std``."""
    scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)]).view(3, 1, 1)
    return scale, shift


def normalize_255(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Round a 0..255 float image ``[..., 3, H, W]`` to 8-bit levels (in place), then ``x * scale - shift``.

    ``scale`` / ``shift`` come from :func:`normalization_constants` (moved to ``x``'s device when needed).
    """
    scale, shift = scale.to(device=x.device), shift.to(device=x.device)
    return x.round_().mul_(scale).sub_(shift)
