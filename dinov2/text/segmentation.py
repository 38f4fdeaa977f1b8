"""Open-vocabulary segmentation with a dino.txt model: per-class similarity of the vision head's patch tokens with
the local half of the class text embeddings, at pixel resolution, and its argmax.

Inference follows the DINOv3 release's evaluation notebook: the image is stretched (bicubic) to the next multiple of
the patch size, cosine maps at patch resolution are resized bilinearly to the image; with ``window`` the image is
cut in windows (``stride`` apart, the last one aligned to the border), each window's maps are turned into class
probabilities (softmax) and averaged where windows overlap (:func:`dinov2.heads.sliding_window.sliding_window_average`).
The DINOv2 demo notebook resized bicubically instead; the argmax of the whole-image maps hardly differs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.heads.sliding_window import sliding_window_average
from dinov2.text.zeroshot import patch_similarity

__all__ = ["text_similarity_maps", "segmentation_scores"]


def text_similarity_maps(model: nn.Module, images: Tensor, weights: Tensor) -> Tensor:
    """Cosine similarity of each pixel's head patch token with each class: ``[B, 3, H, W]`` x ``[D/2, C]`` ->
    ``[B, C, H, W]`` (``weights`` from :func:`~dinov2.text.zeroshot.zeroshot_weights` with ``part="local"``)."""
    height, width = images.shape[-2:]
    patch = int(model.visual_model.backbone.patch_size)
    grid = (math.ceil(height / patch), math.ceil(width / patch))
    if (grid[0] * patch, grid[1] * patch) != (height, width):
        images = F.interpolate(images, size=(grid[0] * patch, grid[1] * patch), mode="bicubic", align_corners=False)
    _, patch_tokens = model.get_visual_class_and_patch_tokens(images)  # [B, hw, D/2]
    maps = patch_similarity(patch_tokens, weights, grid)  # [B, C, h, w]
    return F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)


@torch.no_grad()
def segmentation_scores(
    model: nn.Module, images: Tensor, weights: Tensor, *, window: int | None = None, stride: int | None = None
) -> Tensor:
    """Per-class scores ``[B, C, H, W]`` (argmax: the segmentation): cosine maps of the whole image, or softmax
    probabilities averaged over ``window`` x ``window`` windows every ``stride`` px (default ``window // 2``)."""
    if window is None:
        return text_similarity_maps(model, images, weights)

    def predict(crop: Tensor) -> Tensor:
        return text_similarity_maps(model, crop, weights).softmax(dim=1)

    return sliding_window_average(images, predict, weights.shape[1], window, stride or max(window // 2, 1))
