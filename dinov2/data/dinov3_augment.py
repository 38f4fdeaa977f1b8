"""DINOv3's multi-crop augmentation: DINOv2's crops plus the keys DINOv3 added to ``crops``.

- **Gram teacher crops** (``crops.gram_teacher_crops_size``): each global crop and its Gram teacher crop come from one
  random resized crop taken at ``max(global, gram)`` pixels (bicubic) and flipped once; then, as released,
  ``gram_teacher_no_distortions=True`` resizes the global crop to the global size *before* the colour jitter,
  grayscale, blur and solarize (so those act at the usual size) and the Gram crop is the undistorted crop resized to
  the Gram size and normalised; otherwise the distortions run at the large size and both crops are resized from the
  normalised result.
- **Shared colour jitter** (``crops.share_color_jitter``): one colour jitter and grayscale draw for the whole image,
  applied before any crop is taken (the jittered image is rounded to 8 bits, as the release's PIL image is), so every
  crop of an image has the same colours; each crop keeps its own blur (and global crop 2 its solarize).
- **Local crops cut from the global crops** (``crops.localcrops_subset_of_globalcrops``): the first half of the local
  crops come from global crop 1's base (its random resized crop, flipped, before any distortion), the second half
  from global crop 2's: each runs its own colour jitter (unless shared), grayscale and blur over the whole base, then a
  ``local_crops_size`` window is cut at a (row, column) offset that is a multiple of ``patch_size``, drawn in
  ``[0, (global - local) // patch_size)`` patches per axis (the release's exclusive bound: the last patch position
  is never drawn). ``offsets`` lists them; nothing downstream reads them, as released.

The random draws are :class:`~dinov2.data.augmentations.DataAugmentationDINO`'s in the release's order: the shared
colour draw, global crop 1 (crop, flip, colour, blur), global crop 2 (the same and solarize), each local crop (crop
and flip unless cut from a global crop, colour, blur), then the offsets. The release draws the offsets from numpy's
global generator; here they come from torch's like every other draw, so a resumed run replays them. With none of
the three options the output is :class:`DataAugmentationDINO`'s, draw for draw. Tensor path only (``fast=True``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as tvf

from . import fast_augment as ops
from .augmentations import CropParams, DataAugmentationDINO

__all__ = ["DataAugmentationDINOv3"]


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic, antialiased resize of ``[3, H, W]`` (uint8 or float) to ``[3, size, size]``; same size: unchanged."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return tvf.resize(x, [size, size], interpolation=tvf.InterpolationMode.BICUBIC, antialias=True)


class DataAugmentationDINOv3(DataAugmentationDINO):
    """:class:`DataAugmentationDINO` with DINOv3's ``crops`` options (module docstring); the output adds
    ``gram_teacher_crops`` (two ``[3, G, G]`` crops) when ``gram_teacher_crops_size`` is set, and ``offsets`` holds the
    local crops' ``(row, column)`` offsets when they are cut from the global crops."""

    def __init__(
        self,
        *args: Any,
        gram_teacher_crops_size: int | None = None,
        gram_teacher_no_distortions: bool = False,
        share_color_jitter: bool = False,
        local_crops_subset_of_global_crops: bool = False,
        patch_size: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not self.fast:
            raise ValueError("DataAugmentationDINOv3: DINOv3's crop options need the tensor path (fast=True)")
        if gram_teacher_crops_size is not None and int(gram_teacher_crops_size) < 1:
            raise ValueError(f"crops.gram_teacher_crops_size={gram_teacher_crops_size} must be a positive size")
        self.gram_teacher_crops_size = None if gram_teacher_crops_size is None else int(gram_teacher_crops_size)
        self.gram_teacher_no_distortions = bool(gram_teacher_no_distortions)
        self.share_color_jitter = bool(share_color_jitter)
        self.local_crops_subset_of_global_crops = bool(local_crops_subset_of_global_crops)
        self.patch_size = int(patch_size)
        self.base_size = max(self.global_crops_size, self.gram_teacher_crops_size or 0)
        if self.local_crops_subset_of_global_crops:
            self._check_windows()

    def _check_windows(self) -> None:
        if self.local_crops_number % 2:
            raise ValueError(
                "crops.localcrops_subset_of_globalcrops=true cuts half the local crops from each global crop: "
                f"crops.local_crops_number must be even, got {self.local_crops_number}"
            )
        if self.patch_size < 1 or (self.global_crops_size - self.local_crops_size) // self.patch_size < 1:
            raise ValueError(
                f"crops.localcrops_subset_of_globalcrops=true cuts {self.local_crops_size} px local crops at multiples "
                f"of the patch size {self.patch_size} from the {self.global_crops_size} px global crops: needs "
                "crops.local_crops_size <= crops.global_crops_size - student.patch_size"
            )

    def _shared_colour(self, pixels: torch.Tensor) -> torch.Tensor:
        """The whole uint8 image after one colour jitter and grayscale draw, rounded back to uint8."""
        order, factors, grayscale = self._draw_colour()
        height, width = pixels.shape[-2:]
        params = CropParams(0, 0, height, width, False, order, *(factors or (None,) * 4), grayscale, None, False)
        return self.apply_colour(pixels.float(), params).round_().clamp_(0.0, 255.0).to(torch.uint8)

    def _distort_whole(self, image: torch.Tensor, params: CropParams) -> torch.Tensor:
        """The photometric part of ``params`` on a square ``image`` already cropped (and flipped)."""
        side = image.shape[-1]
        whole = dataclasses.replace(params, top=0, left=0, height=side, width=side, flip=False)
        return self.apply_crop_params(image, whole, side)

    def _global(self, pixels: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(global crop, Gram crop or None, uint8 base crop at base_size)`` for ``global1`` / ``global2``."""
        params = self.draw_crop_params(kind, pixels.shape[-2], pixels.shape[-1], colour=not self.share_color_jitter)
        base = ops.resized_crop(pixels, params.top, params.left, params.height, params.width, self.base_size)
        if params.flip:
            base = ops.hflip(base)
        gram_size = self.gram_teacher_crops_size
        if gram_size is None:
            return self._distort_whole(base, params), None, base
        if self.gram_teacher_no_distortions:
            global_crop = self._distort_whole(_resize(base, self.global_crops_size), params)
            gram_crop = ops.normalize_255(_resize(base, gram_size).float(), *self._scale_shift)
        else:
            full = self._distort_whole(base, params)
            global_crop, gram_crop = _resize(full, self.global_crops_size), _resize(full, gram_size)
        return global_crop, gram_crop, base

    def _local_crops(
        self, pixels: torch.Tensor, bases: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[tuple[int, int]] | tuple]:
        colour = not self.share_color_jitter
        if not self.local_crops_subset_of_global_crops:
            return [self._tensor_crop(pixels, "local", colour=colour) for _ in range(self.local_crops_number)], ()
        half = self.local_crops_number // 2
        distorted = []
        for base in [bases[0]] * half + [bases[1]] * half:
            side = base.shape[-1]
            distorted.append(
                self._distort_whole(base, self.draw_crop_params("local", side, side, geometry=False, colour=colour))
            )
        positions = (self.global_crops_size - self.local_crops_size) // self.patch_size
        size, crops, offsets = self.local_crops_size, [], []
        for full in distorted:
            row, col = (torch.randint(0, positions, (2,)) * self.patch_size).tolist()
            crops.append(full[:, row : row + size, col : col + size].contiguous())
            offsets.append((row, col))
        return crops, offsets

    def __call__(self, image: Image.Image | torch.Tensor) -> dict[str, Any]:
        pixels = ops.to_uint8_chw(image)
        if self.share_color_jitter:
            pixels = self._shared_colour(pixels)
        global_1, gram_1, base_1 = self._global(pixels, "global1")
        global_2, gram_2, base_2 = self._global(pixels, "global2")
        local_crops, offsets = self._local_crops(pixels, (base_1, base_2))
        output = {
            "global_crops": [global_1, global_2],
            "global_crops_teacher": [global_1, global_2],
            "local_crops": local_crops,
            "offsets": offsets,
        }
        if self.gram_teacher_crops_size is not None:
            output["gram_teacher_crops"] = [gram_1, gram_2]
        return output
