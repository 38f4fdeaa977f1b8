"""The Mask2Former head of DINOv3's segmentor and its masked-attention transformer decoder, as released in
``dinov3.eval.segmentation.models.heads.mask2former_head`` and ``...mask2former_transformer_decoder`` (from
Mask2Former, Cheng et al. 2022): same arguments, state-dict keys, initialisation and numbers. The pixel decoder and
the shared pieces are in :mod:`dinov2.heads.segmentation.pixel_decoder`.

:class:`Mask2FormerHead` turns the adapter's 4 maps ``{"1": .., "4": ..}`` (``[B, C, H/4, W/4]`` .. ``[B, C, H/32,
W/32]``) into ``{"pred_logits": [B, Q, K + 1], "pred_masks": [B, Q, H/4, W/4], "aux_outputs": [...]}``: ``Q`` = 100
queries, each a class distribution (``K`` classes + "no object") and a mask; ``aux_outputs`` are the predictions
after the initial queries and each of the first 8 of the 9 decoder layers. Semantic segmentation combines them as
``einsum("bqk,bqhw->bkhw", softmax(logits)[..., :-1], sigmoid(masks))``.

Deliberate differences: bad arguments raise ``ValueError`` naming the valid choices instead of failing an ``assert``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partialmethod

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.heads.segmentation.pixel_decoder import (
    Conv2d,
    MSDeformAttnPixelDecoder,
    PositionEmbeddingSine,
    ShapeSpec,
    activation_fn,
    c2_xavier_fill,
)

__all__ = [
    "CrossAttentionLayer",
    "FFNLayer",
    "MLP",
    "Mask2FormerHead",
    "MultiScaleMaskedTransformerDecoder",
    "SelfAttentionLayer",
]


class _Sublayer(nn.Module):
    """What the decoder's sublayers share: LayerNorm, dropout, activation and whether to norm before (the released
    ``normalize_before``), Xavier-uniform matrices, and the residual step ``norm(tgt + dropout(update))`` (after)
    or ``tgt + dropout(update(norm(tgt)))`` (before). Each sublayer writes its update once, as ``_run(pre, tgt,
    ...)``; the released ``forward_post`` / ``forward_pre`` are that with ``pre`` fixed, ``forward`` picks by
    ``normalize_before``."""

    def _finish_init(self, d_model: int, dropout: float, activation: str, normalize_before: bool) -> None:
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation_fn(activation)
        self.normalize_before = normalize_before
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def with_pos_embed(self, tensor: Tensor, pos: Tensor | None) -> Tensor:
        return tensor if pos is None else tensor + pos

    def _residual(self, pre: bool, tgt: Tensor, update: Callable[[Tensor], Tensor]) -> Tensor:
        if pre:
            return tgt + self.dropout(update(self.norm(tgt)))
        return self.norm(tgt + self.dropout(update(tgt)))


class _AttentionLayer(_Sublayer):
    """An ``nn.MultiheadAttention`` named ``attention_name``, then the residual step. Sequences are ``[L, B, C]``."""

    attention_name: str

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        setattr(self, self.attention_name, nn.MultiheadAttention(d_model, nhead, dropout=dropout))
        self._finish_init(d_model, dropout, activation, normalize_before)


class SelfAttentionLayer(_AttentionLayer):
    """Self-attention among the queries ``[Q, B, C]`` with their position embedding added to queries and keys,
    residual, LayerNorm after (``normalize_before``: before)."""

    attention_name = "self_attn"
    self_attn: nn.MultiheadAttention

    def forward(
        self,
        tgt: Tensor,
        tgt_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        return self._run(self.normalize_before, tgt, tgt_mask, tgt_key_padding_mask, query_pos)

    def _run(self, pre, tgt, tgt_mask=None, tgt_key_padding_mask=None, query_pos=None) -> Tensor:
        def update(x: Tensor) -> Tensor:
            q = k = self.with_pos_embed(x, query_pos)
            return self.self_attn(q, k, value=x, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask)[0]

        return self._residual(pre, tgt, update)

    forward_post = partialmethod(_run, False)
    forward_pre = partialmethod(_run, True)


class CrossAttentionLayer(_AttentionLayer):
    """The queries ``[Q, B, C]`` attend to ``memory`` ``[HW, B, C]`` (position embeddings added to queries and
    keys; ``memory_mask`` ``[B * heads, Q, HW]``, True where not allowed), residual, LayerNorm after (or before)."""

    attention_name = "multihead_attn"
    multihead_attn: nn.MultiheadAttention

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        pos: Tensor | None = None,
        query_pos: Tensor | None = None,
    ) -> Tensor:
        return self._run(self.normalize_before, tgt, memory, memory_mask, memory_key_padding_mask, pos, query_pos)

    def _run(self, pre, tgt, memory, memory_mask=None, memory_key_padding_mask=None, pos=None, query_pos=None):
        def update(x: Tensor) -> Tensor:
            return self.multihead_attn(
                query=self.with_pos_embed(x, query_pos),
                key=self.with_pos_embed(memory, pos),
                value=memory,
                attn_mask=memory_mask,
                key_padding_mask=memory_key_padding_mask,
            )[0]

        return self._residual(pre, tgt, update)

    forward_post = partialmethod(_run, False)
    forward_pre = partialmethod(_run, True)


class FFNLayer(_Sublayer):
    """Two-layer FFN (``dim_feedforward`` wide) on ``[..., C]``, residual, LayerNorm after (or before)."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self._finish_init(d_model, dropout, activation, normalize_before)

    def forward(self, tgt: Tensor) -> Tensor:
        return self._run(self.normalize_before, tgt)

    def _run(self, pre: bool, tgt: Tensor) -> Tensor:
        return self._residual(pre, tgt, lambda x: self.linear2(self.dropout(self.activation(self.linear1(x)))))

    forward_post = partialmethod(_run, False)
    forward_pre = partialmethod(_run, True)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (keys ``layers.<i>.*``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < self.num_layers - 1 else layer(x)
        return x


class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Mask2Former's decoder: ``num_queries`` learnt queries, then ``dec_layers`` rounds (cross-attention to one of 3
    pixel-decoder maps in turn, masked to where the previous round's mask is above 0.5; self-attention; FFN), each
    followed by class logits and masks (the queries' MLP embedding dotted with the mask features)."""

    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
    ) -> None:
        super().__init__()
        if not mask_classification:
            raise ValueError("mask_classification must be True: only mask classification is supported (as released)")
        self.mask_classification = mask_classification
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList()
        self.transformer_cross_attention_layers = nn.ModuleList()
        self.transformer_ffn_layers = nn.ModuleList()
        for _ in range(self.num_layers):
            self.transformer_self_attention_layers.append(
                SelfAttentionLayer(d_model=hidden_dim, nhead=nheads, dropout=0.0, normalize_before=pre_norm)
            )
            self.transformer_cross_attention_layers.append(
                CrossAttentionLayer(d_model=hidden_dim, nhead=nheads, dropout=0.0, normalize_before=pre_norm)
            )
            self.transformer_ffn_layers.append(
                FFNLayer(d_model=hidden_dim, dim_feedforward=dim_feedforward, dropout=0.0, normalize_before=pre_norm)
            )
        self.post_norm = nn.LayerNorm(hidden_dim)
        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # learnt query features
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # learnt query position embeddings
        self.num_feature_levels = 3
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                self.input_proj.append(Conv2d(in_channels, hidden_dim, kernel_size=1))
                c2_xavier_fill(self.input_proj[-1])
            else:
                self.input_proj.append(nn.Sequential())
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, x: Sequence[Tensor], mask_features: Tensor, mask: Tensor | None = None) -> dict:
        """``x``: 3 maps ``[B, C, H_l, W_l]``; ``mask_features`` ``[B, mask_dim, H, W]``; ``mask`` is ignored (as
        released). Returns ``pred_logits`` ``[B, Q, K + 1]``, ``pred_masks`` ``[B, Q, H, W]``, ``aux_outputs``."""
        if len(x) != self.num_feature_levels:
            raise ValueError(f"the decoder reads {self.num_feature_levels} feature maps, got {len(x)}")
        src, pos, size_list = [], [], []
        for i in range(self.num_feature_levels):
            size_list.append(x[i].shape[-2:])
            pos.append(self.pe_layer(x[i], None).flatten(2).permute(2, 0, 1))  # [HW, B, C]
            level = self.input_proj[i](x[i]).flatten(2) + self.level_embed.weight[i][None, :, None]
            src.append(level.permute(2, 0, 1))  # [HW, B, C]
        bs = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)  # [Q, B, C]
        output = self.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)
        outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(output, mask_features, size_list[0])
        predictions_class, predictions_mask = [outputs_class], [outputs_mask]
        for i in range(self.num_layers):
            level_index = i % self.num_feature_levels
            attn_mask[torch.where(attn_mask.sum(-1) == attn_mask.shape[-1])] = (
                False  # a query masked everywhere sees all
            )
            output = self.transformer_cross_attention_layers[i](
                output, src[level_index], memory_mask=attn_mask, pos=pos[level_index], query_pos=query_embed
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
            output = self.transformer_ffn_layers[i](output)
            next_size = size_list[(i + 1) % self.num_feature_levels]
            outputs_class, outputs_mask, attn_mask = self.forward_prediction_heads(output, mask_features, next_size)
            predictions_class.append(outputs_class)
            predictions_mask.append(outputs_mask)
        aux = [{"pred_logits": a, "pred_masks": b} for a, b in zip(predictions_class[:-1], predictions_mask[:-1])]
        return {"pred_logits": predictions_class[-1], "pred_masks": predictions_mask[-1], "aux_outputs": aux}

    def forward_prediction_heads(
        self, output: Tensor, mask_features: Tensor, attn_mask_target_size: Sequence[int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Class logits ``[B, Q, K + 1]``, masks ``[B, Q, H, W]`` and the next cross-attention mask
        ``[B * heads, Q, h * w]`` (True where the mask resized to ``attn_mask_target_size`` is below 0.5)."""
        decoder_output = self.post_norm(output).transpose(0, 1)  # [B, Q, C]
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)
        outputs_mask = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        attn_mask = F.interpolate(outputs_mask, size=attn_mask_target_size, mode="bilinear", align_corners=False)
        attn_mask = attn_mask.sigmoid().flatten(2).unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1) < 0.5
        return outputs_class, outputs_mask, attn_mask.bool().detach()


class Mask2FormerHead(nn.Module):
    """DINOv3's Mask2Former head: :class:`~dinov2.heads.segmentation.pixel_decoder.MSDeformAttnPixelDecoder` (6
    deformable encoder layers, 16 heads, FFN 4096, GroupNorm) and :class:`MultiScaleMaskedTransformerDecoder` (100
    queries, 9 layers, 16 heads, FFN 4096), both ``hidden_dim`` wide (a multiple of 32), as released.

    ``input_shape``: ``{name: [channels, height, width, stride]}`` of the 4 input maps (the adapter's ``"1"`` ..
    ``"4"``, finest first). Keys ``pixel_decoder.*``, ``predictor.*``."""

    def __init__(
        self,
        input_shape: Mapping[str, ShapeSpec],
        hidden_dim: int = 2048,
        num_classes: int = 150,
        loss_weight: float = 1.0,
        ignore_value: int = -1,
        transformer_in_feature: str = "multi_scale_pixel_decoder",
    ) -> None:
        super().__init__()
        if hidden_dim % 32 != 0:
            raise ValueError(
                f"hidden_dim must be a multiple of 32 (GroupNorm(32, hidden_dim), 16 heads), got {hidden_dim}"
            )
        self.in_features = [k for k, _ in sorted(input_shape.items(), key=lambda item: item[1][-1])]
        self.ignore_value = ignore_value
        self.common_stride = 4
        self.loss_weight = loss_weight
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            input_shape=input_shape,
            transformer_dropout=0.0,
            transformer_nheads=16,
            transformer_dim_feedforward=4096,
            transformer_enc_layers=6,
            conv_dim=hidden_dim,
            mask_dim=hidden_dim,
            norm="GN",
            transformer_in_features=["1", "2", "3", "4"],
            common_stride=4,
        )
        self.predictor = MultiScaleMaskedTransformerDecoder(
            in_channels=hidden_dim,
            mask_classification=True,
            num_classes=num_classes,
            hidden_dim=hidden_dim,
            num_queries=100,
            nheads=16,
            dim_feedforward=4096,
            dec_layers=9,
            pre_norm=False,
            mask_dim=hidden_dim,
            enforce_input_project=False,
        )
        self.transformer_in_feature = transformer_in_feature
        self.num_classes = num_classes

    def forward_features(self, features: Mapping[str, Tensor], mask: Tensor | None = None) -> dict:
        return self.layers(features, mask)

    def forward(self, features: Mapping[str, Tensor], mask: Tensor | None = None) -> dict:
        """The decoder's predictions (see the module docstring); masks at the finest input's resolution."""
        return self.forward_features(features, mask)

    def predict(
        self, features: Mapping[str, Tensor], mask: Tensor | None = None, rescale_to: Sequence[int] = (512, 512)
    ) -> dict:
        """:meth:`forward` with ``pred_masks`` resized (bilinear) to ``rescale_to``."""
        output = self.forward_features(features, mask)
        output["pred_masks"] = F.interpolate(
            output["pred_masks"], size=rescale_to, mode="bilinear", align_corners=False
        )
        return output

    def layers(self, features: Mapping[str, Tensor], mask: Tensor | None = None) -> dict:
        mask_features, _, multi_scale_features = self.pixel_decoder.forward_features(features)
        return self.predictor(multi_scale_features, mask_features, mask)
