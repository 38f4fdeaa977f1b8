"""Test-time semantics of mmseg 0.27 (``EncoderDecoder`` + ``MultiScaleFlipAug``) in plain PyTorch.

For each test augmentation (ratio x flip):

1. keep-ratio resize so that the short side is ``int(short_side * ratio)`` (mmcv ``imrescale`` arithmetic:
   new side ``int(side * factor + 0.5)``, bilinear);
2. flip horizontally when asked;
3. logits by sliding windows (``crop`` / ``stride``, window sums divided by window counts) or on the whole image;
4. bilinear resize of the logits to the original size, softmax over classes, un-flip.

The class probabilities are averaged over the augmentations; the prediction is their argmax.
Numerical note: mmcv resizes the uint8 image with OpenCV before normalising; here the normalised float image is
resized (same bilinear sampling, no uint8 rounding), so probabilities may differ by rounding-level amounts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from dinov2.data.dense_transforms import keep_ratio_size
from dinov2.heads.sliding_window import sliding_window_average

__all__ = ["SegmentationTestConfig", "keep_ratio_size", "resize_keep_ratio", "segmentation_probabilities"]


@dataclass(frozen=True)
class SegmentationTestConfig:
    """How a segmentor is evaluated (the ``test_cfg`` + test pipeline of a released config).

    ``short_side=None`` keeps the input size; ``mode`` is ``slide`` or ``whole``; ``ratios`` multiply the short
    side; ``flip`` adds a horizontally flipped pass per ratio.
    """

    mode: str = "slide"
    crop_size: tuple[int, int] = (512, 512)
    stride: tuple[int, int] = (341, 341)
    short_side: int | None = 512
    ratios: tuple[float, ...] = field(default=(1.0,))
    flip: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("slide", "whole"):
            raise ValueError(f"test mode must be 'slide' or 'whole', got {self.mode!r}")
        if not self.ratios or min(self.ratios) <= 0:
            raise ValueError(f"test ratios must be a non-empty list of positive numbers, got {self.ratios}")


def resize_keep_ratio(img: Tensor, short_side: int, mode: str = "bilinear") -> Tensor:
    """Resize ``[B, C, H, W]`` (keep ratio) to the short side ``short_side`` (``mode='nearest'`` for labels)."""
    size = keep_ratio_size(img.shape[-2], img.shape[-1], short_side)
    if size == tuple(img.shape[-2:]):
        return img
    if mode == "nearest":
        return F.interpolate(img, size=size, mode="nearest")
    return F.interpolate(img, size=size, mode=mode, align_corners=False)


PROGRESS_DELAY_S = 5.0  # seconds before the progress bar of a long test appears


def _augmentations(cfg: SegmentationTestConfig) -> list[tuple[int | None, bool]]:
    sides = [None] if cfg.short_side is None else [int(cfg.short_side * r) for r in cfg.ratios]
    return [(side, flip) for side in sides for flip in ((False, True) if cfg.flip else (False,))]


def segmentation_probabilities(
    img: Tensor, encode_decode: Callable[[Tensor], Tensor], num_classes: int, cfg: SegmentationTestConfig
) -> Tensor:
    """Class probabilities ``[B, K, H, W]`` averaged over the test augmentations of ``cfg``.

    ``encode_decode(x [B, 3, h, w])`` must return logits resized to ``x``'s size ``[B, K, h, w]``. A progress bar
    over the test-time passes (scales x flips) appears on stderr once a call has lasted 5 s: the released
    multi-scale test takes minutes per image on a CPU.
    """
    height, width = img.shape[-2:]
    total = None
    augmentations = _augmentations(cfg)
    every = 1 if sys.stderr.isatty() else 30  # seconds between updates: a log file gets a few lines
    passes = tqdm(
        augmentations, desc="segmentation test passes", unit="pass", delay=PROGRESS_DELAY_S, mininterval=every
    )
    for side, flip in passes:
        x = img if side is None else resize_keep_ratio(img, side)
        if flip:
            x = x.flip(-1)
        if cfg.mode == "slide":
            logits = sliding_window_average(x, encode_decode, num_classes, cfg.crop_size, cfg.stride)
        else:
            logits = encode_decode(x)
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        probs = torch.softmax(logits, dim=1)
        if flip:
            probs = probs.flip(-1)
        total = probs if total is None else total + probs
    return total / len(augmentations)
