"""Block-wise patch masking for iBOT (random rectangles on the patch grid)."""

from __future__ import annotations

import math
import random

import numpy as np

__all__ = ["MaskingGenerator"]


class MaskingGenerator:
    """Draws boolean patch masks made of random rectangles ("blocks") on an ``H x W`` patch grid.

    Each call adds rectangles of area ``U(min_num_patches, remaining)`` (capped by ``max_num_patches``)
    and log-uniform aspect ratio in ``[min_aspect, max_aspect]`` until ``num_masking_patches`` patches
    are masked or ten attempts in a row add nothing. A rectangle is kept only if it adds between 1
    and ``remaining`` new patches, so a mask never exceeds the requested count. Randomness comes from
    Python's ``random`` module, in the released order of draws.

    Args:
        input_size: grid size ``H`` (square) or ``(H, W)``, in patches.
        num_masking_patches: default ``max_num_patches`` when that is None (released behaviour); if both are
            None the cap is the whole grid.
        min_num_patches: smallest rectangle area, in patches.
        max_num_patches: largest number of patches added by one rectangle; the trainer passes ``0.5 * H * W``.
        min_aspect: smallest aspect ratio ``h / w``; ``max_aspect`` defaults to ``1 / min_aspect``.
    """

    def __init__(
        self,
        input_size: int | tuple[int, int],
        num_masking_patches: int | None = None,
        min_num_patches: int = 4,
        max_num_patches: float | None = None,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
    ):
        if not isinstance(input_size, tuple):
            input_size = (input_size, input_size)
        self.height, self.width = (int(s) for s in input_size)
        if self.height < 1 or self.width < 1:
            raise ValueError(f"MaskingGenerator input_size must be positive, got {input_size}")
        if min_aspect <= 0:
            raise ValueError(f"MaskingGenerator min_aspect must be > 0, got {min_aspect}")
        self.num_patches = self.height * self.width
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
        if self.max_num_patches is None:  # the release would fail at the first call; cap at the grid instead
            self.max_num_patches = self.num_patches
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))

    def __repr__(self) -> str:
        lo, hi = self.log_aspect_ratio
        return (
            f"MaskingGenerator(grid={self.height}x{self.width}, area=[{self.min_num_patches}, {self.max_num_patches}], "
            f"log_aspect=[{lo:.3f}, {hi:.3f}])"
        )

    def get_shape(self) -> tuple[int, int]:
        return self.height, self.width

    def _add_block(self, mask: np.ndarray, max_mask_patches: float) -> int:
        """Try up to ten rectangles; mask the first one that adds 1..max_mask_patches patches. Returns the count."""
        for _ in range(10):
            target_area = random.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(random.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w >= self.width or h >= self.height:
                continue
            top = random.randint(0, self.height - h)
            left = random.randint(0, self.width - w)
            block = mask[top : top + h, left : left + w]  # view into the mask
            added = h * w - int(block.sum())
            if 0 < added <= max_mask_patches:
                block[...] = True
                return added
        return 0

    def __call__(self, num_masking_patches: int = 0) -> np.ndarray:
        """Return a bool mask ``[H, W]`` with at most ``num_masking_patches`` True entries."""
        mask = np.zeros(shape=self.get_shape(), dtype=bool)
        mask_count = 0
        while mask_count < num_masking_patches:
            max_mask_patches = min(num_masking_patches - mask_count, self.max_num_patches)
            added = self._add_block(mask, max_mask_patches)
            if added == 0:
                break
            mask_count += added
        return mask
