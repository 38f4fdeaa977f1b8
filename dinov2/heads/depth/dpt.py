"""The DPT depth decoders of the released DINOv2 and DINOv3 depthers, with the released module names (the state-dict
contract).

:class:`DPTHead` is DINOv2's DPT decoder (reassemble, 3x3 convs, four fusion blocks, a head), regression
``relu(y) + min_depth``. Keys ``reassemble_blocks.*``, ``convs.*``, ``fusion_blocks.*``, ``project.*``,
``conv_depth.head.*`` (``fusion_blocks.0`` has no ``res_conv_unit1``). :class:`DPTDecoder` is DINOv3's (released as
``dinov3.eval.depth.models.DPTHead``): the same body with per-tap widths, a readout choice (``project`` /
``add`` / ``ignore``), optional batch norm before the reassemble projections (``reassemble_blocks.batchnorm_layers``),
optional conv biases in the fusion blocks, an optional final projection, and an :class:`UpConvHead` giving
``n_output_channels`` logits (depth bins, turned into depth by
:class:`~dinov2.heads.depth.depther.FeaturesToDepth`). Its convs start from the release's Kaiming initialisation, in
the release's construction order, so a seeded fresh decoder equals the release's.

Both take the backbone output as 4 ``(patch_tokens [B, C, h, w], cls_token [B, C])`` pairs
(``get_intermediate_layers(..., reshape=True, return_class_token=True)``); the maps come out at ``16 h x 16 w``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.heads.depth.linear import FeatureList

__all__ = ["DPTHead", "DPTDecoder", "UpConvHead", "READOUT_TYPES"]

READOUT_TYPES = ("ignore", "add", "project")


class ConvModule(nn.Module):
    """A conv with an optional ReLU before (``act_first``) or after it; the conv is ``.conv`` (released keys).
    ``kaiming``: the release's DINOv3 initialisation (normal, fan-out, ReLU gain; zero bias)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, *, padding: int = 0, bias: bool = True,
                 act: bool = False, act_first: bool = False, kaiming: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=bias)
        self.act, self.act_first = act, act_first
        if kaiming:
            nn.init.kaiming_normal_(self.conv.weight, a=0, mode="fan_out", nonlinearity="relu")
            if bias:
                nn.init.constant_(self.conv.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        if self.act and self.act_first:
            x = F.relu(x)
        x = self.conv(x)
        if self.act and not self.act_first:
            x = F.relu(x)
        return x


class ReassembleBlocks(nn.Module):
    """DPT reassemble: readout of the class token (``project``: linear + GELU on ``[patch || cls]``; ``add``;
    ``ignore``), optional batch norm, 1x1 projection to ``out_channels[i]``, then resizing by x4 (transposed conv),
    x2 (transposed conv), x1 and x1/2 (strided conv). ``in_channels``: one width for every tap, or one per tap."""

    def __init__(self, in_channels: int | Sequence[int], out_channels: Sequence[int], *, readout_type: str = "project",
                 use_batchnorm: bool = False, kaiming: bool = False) -> None:  # fmt: skip
        super().__init__()
        if readout_type not in READOUT_TYPES:
            raise ValueError(f"readout_type must be one of {', '.join(READOUT_TYPES)}, got {readout_type!r}")
        widths = [in_channels] * len(out_channels) if isinstance(in_channels, int) else list(in_channels)
        self.readout_type = readout_type
        c0, c1, _, c3 = out_channels
        self.projects = nn.ModuleList([ConvModule(w, c, 1, kaiming=kaiming) for w, c in zip(widths, out_channels)])
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(c0, c0, kernel_size=4, stride=4),
            nn.ConvTranspose2d(c1, c1, kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(c3, c3, kernel_size=3, stride=2, padding=1),
        ])  # fmt: skip
        if readout_type == "project":
            self.readout_projects = nn.ModuleList([nn.Sequential(nn.Linear(2 * w, w), nn.GELU()) for w in widths])
        if use_batchnorm:  # a plain BatchNorm2d: the released SyncBatchNorm's keys and eval arithmetic
            self.batchnorm_layers = nn.ModuleList([nn.BatchNorm2d(w) for w in widths])

    def forward(self, inputs: FeatureList) -> list[Tensor]:
        out = []
        for i, (patch, cls) in enumerate(inputs):
            x = patch
            if self.readout_type == "project":
                batch, channels, h, w = patch.shape
                tokens = patch.flatten(2).transpose(1, 2)  # [B, hw, C]
                tokens = self.readout_projects[i](torch.cat([tokens, cls[:, None, :].expand_as(tokens)], dim=-1))
                x = tokens.transpose(1, 2).reshape(batch, channels, h, w)
            elif self.readout_type == "add":
                x = (patch.flatten(2) + cls.unsqueeze(-1)).reshape(patch.shape)
            if hasattr(self, "batchnorm_layers"):
                x = self.batchnorm_layers[i](x)
            out.append(self.resize_layers[i](self.projects[i](x)))
        return out


class PreActResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convs (without bias unless ``bias``)."""

    def __init__(self, channels: int, *, bias: bool = False, kaiming: bool = False) -> None:
        super().__init__()
        conv = dict(padding=1, bias=bias, act=True, act_first=True, kaiming=kaiming)
        self.conv1 = ConvModule(channels, channels, 3, **conv)
        self.conv2 = ConvModule(channels, channels, 3, **conv)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))


class FeatureFusionBlock(nn.Module):
    """DPT fusion: ``out + rcu1(skip)`` (skip resized to ``out`` when needed), ``rcu2``, x2 upsample with
    ``align_corners=True`` (as released), 1x1 projection. Without a skip there is no ``res_conv_unit1``."""

    def __init__(self, channels: int, with_skip: bool = True, *, bias: bool = False, kaiming: bool = False) -> None:
        super().__init__()
        self.project = ConvModule(channels, channels, 1, kaiming=kaiming)
        self.res_conv_unit1 = PreActResidualConvUnit(channels, bias=bias, kaiming=kaiming) if with_skip else None
        self.res_conv_unit2 = PreActResidualConvUnit(channels, bias=bias, kaiming=kaiming)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            if skip.shape != x.shape:
                skip = F.interpolate(skip, size=x.shape[2:], mode="bilinear", align_corners=False)
            x = x + self.res_conv_unit1(skip)
        x = self.res_conv_unit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.project(x)


class UpConvHead(nn.Module):
    """``head``: 3x3 conv C -> C/2, x2 bilinear (align_corners=True), 3x3 conv -> ``n_hidden_channels``, ReLU,
    1x1 conv -> ``n_output_channels`` (released signature; DINOv2's depth head is ``UpConvHead(C, 1, 32)``)."""

    def __init__(self, features: int, n_output_channels: int, n_hidden_channels: int = 32) -> None:
        super().__init__()
        self.n_output_channels = n_output_channels
        self.head = nn.Sequential(
            nn.Conv2d(features, features // 2, kernel_size=3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(features // 2, n_hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(n_hidden_channels, n_output_channels, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)


def HeadDepth(channels: int) -> UpConvHead:  # noqa: N802  (a module name kept from the DINOv2 port)
    """DINOv2's depth head: one output channel, 32 hidden."""
    return UpConvHead(channels, 1, 32)


class _DPTBody(nn.Module):
    """What both DPT decoders run: reassemble, 3x3 convs, fusion from the coarsest map, projection."""

    reassemble_blocks: ReassembleBlocks
    convs: nn.ModuleList
    fusion_blocks: nn.ModuleList
    project: nn.Module
    conv_depth: UpConvHead

    def forward_features(self, inputs: FeatureList) -> Tensor:
        if len(inputs) != 4:
            raise ValueError(f"{type(self).__name__} expects 4 (patch, cls) pairs, got {len(inputs)}")
        maps = [conv(x) for conv, x in zip(self.convs, self.reassemble_blocks(list(inputs)))]
        out = self.fusion_blocks[0](maps[-1])  # coarsest first
        for i in range(1, 4):
            out = self.fusion_blocks[i](out, maps[-(i + 1)])
        return self.project(out)


class DPTHead(_DPTBody):
    """DINOv2's released DPT depth decoder on 4 ``(patch, cls)`` pairs; output ``[B, 1, 32 ceil(h/2), 32 ceil(w/2)]``.

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
        out = self.conv_depth(self.forward_features(inputs))
        return torch.relu(out) + self.min_depth


class DPTDecoder(_DPTBody):
    """DINOv3's released DPT decoder (``dinov3.eval.depth.models.DPTHead``, same arguments): 4 ``(patch, cls)``
    pairs -> ``n_output_channels`` logits ``[B, K, 32 ceil(h/2), 32 ceil(w/2)]``.

    ``in_channels``: the taps' widths; ``readout_type``: what the class token does (``project``, ``add`` or
    ``ignore``); ``use_bias``: biases on the fusion blocks' residual convs; ``projection_after_fusion``: the final
    3x3 conv + ReLU (else identity). ``expand_channels=True`` is refused: the release's convs would then not fit
    the reassembled maps. Other keyword arguments are refused (the release passed them to ``nn.Module``)."""

    def __init__(
        self,
        in_channels: Sequence[int] = (1024, 1024, 1024, 1024),
        channels: int = 256,
        post_process_channels: Sequence[int] = (128, 256, 512, 1024),
        readout_type: str = "project",
        expand_channels: bool = False,
        n_output_channels: int = 256,
        n_hidden_channels: int = 32,
        use_batchnorm: bool = False,
        use_bias: bool = False,
        projection_after_fusion: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if expand_channels:
            raise ValueError("expand_channels=True is not supported: the released decoder's convs would not fit")
        if not len(in_channels) == len(post_process_channels) == 4:
            raise ValueError(
                f"the DPT decoder taps 4 blocks: got in_channels={list(in_channels)}, "
                f"post_process_channels={list(post_process_channels)}"
            )
        self.channels, self.in_channels = channels, list(in_channels)
        self.n_output_channels, self.n_hidden_channels = n_output_channels, n_hidden_channels
        self.post_process_channels = list(post_process_channels)
        self.reassemble_blocks = ReassembleBlocks(
            in_channels, post_process_channels, readout_type=readout_type, use_batchnorm=use_batchnorm, kaiming=True
        )
        conv = dict(padding=1, bias=False, kaiming=True)
        self.convs = nn.ModuleList([ConvModule(c, channels, 3, **conv) for c in post_process_channels])
        fusion = dict(bias=use_bias, kaiming=True)
        self.fusion_blocks = nn.ModuleList([FeatureFusionBlock(channels, **fusion) for _ in range(4)])
        self.fusion_blocks[0].res_conv_unit1 = None  # built, then dropped, as released (the same random draws)
        self.project = (
            ConvModule(channels, channels, 3, padding=1, act=True, kaiming=True)
            if projection_after_fusion
            else nn.Identity()
        )
        self.conv_depth = UpConvHead(channels, n_output_channels, n_hidden_channels)

    def forward(self, inputs: FeatureList) -> Tensor:
        return self.conv_depth(self.forward_features(inputs))
