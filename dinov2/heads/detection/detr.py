"""Plain-DETR with box reparameterisation (the released ``PlainDETRReParam``: two-stage, box refinement, mixed query
selection, hybrid matching's one-to-many queries) and its post-processing (``PostProcess``)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dinov2.heads.detection.backbone import BackboneWithPositionEncoding, pad_images
from dinov2.heads.detection.box_ops import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, delta2bbox
from dinov2.heads.detection.transformer import Transformer
from dinov2.heads.segmentation.mask2former import MLP

__all__ = ["PlainDETR", "PostProcess"]

PRIOR_PROB = 0.01  # the class heads start at this probability (focal-loss init)


class PlainDETR(nn.Module):
    """Backbone features -> 1x1 conv + GroupNorm to ``transformer.d_model`` -> :class:`Transformer` -> per decoder
    layer (and the proposals), class logits and boxes. ``num_queries`` (one-to-one first, then one-to-many; the
    one-to-many ones are for training and cannot see the others) queries are used: the hub keeps the one-to-one.
    Keys as released (``class_embed`` and ``bbox_embed`` also appear under ``transformer.decoder``)."""

    def __init__(
        self,
        backbone: BackboneWithPositionEncoding,
        transformer: Transformer,
        num_classes: int,
        aux_loss: bool = True,
        num_queries_one2one: int = 300,
        num_queries_one2many: int = 0,
    ) -> None:
        super().__init__()
        hidden_dim = transformer.d_model
        if hidden_dim % 32:
            raise ValueError(f"hidden_dim must be a multiple of 32 (GroupNorm's 32 groups), got {hidden_dim}")
        self.num_queries = num_queries_one2one + num_queries_one2many
        self.transformer = transformer
        self.class_embed = nn.Linear(hidden_dim, num_classes)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.num_feature_levels = 1
        self.query_embed = nn.Embedding(self.num_queries, hidden_dim)
        in_channels = backbone.num_channels[0]
        self.input_proj = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_channels, hidden_dim, kernel_size=1), nn.GroupNorm(32, hidden_dim))]
        )
        self.backbone = backbone
        self.aux_loss = aux_loss
        self.with_box_refine = self.two_stage = self.mixed_selection = True

        nn.init.constant_(self.class_embed.bias, -math.log((1 - PRIOR_PROB) / PRIOR_PROB))
        nn.init.constant_(self.bbox_embed.layers[-1].weight, 0)
        nn.init.constant_(self.bbox_embed.layers[-1].bias, 0)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        num_pred = transformer.decoder.num_layers + 1  # the last heads score and move the proposals
        self.class_embed = nn.ModuleList(copy.deepcopy(self.class_embed) for _ in range(num_pred))
        self.bbox_embed = nn.ModuleList(copy.deepcopy(self.bbox_embed) for _ in range(num_pred))
        transformer.decoder.bbox_embed = self.bbox_embed  # shared: the decoder refines boxes with them
        transformer.decoder.class_embed = self.class_embed
        self.num_queries_one2one = num_queries_one2one

    def use_one2one_queries(self) -> None:
        """Keep only the one-to-one queries and as many proposals (what the release's hub does for inference)."""
        self.num_queries = self.num_queries_one2one
        self.transformer.two_stage_num_proposals = self.num_queries

    def _self_attn_mask(self, device: torch.device) -> Tensor:
        """``[Q, Q]``, True where one-to-one and one-to-many queries would see each other."""
        mask = torch.zeros([self.num_queries, self.num_queries], dtype=torch.bool, device=device)
        mask[self.num_queries_one2one :, : self.num_queries_one2one] = True
        mask[: self.num_queries_one2one, self.num_queries_one2one :] = True
        return mask

    def forward(self, samples: Sequence[Tensor] | Tensor) -> dict:
        """``samples``: ``[3, H_i, W_i]`` normalised images (or a ``[B, 3, H, W]`` batch), padded to one batch. Returns
        a dict: ``pred_logits`` ``[B, Q1, K]``, ``pred_boxes`` ``[B, Q1, 4]`` (cx, cy, w, h in pixels of the padded
        batch, clipped to each image), the one-to-many ``*_one2many``, the boxes each layer started from
        (``pred_boxes_old``) and its ``pred_deltas``; ``aux_outputs`` (and ``aux_outputs_one2many``): the same for
        the earlier decoder layers; ``enc_outputs``: the proposals' logits, boxes, starting boxes and deltas."""
        images, mask = pad_images(samples)
        features, mask, pos = self.backbone(images, mask)
        src = self.input_proj[0](features)
        query_embeds = self.query_embed.weight[0 : self.num_queries, :]
        hs, init_reference, inter_references, enc_class, enc_coord, enc_delta, enc_proposals, max_shape = (
            self.transformer(src, mask, pos, query_embeds, self._self_attn_mask(src.device))
        )
        split = self.num_queries_one2one
        one2one: dict[str, list[Tensor]] = {key: [] for key in ("pred_logits", "pred_boxes", "pred_boxes_old")}
        one2one["pred_deltas"] = []
        one2many: dict[str, list[Tensor]] = {key: [] for key in one2one}
        for lvl in range(hs.shape[0]):
            reference = init_reference if lvl == 0 else inter_references[lvl - 1]
            logits = self.class_embed[lvl](hs[lvl])
            deltas = self.bbox_embed[lvl](hs[lvl])
            boxes = box_xyxy_to_cxcywh(delta2bbox(reference, deltas, max_shape))
            for key, value in zip(one2one, (logits, boxes, reference, deltas)):
                one2one[key].append(value[:, :split])
                one2many[key].append(value[:, split:])
        out = {key: values[-1] for key, values in one2one.items()}
        out |= {f"{key}_one2many": values[-1] for key, values in one2many.items()}
        out = {key: out[key] for key in _OUTPUT_ORDER}
        if self.aux_loss:
            out["aux_outputs"] = _per_layer(one2one)
            out["aux_outputs_one2many"] = _per_layer(one2many)
        out["enc_outputs"] = {
            "pred_logits": enc_class,
            "pred_boxes": enc_coord,
            "pred_boxes_old": enc_proposals,
            "pred_deltas": enc_delta,
        }
        return out


_OUTPUT_ORDER = ("pred_logits", "pred_boxes", "pred_logits_one2many", "pred_boxes_one2many", "pred_boxes_old")
_OUTPUT_ORDER += ("pred_deltas", "pred_boxes_old_one2many", "pred_deltas_one2many")


def _per_layer(outputs: dict[str, list[Tensor]]) -> list[dict[str, Tensor]]:
    """The decoder layers but the last, one dict each."""
    return [dict(zip(outputs, values)) for values in zip(*(stack[:-1] for stack in outputs.values()))]


class PostProcess(nn.Module):
    """Raw outputs -> per image ``{"scores": [topk], "labels": [topk], "boxes": [topk, 4]}``: the ``topk`` best
    (query, class) sigmoid scores, boxes as corners in pixels of ``original_target_sizes`` (``reparam``: the model's
    pixel boxes clipped to ``target_sizes`` and rescaled; else relative boxes times ``target_sizes``)."""

    def __init__(self, topk: int = 100, reparam: bool = False) -> None:
        super().__init__()
        self.topk, self.reparam = topk, reparam

    @torch.no_grad()
    def forward(self, outputs: dict, target_sizes: Tensor, original_target_sizes: Tensor | None = None) -> list[dict]:
        """``target_sizes`` ``[B, 2]``: each image's (height, width) as the model saw it (before padding)."""
        out_logits, out_bbox = outputs["pred_logits"], outputs["pred_boxes"]
        if len(out_logits) != len(target_sizes) or target_sizes.ndim != 2 or target_sizes.shape[1] != 2:
            raise ValueError(f"target_sizes must be [{len(out_logits)}, 2] (height, width), got {target_sizes.shape}")
        if self.reparam and (original_target_sizes is None or original_target_sizes.shape != target_sizes.shape):
            raise ValueError("reparam post-processing needs original_target_sizes [B, 2] (height, width)")
        prob = out_logits.sigmoid()
        scores, topk_indexes = torch.topk(prob.view(out_logits.shape[0], -1), self.topk, dim=1)
        topk_boxes = topk_indexes // out_logits.shape[2]
        labels = topk_indexes % out_logits.shape[2]
        boxes = torch.gather(box_cxcywh_to_xyxy(out_bbox), 1, topk_boxes.unsqueeze(-1).repeat(1, 1, 4))
        img_h, img_w = target_sizes.unbind(1)
        if self.reparam:
            img_h, img_w = img_h[:, None, None], img_w[:, None, None]  # [B, 1, 1]
            boxes[..., 0::2].clamp_(min=torch.zeros_like(img_w), max=img_w)
            boxes[..., 1::2].clamp_(min=torch.zeros_like(img_h), max=img_h)
            scale_h, scale_w = (original_target_sizes / target_sizes).unbind(1)
            scale_fct = torch.stack([scale_w, scale_h, scale_w, scale_h], dim=1)
        else:
            scale_fct = torch.stack([img_w, img_h, img_w, img_h], dim=1)
        boxes = boxes * scale_fct[:, None, :]
        return [{"scores": s, "labels": label, "boxes": b} for s, label, b in zip(scores, labels, boxes)]
