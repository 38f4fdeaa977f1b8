"""Collate multi-crop samples into a training batch with iBOT masks."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["collate_data_and_cast"]


def _stack_crop_major(crops_per_sample: list[list[torch.Tensor]], dtype: torch.dtype) -> torch.Tensor:
    """``[crop 0 of every sample, crop 1 of every sample, ...]`` as one tensor ``[n_crops * B, C, H, W]``."""
    n_crops, batch = len(crops_per_sample[0]), len(crops_per_sample)
    first = crops_per_sample[0][0]
    out = torch.empty((n_crops * batch, *first.shape), dtype=dtype)
    for crop_index in range(n_crops):
        for sample_index, crops in enumerate(crops_per_sample):
            out[crop_index * batch + sample_index].copy_(crops[crop_index])  # casts to dtype on the way
    return out


def _empty_local_crops(like: torch.Tensor, size: int | Sequence[int] | None, dtype: torch.dtype) -> torch.Tensor:
    if size is None:
        h = w = 0
    elif isinstance(size, int):
        h = w = size
    else:
        h, w = size
    return torch.empty((0, like.shape[0], h, w), dtype=dtype)


def _draw_masks(batch: int, n_tokens: int, mask_ratio_tuple, mask_probability: float, mask_generator):
    """Masks for ``batch`` global crops: ``int(batch * p)`` with ratios in consecutive bins, the rest empty."""
    n_masked_images = int(batch * mask_probability)
    bin_edges = torch.linspace(*mask_ratio_tuple, n_masked_images + 1)  # float32, as in the release
    upperbound = 0
    masks = []
    for i in range(n_masked_images):
        ratio_lo, ratio_hi = bin_edges[i], bin_edges[i + 1]
        target = int(n_tokens * random.uniform(ratio_lo, ratio_hi))
        masks.append(torch.from_numpy(np.asarray(mask_generator(target), dtype=bool)).flatten())
        upperbound += int(n_tokens * ratio_hi)
    empty = torch.zeros(n_tokens, dtype=torch.bool)
    masks.extend(empty.clone() for _ in range(n_masked_images, batch))
    random.shuffle(masks)
    return torch.stack(masks), upperbound


def collate_data_and_cast(
    samples_list: list[tuple[dict[str, Any], Any]],
    mask_ratio_tuple: tuple[float, float],
    mask_probability: float,
    dtype: torch.dtype,
    n_tokens: int | None = None,
    mask_generator: Callable[[int], np.ndarray] | None = None,
    local_crops_size: int | Sequence[int] | None = None,
) -> dict[str, Any]:
    """Stack the crops of ``B`` samples crop-major and draw iBOT masks for the ``2B`` global crops.

    Args:
        samples_list: ``B`` pairs ``(augmentation dict, target)``; the dict holds ``global_crops`` and
            ``local_crops`` lists of ``[3, H, W]`` tensors (the output of ``DataAugmentationDINO``).
        mask_ratio_tuple: ``(min, max)`` fraction of masked patches of a masked image.
        mask_probability: fraction of the global crops that get a mask (``int(2B * p)`` of them).
        dtype: dtype of the returned crops (e.g. ``torch.half``).
        n_tokens: number of patches ``N`` per global crop (default: ``mask_generator.num_patches``).
        mask_generator: ``MaskingGenerator`` (called with the number of patches to mask).
        local_crops_size: spatial size of local crops, used only to shape an empty ``collated_local_crops``
            ``[0, 3, h, w]`` when there are no local crops (``[0, 3, 0, 0]`` when not given). The release
            cannot collate samples without local crops.

    Returns:
        dict with ``collated_global_crops`` ``[2B, 3, H, W]``, ``collated_local_crops`` ``[L*B, 3, h, w]``
        (both ``dtype``, crop-major: crop 0 of every image, then crop 1, ...), ``collated_masks`` bool
        ``[2B, N]``, ``mask_indices_list`` int64 flat indices of the True entries, ``masks_weight``
        float32 (for every masked token, ``1 / #masked tokens of its image``), ``upperbound`` (int,
        ``sum(int(N * bin_max))`` over the masked images, a bound on the number of masked tokens) and
        ``n_masked_patches`` (long ``[1]``); with ``gram_teacher_crops`` in the samples (DINOv3's Gram anchoring)
        also ``collated_gram_teacher_crops`` ``[2B, 3, H', W']``.

    Randomness (ratios, masks, shuffle of the mask list) comes from Python's ``random`` module.
    """
    crops = [sample[0] for sample in samples_list]
    if not crops:
        raise ValueError("collate_data_and_cast got an empty batch")
    collated_global_crops = _stack_crop_major([c["global_crops"] for c in crops], dtype)
    if len(crops[0]["local_crops"]) > 0:
        collated_local_crops = _stack_crop_major([c["local_crops"] for c in crops], dtype)
    else:
        collated_local_crops = _empty_local_crops(crops[0]["global_crops"][0], local_crops_size, dtype)

    if n_tokens is None:
        if mask_generator is None:
            raise ValueError("collate_data_and_cast needs n_tokens or a mask_generator to know the patch count")
        n_tokens = mask_generator.num_patches
    n_global = len(collated_global_crops)
    if mask_generator is None:
        if int(n_global * mask_probability) > 0:
            raise ValueError("collate_data_and_cast: mask_probability > 0 needs a mask_generator (MaskingGenerator)")
        collated_masks, upperbound = torch.zeros((n_global, n_tokens), dtype=torch.bool), 0
    else:
        collated_masks, upperbound = _draw_masks(n_global, n_tokens, mask_ratio_tuple, mask_probability, mask_generator)

    mask_indices_list = collated_masks.flatten().nonzero().flatten()  # [M] int64
    masked_per_image = collated_masks.sum(-1, dtype=torch.float32).clamp(min=1.0)  # [2B]
    masks_weight = (1.0 / masked_per_image).unsqueeze(-1).expand_as(collated_masks)[collated_masks]  # [M]

    gram = {}
    if "gram_teacher_crops" in crops[0]:  # DINOv3's Gram teacher crops, collated like the global crops
        gram["collated_gram_teacher_crops"] = _stack_crop_major([c["gram_teacher_crops"] for c in crops], dtype)
    return {
        "collated_global_crops": collated_global_crops,
        "collated_local_crops": collated_local_crops,
        "collated_masks": collated_masks,
        "mask_indices_list": mask_indices_list,
        "masks_weight": masks_weight,
        "upperbound": upperbound,
        "n_masked_patches": torch.full((1,), fill_value=mask_indices_list.shape[0], dtype=torch.long),
        **gram,
    }
