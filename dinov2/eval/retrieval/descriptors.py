"""Global descriptors for instance retrieval: preprocessing at a maximum size and pooling of backbone tokens.

Preprocessing (DINO v1's retrieval evaluation, adapted to a patch grid): the image is shrunk so that its longer
side is at most ``imsize`` (aspect kept, never enlarged, as ``PIL.Image.thumbnail``), then each side is rounded to
the nearest multiple of the patch size (at least one patch: DINOv2's patch embedding needs whole patches), in one
Lanczos resize; then the family's normalisation.

Descriptor (:class:`RetrievalDescriptor`): the final-norm class token (default, as DINOv3 states) or GeM over the
final-norm patch tokens, ``(mean_i max(x_i, eps)^p)^(1/p)`` with p = 3; multi-scale (DINO v1): the descriptors at
scales 1, 1/sqrt(2), 1/2 of the normalised input (bilinear, sides again rounded to the patch grid) summed and
divided by their number; the result is L2-normalised (ranking by cosine similarity).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import functional as TF

__all__ = [
    "POOLINGS",
    "MULTI_SCALES",
    "grid_size",
    "retrieval_size",
    "RetrievalTransform",
    "gem",
    "RetrievalDescriptor",
]

POOLINGS = ("cls", "gem")
MULTI_SCALES = (1.0, 1 / math.sqrt(2), 0.5)


def grid_size(size: float, patch_size: int) -> int:
    """``size`` rounded to the nearest multiple of ``patch_size`` (at least one patch)."""
    return max(patch_size, int(round(size / patch_size)) * patch_size)


def retrieval_size(width: int, height: int, imsize: int, patch_size: int) -> tuple[int, int]:
    """(width, height) after shrinking the longer side to at most ``imsize`` and rounding to the patch grid."""
    scale = min(1.0, imsize / max(width, height))
    return grid_size(width * scale, patch_size), grid_size(height * scale, patch_size)


class RetrievalTransform:
    """PIL image -> normalised tensor [3, H, W] at :func:`retrieval_size`."""

    def __init__(self, imsize: int, patch_size: int, mean: Sequence[float], std: Sequence[float]):
        if imsize < patch_size:
            raise ValueError(f"--imsize {imsize} is smaller than the patch size {patch_size}; use at least that")
        self.imsize, self.patch_size, self.mean, self.std = imsize, patch_size, list(mean), list(std)

    def __call__(self, image: Image.Image) -> Tensor:
        size = retrieval_size(*image.size, self.imsize, self.patch_size)
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
        return TF.normalize(TF.to_tensor(image), self.mean, self.std)


def gem(tokens: Tensor, p: float = 3.0, eps: float = 1e-6) -> Tensor:
    """Generalised mean over tokens: [B, N, D] -> [B, D]."""
    return tokens.clamp(min=eps).pow(p).mean(dim=1).pow(1.0 / p)


class RetrievalDescriptor(nn.Module):
    """images [B, 3, H, W] -> L2-normalised descriptors [B, D] of a frozen ``backbone`` (see the module docstring).

    ``scales``: input scales whose descriptors are averaged (``(1.0,)`` single-scale, :data:`MULTI_SCALES`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        patch_size: int,
        pooling: str = "cls",
        scales: Sequence[float] = (1.0,),
        gem_p: float = 3.0,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.backbone, self.patch_size, self.pooling = backbone, patch_size, pooling
        self.scales, self.gem_p = tuple(float(s) for s in scales), float(gem_p)

    def _pooled(self, images: Tensor) -> Tensor:
        out = self.backbone.forward_features(images)
        if self.pooling == "cls":
            return out["x_norm_clstoken"].float()  # [B, D]
        return gem(out["x_norm_patchtokens"].float(), self.gem_p)  # [B, N, D] -> [B, D]

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        total = 0.0
        for scale in self.scales:
            size = (grid_size(height * scale, self.patch_size), grid_size(width * scale, self.patch_size))
            scaled = images if size == (height, width) else F.interpolate(images, size, mode="bilinear")
            total = total + self._pooled(scaled)
        return F.normalize(total / len(self.scales), dim=-1)
