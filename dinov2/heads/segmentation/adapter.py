"""DINOv3's ViT adapter for dense prediction, as released in
``dinov3.eval.segmentation.models.backbone.dinov3_adapter`` (after ViT-Adapter, Chen et al. 2023): same arguments,
state-dict keys, initialisation and numbers.

:class:`DINOv3_Adapter` runs a frozen DINOv3 ViT (tapped at 4 blocks, no gradients) beside a small convolutional
:class:`SpatialPriorModule` that sees the image at strides 4, 8, 16 and 32; the stride 8-32 maps, flattened into one
sequence ``c``, gather from each tapped block's patch tokens by deformable attention (:class:`Extractor`, in one
:class:`InteractionBlockWithCls` per tap, the last with 2 more extractors). The tapped blocks, resized to the four
strides, are added to ``c`` (and the stride-4 map to an upsampled stride-8 one), and each scale is batch-normed:
``{"1": [B, D, H/4, W/4], "2": [B, D, H/8, W/8], "3": [B, D, H/16, W/16], "4": [B, D, H/32, W/32]}`` for an image
``[B, 3, H, W]`` whose sides are multiples of 32 (``D``: the ViT's width).

Deliberate differences: batch norm is a plain ``BatchNorm2d`` (the released ``SyncBatchNorm``'s keys and eval
arithmetic; ``nn.SyncBatchNorm.convert_sync_batchnorm`` for multi-GPU training); the backbone runs under bfloat16
autocast only on CUDA inputs (the release asks for CUDA autocast always, which a machine without CUDA disables with
a warning: the same numbers); nothing is printed; image sides that are not multiples of 32, or a number of taps other
than 4, raise ``ValueError`` (the release fails in a reshape); activation checkpointing (``with_cp``) is
non-reentrant; the unused class-token slice of the image and ``_get_pos_embed`` are left out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn

from dinov2.layers.drop_path import DropPath, drop_path
from dinov2.layers.ms_deform_attn import MSDeformAttn, get_reference_points, level_start_index

__all__ = [
    "ConvFFN",
    "DINOv3_Adapter",
    "DWConv",
    "DropPath",
    "Extractor",
    "InteractionBlockWithCls",
    "SpatialPriorModule",
    "deform_inputs",
    "drop_path",
    "get_reference_points",
]

DeformInputs = list  # [reference points [1, Lq, 1, 2], spatial shapes [L, 2], level start index [L]]
_LayerNorm = partial(nn.LayerNorm, eps=1e-6)


def deform_inputs(x: Tensor, patch_size: int) -> tuple[DeformInputs, DeformInputs]:
    """The deformable-attention inputs for an image ``x`` ``[B, 3, H, W]``: (the ViT tokens querying the stride 8,
    16 and 32 maps: unused, as released; the stride 8-32 maps querying the ViT tokens, what the extractors use)."""
    _, _, h, w = x.shape
    pyramid = [(h // 8, w // 8), (h // 16, w // 16), (h // 32, w // 32)]
    tokens = [(h // patch_size, w // patch_size)]
    shapes = torch.as_tensor(pyramid, dtype=torch.long, device=x.device)
    deform_inputs1 = [get_reference_points(tokens, x.device), shapes, level_start_index(shapes)]
    shapes = torch.as_tensor(tokens, dtype=torch.long, device=x.device)
    deform_inputs2 = [get_reference_points(pyramid, x.device), shapes, level_start_index(shapes)]
    return deform_inputs1, deform_inputs2


class DWConv(nn.Module):
    """3x3 depthwise conv applied to each of the three maps (strides 8, 16, 32: ``2H x 2W``, ``H x W``,
    ``H/2 x W/2``) flattened one after the other in ``x`` ``[B, 21 HW / 4, C]``."""

    def __init__(self, dim: int = 768) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        b, n, c = x.shape
        n //= 21
        x1 = x[:, 0 : 16 * n, :].transpose(1, 2).view(b, c, H * 2, W * 2).contiguous()
        x2 = x[:, 16 * n : 20 * n, :].transpose(1, 2).view(b, c, H, W).contiguous()
        x3 = x[:, 20 * n :, :].transpose(1, 2).view(b, c, H // 2, W // 2).contiguous()
        maps = [self.dwconv(m).flatten(2).transpose(1, 2) for m in (x1, x2, x3)]
        return torch.cat(maps, dim=1)


class ConvFFN(nn.Module):
    """FFN with a depthwise conv between its two linear layers (GELU after the conv), on the multi-scale sequence."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, H: int, W: int) -> Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x), H, W)))
        return self.drop(self.fc2(x))


