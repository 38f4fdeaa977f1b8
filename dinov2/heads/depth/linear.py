"""The linear depth head of the released DINOv2 depthers (depth bins), with the released module names.

:class:`LinearDepthHead` is the release's ``BNHead`` (which has no batch norm): ``[patch || cls]`` features of
one or four blocks, upsampled x4, a 1x1 conv to 256 depth-bin logits, AdaBins "linear" normalisation, expected
depth over uniform bins. Keys ``conv_depth.{weight,bias}``.

It takes the backbone output as a sequence of ``(patch_tokens [B, C, h, w], cls_token [B, C])`` pairs
(``get_intermediate_layers(..., reshape=True, return_class_token=True)``) and returns depth ``[B, 1, H', W']`` in
the unit of ``min_depth`` / ``max_depth`` (metres for the released heads).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BNHead",
    "FeatureList",
    "LinearDepthHead",
    "NORM_STRATEGIES",
    "bin_probabilities",
    "bins_to_depth",
    "tap_maps",
]

# [(patch tokens [B, C, h, w], class token [B, C]), ...] one pair per tapped block, oldest first
FeatureList = Sequence[tuple[Tensor, Tensor]]


NORM_STRATEGIES = ("linear", "softmax", "sigmoid")


def bin_probabilities(logits: Tensor, norm_strategy: str = "linear") -> Tensor:
    """Bin weights summing to 1 over dim 1 of ``logits [B, K, H, W]``, as released (AdaBins): ``linear``
    ``relu(logit) + 0.1`` normalised (the released heads), ``softmax``, or ``sigmoid`` normalised."""
    if norm_strategy == "linear":
        probs = torch.relu(logits) + 0.1
        return probs / probs.sum(dim=1, keepdim=True)
    if norm_strategy == "softmax":
        return torch.softmax(logits, dim=1)
    if norm_strategy == "sigmoid":
        probs = torch.sigmoid(logits)
        return probs / probs.sum(dim=1, keepdim=True)
    raise ValueError(f"norm_strategy must be one of {', '.join(NORM_STRATEGIES)}, got {norm_strategy!r}")


def bins_to_depth(logits: Tensor, min_depth: float, max_depth: float, norm_strategy: str = "linear") -> Tensor:
    """Expected depth over uniform bins ``linspace(min, max, K)``: ``logits [B, K, H, W]`` -> ``[B, 1, H, W]``
    (weights from :func:`bin_probabilities`)."""
    probs = bin_probabilities(logits, norm_strategy)
    bins = torch.linspace(min_depth, max_depth, logits.shape[1], device=logits.device, dtype=logits.dtype)
    return torch.einsum("bkhw,k->bhw", probs, bins).unsqueeze(1)


def tap_maps(inputs: FeatureList, *, with_cls: bool, scale: int = 1, align_corners: bool = False) -> Tensor:
    """One map from tapped blocks: each block's patch map, with its class token broadcast over the grid and
    concatenated after the channels when ``with_cls``, resized (bilinear) to ``scale`` x the first block's grid,
    all concatenated: ``[B, sum of (2) C_i, scale h, scale w]`` (the released linear depth heads' input)."""
    maps = [torch.cat([p, c[:, :, None, None].expand_as(p)], dim=1) if with_cls else p for p, c in inputs]
    size = [s * scale for s in maps[0].shape[2:]]
    maps = [F.interpolate(m, size=size, mode="bilinear", align_corners=align_corners) for m in maps]
    return torch.cat(maps, dim=1)


class LinearDepthHead(nn.Module):
    """The released linear depth head (``BNHead``: classification over ``n_bins`` uniform depth bins).

    For each block the class token is broadcast over the grid and concatenated after the patch channels
    (``2C``), every map is resized (bilinear) to ``upsample`` x the first map's grid, the blocks are
    concatenated (``2C * n_blocks`` channels) and a 1x1 conv ``conv_depth`` gives the bin logits.
    """

    def __init__(
        self,
        embed_dim: int,
        n_blocks: int = 1,
        *,
        n_bins: int = 256,
        min_depth: float = 0.001,
        max_depth: float = 80.0,
        upsample: int = 4,
        norm_strategy: str = "linear",
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = 2 * embed_dim * n_blocks
        self.n_blocks, self.n_bins, self.upsample = n_blocks, n_bins, upsample
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.norm_strategy, self.align_corners = norm_strategy, align_corners
        self.conv_depth = nn.Conv2d(self.in_channels, n_bins, kernel_size=1)

    def features(self, inputs: FeatureList) -> Tensor:
        """The conv input ``[B, 2C * n_blocks, upsample * h, upsample * w]``."""
        if len(inputs) != self.n_blocks:
            raise ValueError(f"LinearDepthHead expects {self.n_blocks} (patch, cls) pairs, got {len(inputs)}")
        return tap_maps(inputs, with_cls=True, scale=self.upsample, align_corners=self.align_corners)

    def forward(self, inputs: FeatureList) -> Tensor:
        logits = self.conv_depth(self.features(inputs))  # [B, n_bins, 4h, 4w]
        return bins_to_depth(logits, self.min_depth, self.max_depth, self.norm_strategy)


BNHead = LinearDepthHead  # the released class name (``dinov2.hub.depth.BNHead``)
