"""Draw class maps: a colour image per class map, blended over the input image, saved as PNG."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dinov2.data.dense_transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["colorize_segmentation", "overlay_segmentation", "save_overlay", "tensor_to_image"]


def tensor_to_image(image: Tensor) -> Image.Image:
    """A normalised RGB tensor ``[3, H, W]`` (ImageNet mean/std) back to a PIL image."""
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    array = ((image.detach().float().cpu() * std + mean).clamp(0, 1) * 255.0).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).numpy())


def colorize_segmentation(classes: Tensor | np.ndarray, palette: Sequence[Sequence[int]]) -> Image.Image:
    """Class map ``[H, W]`` -> RGB image with colour ``palette[c]`` for class ``c`` (ignore / out-of-range: black)."""
    classes = np.asarray(classes.cpu() if isinstance(classes, Tensor) else classes).astype(np.int64)
    if classes.ndim != 2:
        raise ValueError(f"expected a class map [H, W], got shape {classes.shape}")
    table = np.asarray(palette, dtype=np.uint8)  # [K, 3]
    colours = np.zeros((*classes.shape, 3), dtype=np.uint8)
    valid = (classes >= 0) & (classes < len(table))
    colours[valid] = table[classes[valid]]
    return Image.fromarray(colours)


def overlay_segmentation(
    image: Image.Image | Tensor, classes: Tensor | np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5
) -> Image.Image:
    """The class colours blended over ``image`` (a PIL image or a normalised ``[3, H, W]`` tensor)."""
    if isinstance(image, Tensor):
        image = tensor_to_image(image)
    colours = colorize_segmentation(classes, palette)
    if colours.size != image.size:
        raise ValueError(f"class map size {colours.size} differs from image size {image.size} (width, height)")
    return Image.blend(image.convert("RGB"), colours, alpha)


def save_overlay(
    path: str | os.PathLike,
    image: Image.Image | Tensor,
    classes: Tensor | np.ndarray,
    palette: Sequence[Sequence[int]],
    alpha: float = 0.5,
) -> Image.Image:
    """Write :func:`overlay_segmentation` as a PNG to ``path``; returns the image."""
    overlay = overlay_segmentation(image, classes, palette, alpha)
    overlay.save(path, format="PNG")
    return overlay
