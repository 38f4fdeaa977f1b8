"""The detector's transformer as released for the hub (``TransformerReParam``, two-stage, mixed query selection): a
post-norm DETR encoder over the projected feature map, proposals from the encoder output at several strides (the
top-scoring ones seed the queries' boxes, in pixels), then the global decoder."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.heads.detection.backbone import LayerNorm2D
from dinov2.heads.detection.box_ops import box_xyxy_to_cxcywh, delta2bbox
from dinov2.heads.detection.decoder import GlobalDecoder

__all__ = ["Transformer", "TransformerEncoder", "TransformerEncoderLayer", "stride_projection"]


class TransformerEncoderLayer(nn.Module):
    """DETR's post-norm encoder layer on ``[B, S, C]``: self-attention (position added to queries and keys, padded
    keys ignored), then a ReLU FFN ``dim_feedforward`` wide."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=0, batch_first=True)  # 0: as released
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: Tensor, src_key_padding_mask: Tensor | None = None, pos: Tensor | None = None) -> Tensor:
        q = k = src if pos is None else src + pos
        attended = self.self_attn(q, k, value=src, key_padding_mask=src_key_padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attended))
        return self.norm2(src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(src))))))


class TransformerEncoder(nn.Module):
    """``num_layers`` copies of ``encoder_layer`` (no final norm, as released)."""

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(encoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers

    def forward(self, src: Tensor, src_key_padding_mask: Tensor | None = None, pos: Tensor | None = None) -> Tensor:
        for layer in self.layers:
            src = layer(src, src_key_padding_mask=src_key_padding_mask, pos=pos)
        return src


def stride_projection(d_model: int, in_stride: int, stride: int) -> nn.Module:
    """``[B, d_model, h, w]`` at ``in_stride`` -> at ``stride``: identity, or 2x2 (transposed) convolutions, each
    but the last followed by :class:`LayerNorm2D` and GELU."""
    if stride == in_stride:
        return nn.Identity()
    conv = nn.Conv2d if stride > in_stride else nn.ConvTranspose2d
    steps = int(math.log2(max(stride, in_stride) / min(stride, in_stride)))
    layers: list[nn.Module] = []
    for _ in range(steps - 1):
        layers += [conv(d_model, d_model, kernel_size=2, stride=2), LayerNorm2D(d_model), nn.GELU()]
    layers.append(conv(d_model, d_model, kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class Transformer(nn.Module):
    """Encoder, proposals and ``decoder`` for one feature map (``d_model`` channels, ``proposal_in_stride`` pixels per
    cell). Proposals: the encoder output projected to each of ``proposal_tgt_strides``, one box per cell (centre,
    side ``proposal_min_size`` x 2^level pixels), moved by the last box head; the ``two_stage_num_proposals`` best
    (by the last class head's first logit) become the decoder's initial boxes."""

    def __init__(
        self,
        decoder: GlobalDecoder,
        d_model: int = 256,
        nhead: int = 8,
        num_feature_levels: int = 1,
        two_stage_num_proposals: int = 300,
        proposal_feature_levels: int = 1,
        proposal_in_stride: int = 16,
        proposal_tgt_strides: tuple[int, ...] = (8, 16, 32, 64),
        proposal_min_size: int = 50,
        add_transformer_encoder: bool = False,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        num_encoder_layers: int = 6,
    ) -> None:
        super().__init__()
        if proposal_feature_levels > 1 and len(proposal_tgt_strides) != proposal_feature_levels:
            raise ValueError(
                f"proposal_tgt_strides must give one stride per proposal level ({proposal_feature_levels}), "
                f"got {list(proposal_tgt_strides)}"
            )
        self.d_model, self.nhead = d_model, nhead
        self.two_stage, self.mixed_selection = True, True  # the only served kind, as the hub builds it
        self.two_stage_num_proposals = two_stage_num_proposals
        self.decoder = decoder  # built first: the order of random initialisations is the release's
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self.enc_output = nn.Linear(d_model, d_model)
        self.enc_output_norm = nn.LayerNorm(d_model)
        self.pos_trans = nn.Linear(d_model * 2, d_model * 2)
        self.pos_trans_norm = nn.LayerNorm(d_model * 2)
        self.proposal_feature_levels = proposal_feature_levels
        self.proposal_tgt_strides = list(proposal_tgt_strides)
        self.proposal_min_size = proposal_min_size
        if proposal_feature_levels > 1:
            self.proposal_in_stride = proposal_in_stride
            projections = [stride_projection(d_model, proposal_in_stride, s) for s in proposal_tgt_strides]
            self.enc_output_proj = nn.ModuleList(projections)
        self.encoder = None
        if add_transformer_encoder:
            layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout)
            self.encoder = TransformerEncoder(layer, num_encoder_layers)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.normal_(self.level_embed)
        self.decoder._reset_parameters()

    def get_proposal_pos_embed(self, proposals: Tensor) -> Tensor:
        """Sine embedding ``[B, Q, 2 d_model]`` of boxes ``[B, Q, 4]`` (``d_model / 2`` features per coordinate)."""
        num_pos_feats = self.d_model // 2
        dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=proposals.device)
        dim_t = 10000 ** (2 * (dim_t // 2) / num_pos_feats)
        pos = (proposals * (2 * math.pi))[:, :, :, None] / dim_t  # [B, Q, 4, d_model / 2]
        return torch.stack((pos[:, :, :, 0::2].sin(), pos[:, :, :, 1::2].cos()), dim=4).flatten(2)

    def expand_encoder_output(
        self, memory: Tensor, memory_padding_mask: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
        """The encoder output ``[B, h w, C]`` and its mask ``[B, h w]`` at every proposal stride, flattened and
        concatenated, with each level's ``(h, w)``."""
        batch, _, channels = memory.shape
        h, w = spatial_shapes[0]
        grid = memory.view(batch, h, w, channels).permute(0, 3, 1, 2)  # [B, C, h, w]
        padding = memory_padding_mask.view(batch, h, w)
        memories, masks, shapes = [], [], []
        for projection in self.enc_output_proj:
            level = projection(grid)
            mask = F.interpolate(padding[None].float(), size=level.shape[-2:]).to(torch.bool)
            memories.append(level.flatten(2).transpose(1, 2))
            masks.append(mask.squeeze(0).flatten(1))
            shapes.append(tuple(level.shape[-2:]))
        return torch.cat(memories, dim=1), torch.cat(masks, dim=1), shapes

    def gen_encoder_output_proposals(
        self, memory: Tensor, memory_padding_mask: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """Per proposal cell: its features ``[B, S, C]`` (zero where padded or the box leaves the image), its box
        ``[B, S, 4]`` (cx, cy, w, h in pixels; invalid ones moved out of the image), and the valid image sizes
        (heights, widths ``[B, 1, 1]`` in pixels)."""
        if self.proposal_feature_levels > 1:
            memory, memory_padding_mask, spatial_shapes = self.expand_encoder_output(
                memory, memory_padding_mask, spatial_shapes
            )
        batch = memory.shape[0]
        proposals = []
        for level, (h, w) in enumerate(spatial_shapes):
            stride = self.proposal_tgt_strides[level]
            grid_y, grid_x = torch.meshgrid(
                torch.linspace(0, h - 1, h, dtype=torch.float32, device=memory.device),
                torch.linspace(0, w - 1, w, dtype=torch.float32, device=memory.device),
                indexing="ij",
            )
            grid = torch.cat([grid_x.unsqueeze(-1), grid_y.unsqueeze(-1)], -1)  # [h, w, 2]
            grid = (grid.unsqueeze(0).expand(batch, -1, -1, -1) + 0.5) * stride
            wh = torch.ones_like(grid) * self.proposal_min_size * (2.0**level)
            proposals.append(torch.cat((grid, wh), -1).view(batch, -1, 4))
        output_proposals = torch.cat(proposals, 1)  # [B, S, 4]

        h, w = spatial_shapes[0]
        stride = self.proposal_tgt_strides[0]
        first = memory_padding_mask[:, : h * w].view(batch, h, w, 1)
        valid_h = torch.sum(~first[:, :, 0, 0], 1, keepdim=True) * stride  # [B, 1] pixels
        valid_w = torch.sum(~first[:, 0, :, 0], 1, keepdim=True) * stride
        img_size = torch.cat([valid_w, valid_h, valid_w, valid_h], dim=-1).unsqueeze(1)  # [B, 1, 4]
        valid = ((output_proposals > 0.01 * img_size) & (output_proposals < 0.99 * img_size)).all(-1, keepdim=True)
        outside = max(h, w) * stride
        output_proposals = output_proposals.masked_fill(memory_padding_mask.unsqueeze(-1), outside)
        output_proposals = output_proposals.masked_fill(~valid, outside)

        output_memory = memory.masked_fill(memory_padding_mask.unsqueeze(-1), float(0))
        output_memory = output_memory.masked_fill(~valid, float(0))
        output_memory = self.enc_output_norm(self.enc_output(output_memory))
        return output_memory, output_proposals, (valid_h[:, None, :], valid_w[:, None, :])

    def get_reference_points(
        self, memory: Tensor, mask_flatten: Tensor, spatial_shapes: list[tuple[int, int]]
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor, Tensor, Tensor, Tensor]:
        """The ``two_stage_num_proposals`` best proposal boxes ``[B, Q, 4]`` (detached), the valid image sizes, and
        every proposal's logits, boxes (cx, cy, w, h), deltas and starting boxes."""
        output_memory, output_proposals, max_shape = self.gen_encoder_output_proposals(
            memory, mask_flatten, spatial_shapes
        )
        enc_outputs_class = self.decoder.class_embed[self.decoder.num_layers](output_memory)
        enc_outputs_delta = self.decoder.bbox_embed[self.decoder.num_layers](output_memory)
        enc_outputs_coord = box_xyxy_to_cxcywh(delta2bbox(output_proposals, enc_outputs_delta, max_shape))
        topk_proposals = torch.topk(enc_outputs_class[..., 0], self.two_stage_num_proposals, dim=1)[1]
        reference_points = torch.gather(enc_outputs_coord, 1, topk_proposals.unsqueeze(-1).repeat(1, 1, 4)).detach()
        return reference_points, max_shape, enc_outputs_class, enc_outputs_coord, enc_outputs_delta, output_proposals

    def forward(
        self, src: Tensor, mask: Tensor, pos_embed: Tensor, query_embed: Tensor, self_attn_mask: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        """Features ``src`` ``[B, C, h, w]``, padding ``mask`` ``[B, h, w]``, position ``pos_embed`` ``[B, C, h, w]``,
        content queries ``query_embed`` ``[Q, C]`` -> the decoder's queries ``[L, B, Q, C]``, initial boxes
        ``[B, Q, 4]``, boxes after each layer ``[L, B, Q, 4]``, the proposals' logits, boxes, deltas and starting
        boxes (``[B, S, *]``) and the valid image sizes."""
        spatial_shapes = [tuple(src.shape[-2:])]
        # contiguous, as the release's concatenation of its levels leaves them: the matrix products then see the same
        # memory layout and round alike (in float64 the transposed layout gives other last bits)
        src_flatten = src.flatten(2).transpose(1, 2).contiguous()  # [B, h w, C]
        mask_flatten = mask.flatten(1)
        pos_flatten = (pos_embed.flatten(2).transpose(1, 2) + self.level_embed[0].view(1, 1, -1)).contiguous()
        memory = src_flatten
        if self.encoder is not None:
            memory = self.encoder(src_flatten, src_key_padding_mask=mask_flatten, pos=pos_flatten)
        batch, _, channels = memory.shape
        reference_points, max_shape, *proposals = self.get_reference_points(memory, mask_flatten, spatial_shapes)
        pos_trans_out = self.pos_trans_norm(self.pos_trans(self.get_proposal_pos_embed(reference_points)))
        tgt = query_embed.unsqueeze(0).expand(batch, -1, -1)  # mixed selection: learnt content, proposed position
        query_pos = torch.split(pos_trans_out, channels, dim=2)[0]
        hs, inter_references = self.decoder(
            tgt,
            reference_points,
            memory,
            pos_flatten,
            spatial_shapes,
            query_pos,
            mask_flatten,
            self_attn_mask,
            max_shape,
        )
        return hs, reference_points, inter_references, *proposals, max_shape
