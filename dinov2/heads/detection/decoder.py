"""Plain-DETR's global decoder with decomposed relative position bias (the released ``global_rpe_decomp``): every
query attends to the whole single-scale feature map, biased per head by small MLPs of its box corners' offsets to each
feature column and row; boxes are refined layer by layer (reparameterised: absolute pixels, :func:`delta2bbox`)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils import checkpoint

from dinov2.heads.detection.box_ops import box_xyxy_to_cxcywh, delta2bbox

__all__ = ["GlobalCrossAttention", "GlobalDecoder", "GlobalDecoderLayer", "RPE_TYPES"]

RPE_TYPES = ("linear", "abs_log8")  # offsets in pixels, or sign(d) log8(|d| + 1)


class GlobalCrossAttention(nn.Module):
    """Attention of queries ``[B, Q, C]`` to keys and values ``[B, h w, C]``, plus a bias per head: ``cpb_mlp1`` of the
    x offsets of each query box's left and right edges to each feature column, plus ``cpb_mlp2`` of the y offsets
    to each row (``feature_stride`` pixels per cell); padded cells get -100."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        rpe_hidden_dim: int = 512,
        rpe_type: str = "linear",
        feature_stride: int = 16,
    ) -> None:
        super().__init__()
        if rpe_type not in RPE_TYPES:
            raise ValueError(f"rpe_type must be one of {', '.join(RPE_TYPES)}, got {rpe_type!r}")
        self.dim, self.num_heads = dim, num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.rpe_type, self.feature_stride = rpe_type, feature_stride
        self.cpb_mlp1 = self._cpb_mlp(2, rpe_hidden_dim, num_heads)
        self.cpb_mlp2 = self._cpb_mlp(2, rpe_hidden_dim, num_heads)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @staticmethod
    def _cpb_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
        hidden = nn.Linear(in_dim, hidden_dim)
        return nn.Sequential(hidden, nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim, bias=False))

    def _position_bias(self, boxes: Tensor, h: int, w: int) -> Tensor:
        """``[B, heads, Q, h w]`` from query boxes ``[B, Q, 1, 4]`` (cx, cy, w, h in pixels)."""
        corners = torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], dim=-1)
        stride = self.feature_stride
        pos_x = torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=boxes.device)[None, None, :, None] * stride
        pos_y = torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=boxes.device)[None, None, :, None] * stride
        delta_x = corners[..., 0::2] - pos_x  # [B, Q, w, 2]
        delta_y = corners[..., 1::2] - pos_y  # [B, Q, h, 2]
        if self.rpe_type == "abs_log8":
            delta_x = torch.sign(delta_x) * torch.log2(torch.abs(delta_x) + 1.0) / math.log2(8)
            delta_y = torch.sign(delta_y) * torch.log2(torch.abs(delta_y) + 1.0) / math.log2(8)
        rpe_x, rpe_y = self.cpb_mlp1(delta_x), self.cpb_mlp2(delta_y)  # [B, Q, w, heads], [B, Q, h, heads]
        rpe = (rpe_x[:, :, None] + rpe_y[:, :, :, None]).flatten(2, 3)  # [B, Q, h w, heads]
        return rpe.permute(0, 3, 1, 2)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        k_input_flatten: Tensor,
        v_input_flatten: Tensor,
        input_spatial_shapes: list[tuple[int, int]],
        input_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """``[B, Q, C]`` for queries ``[B, Q, C]`` with boxes ``[B, Q, 1, 4]``, keys and values ``[B, h w, C]`` of one
        ``(h, w)`` map, ``input_padding_mask`` ``[B, h w]``."""
        if len(input_spatial_shapes) != 1:
            raise ValueError(f"the global decoder reads one feature map, got {len(input_spatial_shapes)}")
        h, w = input_spatial_shapes[0]
        attn_mask = self._position_bias(reference_points, h, w)
        batch, n_keys, dim = k_input_flatten.shape
        head_dim = dim // self.num_heads
        k = self.k(k_input_flatten).reshape(batch, n_keys, self.num_heads, head_dim).permute(0, 2, 1, 3)
        v = self.v(v_input_flatten).reshape(batch, n_keys, self.num_heads, head_dim).permute(0, 2, 1, 3)
        batch, n_queries, dim = query.shape
        q = self.q(query).reshape(batch, n_queries, self.num_heads, head_dim).permute(0, 2, 1, 3)
        if input_padding_mask is not None:
            attn_mask += input_padding_mask[:, None, None] * -100
        dropout = self.attn_drop.p if self.training else 0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask.contiguous(), dropout_p=dropout, scale=self.scale)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(batch, n_queries, dim)))


