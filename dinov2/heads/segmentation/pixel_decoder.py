"""Mask2Former's pixel decoder with its deformable-attention encoder, as released in DINOv3's segmentation code
(``dinov3.eval.segmentation.models.heads.pixel_decoder``, from Mask2Former / detectron2), and the pieces shared
with the transformer decoder (:mod:`dinov2.heads.segmentation.mask2former`): ``Conv2d`` with a norm and an
activation, the Caffe2 Xavier fill, the sine position embedding (``...models.utils.position_encoding``) and
``get_norm`` (``...models.utils.batch_norm``). Same arguments, state-dict keys, initialisation and numbers.

Deliberate differences: ``get_norm`` serves ``""``, ``"GN"`` (``GroupNorm(32, C)``) and ``"BN"`` / ``"SyncBN"``
(a plain ``BatchNorm2d``: the same keys and eval arithmetic; convert with ``nn.SyncBatchNorm.convert_sync_batchnorm``
to train on several GPUs), and names the choices for others (the release also has frozen, naive-sync and layer
norms); the FPN step takes the first input feature (the release iterates over the characters of its name, which is
the same for the one-character names ``"1"`` .. ``"4"`` it uses); bad inputs raise ``ValueError`` naming the valid
choices instead of failing an ``assert`` or a reshape.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.layers.ms_deform_attn import MSDeformAttn, get_reference_points, level_start_index

__all__ = [
    "Conv2d",
    "MSDeformAttnPixelDecoder",
    "MSDeformAttnTransformerEncoder",
    "MSDeformAttnTransformerEncoderLayer",
    "MSDeformAttnTransformerEncoderOnly",
    "PositionEmbeddingSine",
    "activation_fn",
    "c2_xavier_fill",
    "get_norm",
]

ShapeSpec = Sequence[int]  # [channels, height, width, stride] of an input feature
NORMS = ("", "GN", "BN", "SyncBN")
ACTIVATIONS = ("relu", "gelu", "glu")


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2's "XavierFill" (``kaiming_uniform_(a=1)``) for ``module.weight``, zero bias."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.constant_(module.bias, 0)


def get_norm(norm: str | Callable[[int], nn.Module] | None, out_channels: int) -> nn.Module | None:
    """The normalisation layer ``norm`` names for ``out_channels`` channels (None for ``None`` / ``""``), or
    ``norm(out_channels)`` for a callable."""
    if norm is None or norm == "":
        return None
    if callable(norm):
        return norm(out_channels)
    if norm == "GN":
        return nn.GroupNorm(32, out_channels)
    if norm in ("BN", "SyncBN"):
        return nn.BatchNorm2d(out_channels)
    raise ValueError(f"norm must be one of {', '.join(repr(n) for n in NORMS)} or a callable, got {norm!r}")


def activation_fn(activation: str) -> Callable[[Tensor], Tensor]:
    """``F.relu``, ``F.gelu`` or ``F.glu`` by name."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}[activation]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional ``norm`` module and ``activation`` function (keyword arguments; keys
    ``weight``, ``bias``, ``norm.*``)."""

    def __init__(self, *args, **kwargs) -> None:
        norm, activation = kwargs.pop("norm", None), kwargs.pop("activation", None)
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


class PositionEmbeddingSine(nn.Module):
    """DETR's sine position embedding of an image grid: ``[B, 2 num_pos_feats, H, W]`` (y features, then x) for
    ``x`` ``[B, C, H, W]``, from the cumulative count of unmasked cells (``mask`` ``[B, H, W]``, True where padded),
    scaled to ``[0, scale]`` when ``normalize``. ``offset`` is taken from the counts before scaling (Plain-DETR's
    detector uses 0.5: cell centres). Float32; no parameters."""

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: int = 10000,
        normalize: bool = False,
        scale: float | None = None,
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        if scale is not None and normalize is False:
            raise ValueError("normalize should be True if scale is passed")
        if offset and not normalize:
            raise ValueError("offset needs normalize=True (an unnormalised offset embedding is not served)")
        self.num_pos_feats, self.temperature, self.normalize = num_pos_feats, temperature, normalize
        self.scale = 2 * math.pi if scale is None else scale
        self.offset = offset

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            mask = torch.zeros((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool)
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = (y_embed - self.offset) / (y_embed[:, -1:, :] + eps) * self.scale  # x - 0.0 is exact
            x_embed = (x_embed - self.offset) / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        normalize, scale, offset = self.normalize, self.scale, self.offset
        return f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, {normalize=}, {scale=}, {offset=}"


# ------------------------------------------------------------------------------------ deformable transformer encoder
class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention over all levels, then a ReLU FFN (``d_ffn`` wide)."""

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.activation = activation_fn(activation)
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    @staticmethod
    def with_pos_embed(tensor: Tensor, pos: Tensor | None) -> Tensor:
        return tensor if pos is None else tensor + pos

    def forward_ffn(self, src: Tensor) -> Tensor:
        src2 = self.linear2(self.dropout2(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout3(src2))

    def forward(
        self,
        src: Tensor,
        pos: Tensor | None,
        reference_points: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        """``src`` / ``pos`` ``[B, S, C]`` (all levels flattened) -> ``[B, S, C]``."""
        query = self.with_pos_embed(src, pos)
        src2 = self.self_attn(query, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(src2))
        return self.forward_ffn(src)


class MSDeformAttnTransformerEncoder(nn.Module):
    """``num_layers`` copies of ``encoder_layer`` (deep copies: the same initial weights until reset)."""

    def __init__(self, encoder_layer: nn.Module, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers

    @staticmethod
    def get_reference_points(spatial_shapes: Tensor, valid_ratios: Tensor, device: torch.device | str) -> Tensor:
        """Each cell's centre in every level's frame: ``[B, S, L, 2]`` (see
        :func:`~dinov2.layers.ms_deform_attn.get_reference_points`)."""
        return get_reference_points(spatial_shapes, device, valid_ratios)

    def forward(
        self,
        src: Tensor,
        spatial_shapes: Tensor,
        level_start_index: Tensor,
        valid_ratios: Tensor,
        pos: Tensor | None = None,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        output = src
        reference_points = self.get_reference_points(spatial_shapes, valid_ratios, device=src.device)
        for layer in self.layers:
            output = layer(output, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return output


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Deformable DETR's encoder over ``num_feature_levels`` maps, with a learnt embedding per level added to the
    position embeddings. Keys ``encoder.layers.<i>.*``, ``level_encoding``."""

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
    ) -> None:
        super().__init__()
        self.d_model, self.nhead = d_model, nhead
        layer = MSDeformAttnTransformerEncoderLayer(
            d_model, dim_feedforward, dropout, activation, num_feature_levels, nhead, enc_n_points
        )
        self.encoder = MSDeformAttnTransformerEncoder(layer, num_encoder_layers)
        self.level_encoding = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_encoding)

    def get_valid_ratio(self, mask: Tensor) -> Tensor:
        """The unpadded fraction ``(w, h)`` of a level from its padding ``mask`` ``[B, H, W]``: ``[B, 2]``."""
        _, h, w = mask.shape
        valid_h = torch.sum(~mask[:, :, 0], 1)
        valid_w = torch.sum(~mask[:, 0, :], 1)
        return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)

    def forward(self, srcs: list[Tensor], pos_embeds: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Maps ``srcs[l]`` ``[B, C, H_l, W_l]`` and their position embeddings -> (memory ``[B, sum H_l W_l, C]``,
        spatial shapes ``[L, 2]``, level start index ``[L]``). Nothing is padded (masks all False, as released)."""
        masks = [torch.zeros((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool) for x in srcs]
        src_flatten, mask_flatten, lvl_pos_embed_flatten, spatial_shapes = [], [], [], []
        for lvl, (src, mask, pos_embed) in enumerate(zip(srcs, masks, pos_embeds)):
            spatial_shapes.append(tuple(src.shape[2:]))
            src_flatten.append(src.flatten(2).transpose(1, 2))  # [B, H_l W_l, C]
            mask_flatten.append(mask.flatten(1))
            pos_embed = pos_embed.flatten(2).transpose(1, 2)
            lvl_pos_embed_flatten.append(pos_embed + self.level_encoding[lvl].view(1, 1, -1))
        src_flatten = torch.cat(src_flatten, 1)
        mask_flatten = torch.cat(mask_flatten, 1)
        lvl_pos_embed_flatten = torch.cat(lvl_pos_embed_flatten, 1)
        spatial_shapes = torch.as_tensor(spatial_shapes, dtype=torch.long, device=src_flatten.device)
        start_index = level_start_index(spatial_shapes)
        valid_ratios = torch.stack([self.get_valid_ratio(m) for m in masks], 1)
        memory = self.encoder(
            src_flatten, spatial_shapes, start_index, valid_ratios, lvl_pos_embed_flatten, mask_flatten
        )
        return memory, spatial_shapes, start_index


# ---------------------------------------------------------------------------------------------------- pixel decoder
class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder as DINOv3 configures it: the 3 coarsest of the 4 ``transformer_in_features``
    projected to ``conv_dim`` (1x1 conv + GroupNorm(32)), a deformable encoder over them, then one FPN step adding
    the finest feature (lateral 1x1 + 3x3 conv, ``norm``) to the upsampled finest encoder output.

    ``forward_features(features)`` -> (mask features ``[B, mask_dim, H_0, W_0]``, the coarsest encoder map, the 3
    maps the transformer decoder reads, coarse to fine); float32, autocast off on CUDA (as released)."""

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: str | Callable[[int], nn.Module] | None = None,
        transformer_in_features: list[str],
        common_stride: int,
    ) -> None:
        super().__init__()
        if len(transformer_in_features) != 4 or not set(transformer_in_features) <= set(input_shape):
            raise ValueError(
                f"transformer_in_features must name 4 of the input features {sorted(input_shape)} (the encoder reads "
                f"the 3 coarsest, as released), got {transformer_in_features}"
            )
        transformer_input_shape = {k: v for k, v in input_shape.items() if k in transformer_in_features}
        # sorted by stride (stable: the released shapes all say stride 4, so the given order is kept)
        ordered = sorted(input_shape.items(), key=lambda item: item[1][-1])
        self.in_features = [k for k, _ in ordered]
        self.feature_strides = [v[-1] for _, v in ordered]
        self.feature_channels = [v[0] for _, v in ordered]
        ordered = sorted(transformer_input_shape.items(), key=lambda item: item[1][-1])
        self.transformer_in_features = [k for k, _ in ordered]
        transformer_in_channels = [v[0] for _, v in ordered]
        self.transformer_feature_strides = [v[-1] for _, v in ordered]

        self.transformer_num_feature_levels = 3
        self.input_convs = nn.ModuleList(  # coarse to fine, the finest left out
            nn.Sequential(nn.Conv2d(c, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for c in transformer_in_channels[::-1][:-1]
        )
        for proj in self.input_convs:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        self.encoder = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_dim = mask_dim
        self.mask_feature = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        c2_xavier_fill(self.mask_feature)
        self.maskformer_num_feature_levels = 3
        self.common_stride = common_stride
        self.num_fpn_levels = int(math.log2(min(self.transformer_feature_strides)) - math.log2(common_stride))

        use_bias = norm == ""
        lateral_norm, output_norm = get_norm(norm, conv_dim), get_norm(norm, conv_dim)
        lateral_conv = Conv2d(self.feature_channels[0], conv_dim, kernel_size=1, bias=use_bias, norm=lateral_norm)
        output_conv = Conv2d(
            conv_dim, conv_dim, kernel_size=3, stride=1, padding=1, bias=use_bias, norm=output_norm, activation=F.relu
        )
        c2_xavier_fill(lateral_conv)
        c2_xavier_fill(output_conv)
        self.lateral_convs = nn.ModuleList([lateral_conv])
        self.output_convs = nn.ModuleList([output_conv])

    def forward_features(self, features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``features[name]`` ``[B, C, H, W]`` -> (mask features, coarsest encoder map, 3 maps coarse to fine)."""
        with torch.autocast("cuda", enabled=False):  # deformable DETR does not support half precision
            return self._forward_features(features)

    def _forward_features(self, features: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        srcs, pos = [], []
        for idx, f in enumerate(self.transformer_in_features[::-1][:-1]):  # coarse to fine, the finest left out
            x = features[f].float()
            srcs.append(self.input_convs[idx](x))
            pos.append(self.pe_layer(x))
        y, spatial_shapes, _ = self.encoder(srcs, pos)
        bs, shapes = y.shape[0], spatial_shapes.tolist()
        levels = torch.split(y, [h * w for h, w in shapes], dim=1)
        out = [z.transpose(1, 2).view(bs, -1, h, w) for z, (h, w) in zip(levels, shapes)]  # [B, C, H_l, W_l]
        # one FPN step on the finest feature; the release loops over the characters of its one-character name
        x = features[self.in_features[0]].float()
        cur_fpn = self.lateral_convs[0](x)
        y = cur_fpn + F.interpolate(out[-1], size=cur_fpn.shape[-2:], mode="bilinear", align_corners=False)
        out.append(self.output_convs[0](y))
        multi_scale_features = out[: self.maskformer_num_feature_levels]
        return self.mask_feature(out[-1]), out[0], multi_scale_features