class Extractor(nn.Module):
    """The multi-scale ``query`` ``[B, Lq, C]`` gathers from ``feat`` ``[B, N, C]`` (the ViT tokens) by deformable
    attention (``n_levels`` levels), then a :class:`ConvFFN` (``with_cffn``), both residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 6,
        n_points: int = 4,
        n_levels: int = 1,
        deform_ratio: float = 1.0,
        with_cffn: bool = True,
        cffn_ratio: float = 0.25,
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_layer: Callable[[int], nn.Module] = _LayerNorm,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        self.query_norm = norm_layer(dim)
        self.feat_norm = norm_layer(dim)
        self.attn = MSDeformAttn(
            d_model=dim, n_levels=n_levels, n_heads=num_heads, n_points=n_points, ratio=deform_ratio
        )
        self.with_cffn = with_cffn
        self.with_cp = with_cp
        if with_cffn:
            self.ffn = ConvFFN(in_features=dim, hidden_features=int(dim * cffn_ratio), drop=drop)
            self.ffn_norm = norm_layer(dim)
            self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        feat: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        H: int,
        W: int,
    ) -> Tensor:
        def inner(query: Tensor, feat: Tensor) -> Tensor:
            attn = self.attn(
                self.query_norm(query), reference_points, self.feat_norm(feat), spatial_shapes, level_start_index
            )
            query = query + attn
            if self.with_cffn:
                query = query + self.drop_path(self.ffn(self.ffn_norm(query), H, W))
            return query

        if self.with_cp and query.requires_grad:
            return cp.checkpoint(inner, query, feat, use_reentrant=False)
        return inner(query, feat)


class InteractionBlockWithCls(nn.Module):
    """One tap's interaction: an :class:`Extractor` (2 more with ``extra_extractor``) updating the multi-scale
    sequence ``c`` from the tap's tokens ``x``; ``x`` and ``cls`` pass through unchanged (as released)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 6,
        n_points: int = 4,
        norm_layer: Callable[[int], nn.Module] = _LayerNorm,
        drop: float = 0.0,
        drop_path: float = 0.0,
        with_cffn: bool = True,
        cffn_ratio: float = 0.25,
        init_values: float = 0.0,
        deform_ratio: float = 1.0,
        extra_extractor: bool = False,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        extractor = partial(
            Extractor,
            dim=dim,
            num_heads=num_heads,
            n_points=n_points,
            norm_layer=norm_layer,
            deform_ratio=deform_ratio,
            with_cffn=with_cffn,
            cffn_ratio=cffn_ratio,
            drop=drop,
            drop_path=drop_path,
            with_cp=with_cp,
        )
        self.extractor = extractor(n_levels=1)
        self.extra_extractors = nn.Sequential(*[extractor() for _ in range(2)]) if extra_extractor else None

    def forward(
        self,
        x: Tensor,
        c: Tensor,
        cls: Tensor,
        deform_inputs1: DeformInputs,
        deform_inputs2: DeformInputs,
        H_c: int,
        W_c: int,
        H_toks: int,
        W_toks: int,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` ``[B, N, D]`` tokens, ``c`` ``[B, Lq, D]`` -> ``(x, updated c, cls)``."""
        reference_points, spatial_shapes, start_index = deform_inputs2
        for extractor in [self.extractor, *(self.extra_extractors or [])]:
            c = extractor(c, reference_points, x, spatial_shapes, start_index, H_c, W_c)
        return x, c, cls


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class SpatialPriorModule(nn.Module):
    """A ResNet-like stem and 3 strided convs (``inplanes``, 2x, 4x, 4x channels at strides 4, 8, 16, 32), each
    projected to ``embed_dim`` by a 1x1 conv: ``c1`` ``[B, D, H/4, W/4]`` and ``c2``, ``c3``, ``c4`` flattened
    ``[B, h w, D]``."""

    def __init__(self, inplanes: int = 64, embed_dim: int = 384, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.stem = nn.Sequential(
            *_conv_bn_relu(3, inplanes, 2),
            *_conv_bn_relu(inplanes, inplanes, 1),
            *_conv_bn_relu(inplanes, inplanes, 1),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.conv2 = nn.Sequential(*_conv_bn_relu(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*_conv_bn_relu(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(*_conv_bn_relu(4 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, embed_dim, kernel_size=1, stride=1, padding=0, bias=True)
        self.fc2 = nn.Conv2d(2 * inplanes, embed_dim, kernel_size=1, stride=1, padding=0, bias=True)
        self.fc3 = nn.Conv2d(4 * inplanes, embed_dim, kernel_size=1, stride=1, padding=0, bias=True)
        self.fc4 = nn.Conv2d(4 * inplanes, embed_dim, kernel_size=1, stride=1, padding=0, bias=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        def inner(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            c1 = self.stem(x)
            c2 = self.conv2(c1)
            c3 = self.conv3(c2)
            c4 = self.conv4(c3)
            c1, c2, c3, c4 = self.fc1(c1), self.fc2(c2), self.fc3(c3), self.fc4(c4)
            bs, dim, _, _ = c1.shape
            return c1, *(c.view(bs, dim, -1).transpose(1, 2) for c in (c2, c3, c4))  # c2..c4: [B, hw, D]

        if self.with_cp and x.requires_grad:
            return cp.checkpoint(inner, x, use_reentrant=False)
        return inner(x)


def _init_weights(m: nn.Module) -> None:
    """The adapter's initialisation: truncated-normal linear weights, He-normal (fan-out) convs, unit norms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.constant_(m.bias, 0)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.constant_(m.bias, 0)
        nn.init.constant_(m.weight, 1.0)
    elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        with torch.no_grad():
            m.weight.normal_(0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                m.bias.zero_()


class DINOv3_Adapter(nn.Module):
    """The frozen ``backbone`` (a DINOv3 ViT) tapped at ``interaction_indexes`` (4 blocks) + the adapter's
    trainable spatial prior and interactions (see the module docstring): ``forward(x)`` -> ``{"1": .., "4": ..}``.
    Keys ``backbone.*``, ``level_embed``, ``spm.*``, ``interactions.*``, ``up.*``, ``norm1`` .. ``norm4``."""

    def __init__(
        self,
        backbone: nn.Module,
        interaction_indexes: Sequence[int] = (9, 19, 29, 39),
        pretrain_size: int = 512,
        conv_inplane: int = 64,
        n_points: int = 4,
        deform_num_heads: int = 16,
        drop_path_rate: float = 0.3,
        init_values: float = 0.0,
        with_cffn: bool = True,
        cffn_ratio: float = 0.25,
        deform_ratio: float = 0.5,
        add_vit_feature: bool = True,
        use_extra_extractor: bool = True,
        with_cp: bool = True,
    ) -> None:
        super().__init__()
        if add_vit_feature and len(interaction_indexes) != 4:
            raise ValueError(f"interaction_indexes must list 4 blocks of the backbone, got {list(interaction_indexes)}")
        self.backbone = backbone
        self.backbone.requires_grad_(False)  # frozen, as released
        self.pretrain_size = (pretrain_size, pretrain_size)
        self.interaction_indexes = list(interaction_indexes)
        self.add_vit_feature = add_vit_feature
        embed_dim = self.backbone.embed_dim
        self.patch_size = self.backbone.patch_size
        self.level_embed = nn.Parameter(torch.zeros(3, embed_dim))
        self.spm = SpatialPriorModule(inplanes=conv_inplane, embed_dim=embed_dim, with_cp=False)
        last = len(self.interaction_indexes) - 1
        self.interactions = nn.Sequential(
            *[
                InteractionBlockWithCls(
                    dim=embed_dim,
                    num_heads=deform_num_heads,
                    n_points=n_points,
                    init_values=init_values,
                    drop_path=drop_path_rate,
                    norm_layer=_LayerNorm,
                    with_cffn=with_cffn,
                    cffn_ratio=cffn_ratio,
                    deform_ratio=deform_ratio,
                    extra_extractor=i == last and use_extra_extractor,
                    with_cp=with_cp,
                )
                for i in range(len(self.interaction_indexes))
            ]
        )
        self.up = nn.ConvTranspose2d(embed_dim, embed_dim, 2, 2)
        self.norm1 = nn.BatchNorm2d(embed_dim)
        self.norm2 = nn.BatchNorm2d(embed_dim)
        self.norm3 = nn.BatchNorm2d(embed_dim)
        self.norm4 = nn.BatchNorm2d(embed_dim)
        self.up.apply(_init_weights)
        self.spm.apply(_init_weights)
        self.interactions.apply(_init_weights)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def _add_level_embed(self, c2: Tensor, c3: Tensor, c4: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return c2 + self.level_embed[0], c3 + self.level_embed[1], c4 + self.level_embed[2]

    def _tapped_blocks(self, x: Tensor) -> tuple[tuple[Tensor, Tensor], ...]:
        """``(patch tokens [B, N, D], class token [B, D])`` of each tapped block, normed, without gradients; under
        bfloat16 autocast on CUDA, as released."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.device.type == "cuda"), torch.no_grad():
            return self.backbone.get_intermediate_layers(x, n=self.interaction_indexes, return_class_token=True)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"DINOv3_Adapter needs image sides that are multiples of 32, got {tuple(x.shape[-2:])}")
        deform_inputs1, deform_inputs2 = deform_inputs(x, self.patch_size)
        c1, c2, c3, c4 = self.spm(x)
        c2, c3, c4 = self._add_level_embed(c2, c3, c4)
        c = torch.cat([c2, c3, c4], dim=1)  # [B, 21 H_c W_c / 4, D]: strides 8, 16, 32
        H_c, W_c = x.shape[2] // 16, x.shape[3] // 16
        H_toks, W_toks = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
        bs = x.shape[0]
        all_layers = self._tapped_blocks(x)
        dim = all_layers[0][0].shape[-1]
        outs = []
        for (tokens, cls), layer in zip(all_layers, self.interactions):
            _, c, _ = layer(tokens, c, cls, deform_inputs1, deform_inputs2, H_c, W_c, H_toks, W_toks)
            outs.append(tokens.transpose(1, 2).view(bs, dim, H_toks, W_toks).contiguous())
        n2, n3 = c2.size(1), c3.size(1)
        c2 = c[:, :n2].transpose(1, 2).view(bs, dim, H_c * 2, W_c * 2).contiguous()
        c3 = c[:, n2 : n2 + n3].transpose(1, 2).view(bs, dim, H_c, W_c).contiguous()
        c4 = c[:, n2 + n3 :].transpose(1, 2).view(bs, dim, H_c // 2, W_c // 2).contiguous()
        c1 = self.up(c2) + c1
        if self.add_vit_feature:
            sizes = [(4 * H_c, 4 * W_c), (2 * H_c, 2 * W_c), (H_c, W_c), (H_c // 2, W_c // 2)]
            x1, x2, x3, x4 = (
                F.interpolate(o, size=s, mode="bilinear", align_corners=False) for o, s in zip(outs, sizes)
            )
            c1, c2, c3, c4 = c1 + x1, c2 + x2, c3 + x3, c4 + x4
        return {"1": self.norm1(c1), "2": self.norm2(c2), "3": self.norm3(c3), "4": self.norm4(c4)}
