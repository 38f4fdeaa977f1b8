"""The DPT depth head of the released DINOv2 depthers, with the released module names (the state-dict contract).

:class:`DPTHead` is the release's DPT decoder (reassemble, 3x3 convs, four fusion blocks, a head), regression
``relu(y) + min_depth``. Keys ``reassemble_blocks.*``, ``convs.*``, ``fusion_blocks.*``, ``project.*``,
``conv_depth.head.*`` (``fusion_blocks.0`` has no ``res_conv_unit1``).

It takes the backbone output as 4 ``(patch_tokens [B, C, h, w], cls_token [B, C])`` pairs
(``get_intermediate_layers(..., reshape=True, return_class_token=True)``) and returns depth ``[B, 1, H', W']`` in
the unit of ``min_depth`` / ``max_depth`` (metres for the released heads).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.heads.depth.linear import FeatureList

__all__ = ["DPTHead"]


class ConvModule(nn.Module):
    """A conv with an optional ReLU before (``act_first``) or after it; the conv is ``.conv`` (released keys)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, *, padding: int = 0, bias: bool = True,
                 act: bool = False, act_first: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=bias)
        self.act, self.act_first = act, act_first

    def forward(self, x: Tensor) -> Tensor:
        if self.act and self.act_first:
            x = F.relu(x)
        x = self.conv(x)
        if self.act and not self.act_first:
            x = F.relu(x)
        return x


class ReassembleBlocks(nn.Module):
    """DPT reassemble: readout projection of ``[patch || cls]``, 1x1 projection to ``out_channels[i]``, then
    resizing by x4 (transposed conv), x2 (transposed conv), x1 and x1/2 (strided conv)."""

    def __init__(self, in_channels: int, out_channels: Sequence[int]) -> None:
        super().__init__()
        c0, c1, _, c3 = out_channels
        self.projects = nn.ModuleList([ConvModule(in_channels, c, 1) for c in out_channels])
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(c0, c0, kernel_size=4, stride=4),
            nn.ConvTranspose2d(c1, c1, kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(c3, c3, kernel_size=3, stride=2, padding=1),
        ])  # fmt: skip
        self.readout_projects = nn.ModuleList(
            [nn.Sequential(nn.Linear(2 * in_channels, in_channels), nn.GELU()) for _ in out_channels]
        )

    def forward(self, inputs: FeatureList) -> list[Tensor]:
        out = []
        for i, (patch, cls) in enumerate(inputs):
            batch, channels, h, w = patch.shape
            tokens = patch.flatten(2).transpose(1, 2)  # [B, hw, C]
            tokens = self.readout_projects[i](torch.cat([tokens, cls[:, None, :].expand_as(tokens)], dim=-1))
            x = tokens.transpose(1, 2).reshape(batch, channels, h, w)
            out.append(self.resize_layers[i](self.projects[i](x)))
        return out


class PreActResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convs without bias."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvModule(channels, channels, 3, padding=1, bias=False, act=True, act_first=True)
        self.conv2 = ConvModule(channels, channels, 3, padding=1, bias=False, act=True, act_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class FeatureFusionBlock(nn.Module):
    """DPT fusion: ``out + rcu1(skip)`` (skip resized to ``out`` when needed), ``rcu2``, x2 upsample with
    ``align_corners=True`` (as released), 1x1 projection. Without a skip there is no ``res_conv_unit1``."""

    def __init__(self, channels: int, with_skip: bool = True) -> None:
        super().__init__()
        self.project = ConvModule(channels, channels, 1)
        self.res_conv_unit1 = PreActResidualConvUnit(channels) if with_skip else None
        self.res_conv_unit2 = PreActResidualConvUnit(channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            if skip.shape != x.shape:
                skip = F.interpolate(skip, size=x.shape[2:], mode="bilinear", align_corners=False)
            x = x + self.res_conv_unit1(skip)
        x = self.res_conv_unit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(x)


class HeadDepth(nn.Module):
    """``head``: 3x3 conv C -> C/2, x2 bilinear (align_corners=True), 3x3 conv -> 32, ReLU, 1x1 conv -> 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(channels // 2, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)


class DPTHead(nn.Module):
    """The released DPT depth decoder on 4 ``(patch, cls)`` pairs; output ``[B, 1, 32 ceil(h/2), 32 ceil(w/2)]``.

    ``post_process_channels`` defaults to ``[C/8, C/4, C/2, C]`` (the hub heads), ``channels`` to 256.
    """

    def __init__(
        self,
        embed_dim: int,
        *,
        channels: int = 256,
        post_process_channels: Sequence[int] | None = None,
        min_depth: float = 0.001,
        max_depth: float = 10.0,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if post_process_channels is None:
            post_process_channels = [embed_dim // 2 ** (3 - i) for i in range(4)]
        if len(post_process_channels) != 4:
            raise ValueError(f"DPTHead needs 4 post_process_channels, got {list(post_process_channels)}")
        self.min_depth, self.max_depth, self.align_corners = float(min_depth), float(max_depth), align_corners
        self.conv_depth = HeadDepth(channels)  # registered first: the released key order
        self.reassemble_blocks = ReassembleBlocks(embed_dim, post_process_channels)
        self.convs = nn.ModuleList([ConvModule(c, channels, 3, padding=1, bias=False) for c in post_process_channels])
        self.fusion_blocks = nn.ModuleList([FeatureFusionBlock(channels, with_skip=i > 0) for i in range(4)])
        self.project = ConvModule(channels, channels, 3, padding=1, act=True)

    def forward(self, inputs: FeatureList) -> Tensor:
        if len(inputs) != 4:
            raise ValueError(f"DPTHead expects 4 (patch, cls) pairs, got {len(inputs)}")
        maps = [conv(x) for conv, x in zip(self.convs, self.reassemble_blocks(inputs))]
        out = self.fusion_blocks[0](maps[-1])  # coarsest first
        for i in range(1, 4):
            out = self.fusion_blocks[i](out, maps[-(i + 1)])
        out = self.conv_depth(self.project(out))
        return torch.relu(out) + self.min_depth
