"""The detector's frozen backbone: a DINOv3 ViT's blocks concatenated (:class:`DINOBackbone`), optionally run on
a grid of windows plus a downsized whole image (:class:`WindowsWrapper`), with the pixel mask and a sine position
embedding of the feature map (:class:`BackboneWithPositionEncoding`). Keys as released (``backbone.0[._backbone]``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as tvf

from dinov2.heads.segmentation.pixel_decoder import PositionEmbeddingSine

__all__ = [
    "BackboneWithPositionEncoding",
    "DINOBackbone",
    "LayerNorm2D",
    "WindowsWrapper",
    "pad_images",
    "sine_position_encoding",
]


class LayerNorm2D(nn.Module):
    """``nn.LayerNorm`` over the channels of ``[B, C, H, W]`` (run channels-last; keys ``ln.*``)."""

    def __init__(self, normalized_shape: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(normalized_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def pad_images(images: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``[3, H_i, W_i]`` images -> the zero-padded batch ``[B, 3, H, W]`` (largest sizes) and its mask ``[B, H, W]``
    (True on padding), as DETR batches them. A ``[B, 3, H, W]`` tensor counts as ``B`` images."""
    if len(images) == 0 or any(image.ndim != 3 for image in images):
        shapes = [tuple(image.shape) for image in images]
        raise ValueError(f"the detector takes [3, H, W] images (or a [B, 3, H, W] batch), got shapes {shapes}")
    channels = max(image.shape[0] for image in images)
    height, width = max(image.shape[1] for image in images), max(image.shape[2] for image in images)
    first = images[0]
    batch = torch.zeros((len(images), channels, height, width), dtype=first.dtype, device=first.device)
    mask = torch.ones((len(images), height, width), dtype=torch.bool, device=first.device)
    for image, padded, padding in zip(images, batch, mask):
        padded[:, : image.shape[1], : image.shape[2]].copy_(image)
        padding[: image.shape[1], : image.shape[2]] = False
    return batch, mask


class DINOBackbone(nn.Module):
    """The frozen ViT's outputs of blocks ``layers_to_use`` (indices, or an int: the last ones), each normalised by the
    ViT's final norm (and its own :class:`LayerNorm2D` with ``use_layernorm``), concatenated: ``[B, sum(D), h, w]``."""

    def __init__(self, backbone: nn.Module, layers_to_use: int | Sequence[int] = 1, use_layernorm: bool = True) -> None:
        super().__init__()
        self.backbone = backbone
        self.patch_size = backbone.patch_size
        self.use_layernorm = use_layernorm
        backbone.requires_grad_(False)  # the release trains no block of the detector's backbone
        self.strides = [backbone.patch_size]
        n_blocks = backbone.n_blocks
        taken = range(n_blocks - layers_to_use, n_blocks) if isinstance(layers_to_use, int) else layers_to_use
        embed_dims = getattr(backbone, "embed_dims", [backbone.embed_dim] * n_blocks)
        embed_dims = [embed_dims[i] for i in range(n_blocks) if i in taken]
        if use_layernorm:
            self.layer_norms = nn.ModuleList([LayerNorm2D(dim) for dim in embed_dims])
        self.num_channels = [sum(embed_dims)]
        self.layers_to_use = layers_to_use

    def forward(self, images: Tensor) -> Tensor:
        features = self.backbone.get_intermediate_layers(images, n=self.layers_to_use, reshape=True)
        if self.use_layernorm:
            features = [ln(x).contiguous() for ln, x in zip(self.layer_norms, features)]
        return torch.cat(features, dim=1)  # [B, sum(D), h, w]


class WindowsWrapper(nn.Module):
    """``backbone`` run on each of ``n_windows_h x n_windows_w`` windows of the image (sizes rounded up to the patch
    size; the last row and column take what is left), the window features tiled back, and on the whole image resized
    to one window (antialiased bilinear), its features resized to the tiled map; both stacked: ``[B, 2 C, h, w]``."""

    def __init__(self, backbone: DINOBackbone, n_windows_w: int, n_windows_h: int, patch_size: int) -> None:
        super().__init__()
        self._backbone = backbone
        self._n_windows_w, self._n_windows_h, self._patch_size = n_windows_w, n_windows_h, patch_size
        self.strides = backbone.strides
        self.num_channels = [channels * 2 for channels in backbone.num_channels]  # resized image + windows

    def _split(self, size: int, n_windows: int) -> tuple[int, list[int]]:
        window = math.ceil((size // n_windows) / self._patch_size) * self._patch_size
        return window, [window] * (n_windows - 1) + [size - window * (n_windows - 1)]

    def forward(self, images: Tensor) -> Tensor:
        window_h, heights = self._split(images.shape[2], self._n_windows_h)
        window_w, widths = self._split(images.shape[3], self._n_windows_w)
        rows, top = [], 0
        for height in heights:
            row, left = [], 0
            for width in widths:
                row.append(self._backbone(images[:, :, top : top + height, left : left + width]))
                left += width
            rows.append(torch.cat(row, dim=-1))
            top += height
        windows = torch.cat(rows, dim=-2)  # [B, C, h, w]
        whole = self._backbone(tvf.resize(images, size=[window_h, window_w]))  # the whole image, at a window's size
        return torch.cat([tvf.resize(whole, size=list(windows.shape[-2:])), windows], dim=1)


class BackboneWithPositionEncoding(nn.Sequential):
    """``[backbone, position encodings]``: ``(images [B, 3, H, W], mask [B, H, W])`` -> features ``[B, C, h, w]``,
    their mask ``[B, h, w]`` (nearest) and position embedding ``[B, hidden_dim, h, w]`` in the features' dtype."""

    def __init__(self, backbone: nn.Module, position_embedding: nn.ModuleList) -> None:
        super().__init__(backbone, position_embedding)
        self.strides = backbone.strides
        self.num_channels = backbone.num_channels

    def forward(self, images: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        features = self[0](images)
        mask = F.interpolate(mask[None].float(), size=features.shape[-2:]).to(torch.bool)[0]
        return features, mask, self[1][0](features, mask).to(features.dtype)


def sine_position_encoding(hidden_dim: int, num_feature_levels: int = 1) -> nn.ModuleList:
    """The released ``PositionEncoding.SINE``: DETR's normalised sine embedding of the cell centres, ``hidden_dim``
    channels, one (shared) per feature level."""
    embedding = PositionEmbeddingSine(hidden_dim // 2, normalize=True, offset=0.5)
    return nn.ModuleList([embedding for _ in range(num_feature_levels)])
