"""Multi-crop augmentation with Gram teacher crops (DINOv3's ``crops.gram_teacher_crops_size``).

Each global crop and its Gram teacher crop come from one random resized crop taken at ``max(global, gram)`` pixels
(bicubic) and flipped once; then, as released:

- ``gram_teacher_no_distortions=True``: the global crop is resized to the global size *before* the colour jitter,
  grayscale, blur and solarize (so those act at the usual size), and the Gram crop is the undistorted crop resized
  to the Gram size and normalised;
- otherwise the distortions run at the large size, and both crops are resized from the normalised result.

The random draws are those of :class:`~dinov2.data.augmentations.DataAugmentationDINO` in the same order (the crop
region does not depend on the output size), so only the pixels of the global crops differ from a run without Gram
crops. Tensor path only (``fast=True``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as tvf

from . import fast_augment as ops
from .augmentations import DataAugmentationDINO

__all__ = ["DataAugmentationGram"]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic, antialiased resize of ``[3, H, W]`` (uint8 or float) to ``[3, size, size]``; same size: unchanged."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return tvf.resize(x, [size, size], interpolation=tvf.InterpolationMode.BICUBIC, antialias=True)


class DataAugmentationGram(DataAugmentationDINO):
    """:class:`DataAugmentationDINO` whose output also holds ``gram_teacher_crops`` (two ``[3, G, G]`` crops)."""

    def __init__(
        self, *args: Any, gram_teacher_crops_size: int, gram_teacher_no_distortions: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if not self.fast:
            raise ValueError("DataAugmentationGram: Gram teacher crops need the tensor path (fast=True)")
        if int(gram_teacher_crops_size) < 1:
            raise ValueError(f"crops.gram_teacher_crops_size={gram_teacher_crops_size} must be a positive size")
        self.gram_teacher_crops_size = int(gram_teacher_crops_size)
        self.gram_teacher_no_distortions = bool(gram_teacher_no_distortions)
        self.base_size = max(self.global_crops_size, self.gram_teacher_crops_size)

    def _global_and_gram(self, pixels: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.draw_crop_params(kind, pixels.shape[-2], pixels.shape[-1])
        base = ops.resized_crop(pixels, params.top, params.left, params.height, params.width, self.base_size)
        if params.flip:
            base = ops.hflip(base)
        size = self.global_crops_size

        def distorted(image: torch.Tensor) -> torch.Tensor:
            # The crop is already taken and flipped: only the photometric part of ``params`` applies.
            side = image.shape[-1]
            whole = dataclasses.replace(params, top=0, left=0, height=side, width=side, flip=False)
            return self.apply_crop_params(image, whole, side)

        if self.gram_teacher_no_distortions:
            global_crop = distorted(_resize(base, size))
            gram_crop = ops.normalize_255(_resize(base, self.gram_teacher_crops_size).float(), *self._scale_shift)
        else:
            full = distorted(base)
            global_crop, gram_crop = _resize(full, size), _resize(full, self.gram_teacher_crops_size)
        return global_crop, gram_crop

    def __call__(self, image: Image.Image | torch.Tensor) -> dict[str, Any]:
        pixels = ops.to_uint8_chw(image)
        global_1, gram_1 = self._global_and_gram(pixels, "global1")
        global_2, gram_2 = self._global_and_gram(pixels, "global2")
        local_crops = [self._tensor_crop(pixels, "local") for _ in range(self.local_crops_number)]
        return {
            "global_crops": [global_1, global_2],
            "global_crops_teacher": [global_1, global_2],
            "gram_teacher_crops": [gram_1, gram_2],
            "local_crops": local_crops,
            "offsets": (),
        }