class GlobalDecoderLayer(nn.Module):
    """Self-attention among the queries (``self_attn_mask`` ``[Q, Q]``, True: blocked), global cross-attention to the
    feature map, ReLU FFN (``d_ffn`` wide); ``norm_type`` ``pre_norm`` (the hub's) or ``post_norm``."""

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        n_heads: int = 8,
        norm_type: str = "post_norm",
        rpe_hidden_dim: int = 512,
        rpe_type: str = "linear",
        feature_stride: int = 16,
    ) -> None:
        super().__init__()
        if norm_type not in ("pre_norm", "post_norm"):
            raise ValueError(f"norm_type must be one of pre_norm, post_norm, got {norm_type!r}")
        self.norm_type = norm_type
        self.cross_attn = GlobalCrossAttention(
            d_model, n_heads, rpe_hidden_dim=rpe_hidden_dim, rpe_type=rpe_type, feature_stride=feature_stride
        )
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def _self_attention(self, tgt: Tensor, query_pos: Tensor, mask: Tensor | None) -> Tensor:
        q = k = tgt + query_pos
        q, k, v = q.transpose(0, 1), k.transpose(0, 1), tgt.transpose(0, 1)  # [Q, B, C]; q, k: two views, as released
        return self.self_attn(q, k, v, attn_mask=mask, need_weights=False)[0].transpose(0, 1)

    def _ffn(self, tgt: Tensor) -> Tensor:
        return self.linear2(self.dropout3(F.relu(self.linear1(tgt))))

    def forward(
        self,
        tgt: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        src: Tensor,
        src_pos_embed: Tensor,
        src_spatial_shapes: list[tuple[int, int]],
        src_padding_mask: Tensor | None = None,
        self_attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Queries ``tgt`` (content) and ``query_pos`` ``[B, Q, C]``, boxes ``[B, Q, 1, 4]`` -> ``[B, Q, C]``."""
        memory = (src + src_pos_embed, src, src_spatial_shapes, src_padding_mask)
        if self.norm_type == "pre_norm":
            tgt = tgt + self.dropout2(self._self_attention(self.norm2(tgt), query_pos, self_attn_mask))
            tgt = tgt + self.dropout1(self.cross_attn(self.norm1(tgt) + query_pos, reference_points, *memory))
            return tgt + self.dropout4(self._ffn(self.norm3(tgt)))
        tgt = self.norm2(tgt + self.dropout2(self._self_attention(tgt, query_pos, self_attn_mask)))
        tgt = self.norm1(tgt + self.dropout1(self.cross_attn(tgt + query_pos, reference_points, *memory)))
        return self.norm3(tgt + self.dropout4(self._ffn(tgt)))


class GlobalDecoder(nn.Module):
    """``num_layers`` copies of ``decoder_layer``; after each (and the final norm with ``pre_norm``) the shared
    ``bbox_embed[i]`` (set by the detector) moves the boxes. Returns every layer's queries ``[L, B, Q, C]`` and boxes
    ``[L, B, Q, 4]`` (the new ones, with ``look_forward_twice``; else the detached ones the next layer reads)."""

    def __init__(
        self,
        decoder_layer: GlobalDecoderLayer,
        num_layers: int,
        look_forward_twice: bool = False,
        use_checkpoint: bool = False,
        d_model: int = 256,
        norm_type: str = "post_norm",
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(decoder_layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.look_forward_twice, self.use_checkpoint = look_forward_twice, use_checkpoint
        self.final_layer_norm = nn.LayerNorm(d_model) if norm_type == "pre_norm" else None
        self.bbox_embed: nn.ModuleList | None = None  # the detector's box heads (num_layers + 1: the last proposes)
        self.class_embed: nn.ModuleList | None = None

    def _reset_parameters(self) -> None:
        """Swin's init: truncated normal (std 0.02) linear weights, zero biases, unit LayerNorms."""

        def init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)
            elif isinstance(module, nn.LayerNorm):
                nn.init.constant_(module.bias, 0)
                nn.init.constant_(module.weight, 1.0)

        self.apply(init)

    def forward(
        self,
        tgt: Tensor,
        reference_points: Tensor,
        src: Tensor,
        src_pos_embed: Tensor,
        src_spatial_shapes: list[tuple[int, int]],
        query_pos: Tensor,
        src_padding_mask: Tensor | None,
        self_attn_mask: Tensor | None,
        max_shape: tuple[Tensor, Tensor],
    ) -> tuple[Tensor, Tensor]:
        """Queries ``tgt`` / ``query_pos`` ``[B, Q, C]``, boxes ``[B, Q, 4]`` (cx, cy, w, h in pixels), memory ``src``
        and its position ``[B, h w, C]``, valid image sizes ``max_shape`` (heights, widths ``[B, 1, 1]``)."""
        if self.bbox_embed is None:
            raise ValueError("the decoder refines boxes with the detector's bbox_embed; build it with PlainDETR")
        output, queries, boxes = tgt, [], []
        for lid, layer in enumerate(self.layers):
            args = (output, query_pos, reference_points[:, :, None], src, src_pos_embed, src_spatial_shapes)
            args = (*args, src_padding_mask, self_attn_mask)
            output = checkpoint.checkpoint(layer, *args, use_reentrant=False) if self.use_checkpoint else layer(*args)
            normed = output if self.final_layer_norm is None else self.final_layer_norm(output)
            deltas = self.bbox_embed[lid](normed)
            new_reference_points = box_xyxy_to_cxcywh(delta2bbox(reference_points, deltas, max_shape))
            reference_points = new_reference_points.detach()
            queries.append(normed)
            boxes.append(new_reference_points if self.look_forward_twice else reference_points)
        return torch.stack(queries), torch.stack(boxes)
