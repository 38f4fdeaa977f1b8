"""Image to patch tokens: one strided convolution."""

from __future__ import annotations

import logging
from collections.abc import Callable

from torch import Tensor, nn

logger = logging.getLogger(__name__)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"expected an int or a (height, width) pair, got {value!r}")
        return value
    return (value, value)


def make_2tuple(x: int | tuple[int, int]) -> tuple[int, int]:
    """The release's name: ``(x, x)`` for an int, a pair as it is."""
    return _pair(x)


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping patches and project each to ``embed_dim``.

    ``[B, C, H, W] -> [B, (H // p) * (W // p), D]`` (or ``[B, H // p, W // p, D]`` when
    ``flatten_embedding`` is False). Sides that are not multiples of the patch size are cropped to the
    closest smaller multiple, keeping the top-left corner, as the DINOv2 model card describes (the released
    code asserts instead).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        norm_layer: Callable[[int], nn.Module] | None = None,
        flatten_embedding: bool = True,
    ) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        self.patches_resolution = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.flatten_embedding = flatten_embedding
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def flops(self) -> float:
        """Multiply-accumulates of the projection at ``img_size`` plus one per output value for the norm (counted
        even when the norm is the identity, as released)."""
        grid_h, grid_w = self.patches_resolution
        ph, pw = self.patch_size
        return grid_h * grid_w * self.embed_dim * (self.in_chans * ph * pw + 1)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        ph, pw = self.patch_size
        if height % ph or width % pw:
            logger.debug(
                "cropping input %dx%d to %dx%d (patch %dx%d)",
                height,
                width,
                height - height % ph,
                width - width % pw,
                ph,
                pw,
            )
            x = x[..., : height - height % ph, : width - width % pw]
        x = self.proj(x)  # [B, D, H/p, W/p]
        grid_h, grid_w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)  # [B, N, D]
        x = self.norm(x)
        if not self.flatten_embedding:
            x = x.reshape(-1, grid_h, grid_w, self.embed_dim)  # [B, H/p, W/p, D]
        return x
