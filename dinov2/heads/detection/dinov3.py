"""DINOv3's detector as its hub builds it: the release's ``DetectionHeadConfig`` and ``build_model`` (the served
settings: box reparameterisation, two-stage, box refinement, mixed selection, the ``global_rpe_decomp`` decoder, sine
positions, one feature level), the hub's settings (:func:`dinov3_detector_config`), ``DetectorWithProcessor`` and
strict loading of a head file (:func:`load_detector_weights`).

As released: the backbone is frozen; no autocast (float32 throughout, also on CUDA); the hub returns the detector in
training mode but for the backbone (the encoder's dropout of 0.1 is then active: call ``model.eval()``). Training
(matchers, losses, the criterion) is not served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor, nn

from dinov2.heads.detection.backbone import (
    BackboneWithPositionEncoding,
    DINOBackbone,
    WindowsWrapper,
    sine_position_encoding,
)
from dinov2.heads.detection.decoder import GlobalDecoder, GlobalDecoderLayer
from dinov2.heads.detection.detr import PlainDETR, PostProcess
from dinov2.heads.detection.transformer import Transformer
from dinov2.heads.head_files import HeadSource, load_head_state, without_module

__all__ = [
    "DetectionHeadConfig",
    "DetectorWithProcessor",
    "PlainDETR",
    "PositionEncoding",
    "PostProcess",
    "backbone_prefix",
    "build_model",
    "dinov3_detector_config",
    "load_detector_weights",
]


class PositionEncoding(Enum):
    """The release's position embeddings of the feature map (only ``SINE`` is served)."""

    LEARNED = "learned"
    SINE = "sine"
    SINE_UNNORM = "sine_unnorm"


@dataclass(kw_only=True)
class DetectionHeadConfig:
    """The release's detector settings (same fields and defaults); :func:`build_model` says which are served."""

    num_classes: int = 91  # COCO's 91 category ids
    with_box_refine: bool = True
    two_stage: bool = True
    mixed_selection: bool = True
    look_forward_twice: bool = True
    k_one2many: int = 6  # training only (hybrid matching)
    lambda_one2many: float = 1.0  # training only
    num_queries_one2one: int = 300
    num_queries_one2many: int = 1500
    reparam: bool = True  # absolute pixel boxes, moved by deltas
    topk: int = 100
    position_embedding: PositionEncoding = PositionEncoding.SINE
    num_feature_levels: int = 1
    dec_layers: int = 6
    dim_feedforward: int = 2048  # the decoder's FFN (the encoder's is always 2048, as released)
    hidden_dim: int = 256
    dropout: float = 0.0  # the decoder's (the encoder's is always 0.1, as released)
    nheads: int = 8
    norm_type: str = "pre_norm"
    aux_loss: bool = True
    proposal_feature_levels: int = 4
    proposal_min_size: int = 50
    decoder_type: str = "global_rpe_decomp"
    decoder_use_checkpoint: bool = False
    decoder_rpe_hidden_dim: int = 512
    decoder_rpe_type: str = "linear"
    add_transformer_encoder: bool = True
    num_encoder_layers: int = 6
    layers_to_use: list[int] | int | None = None
    blocks_to_train: list[int] | None = None  # no effect: the release freezes the whole backbone
    n_windows_sqrt: int = 0
    proposal_in_stride: int | None = None
    proposal_tgt_strides: list[int] | None = None
    backbone_use_layernorm: bool = False


#: where the hub's settings (``_make_dinov3_detector``) differ from the defaults, before the backbone-dependent ones
HUB_SETTINGS = dict(num_queries_one2one=1500, topk=1500, hidden_dim=768)
#: released settings of which only the hub's value is served: field -> that value
_SERVED = dict(with_box_refine=True, two_stage=True, mixed_selection=True, reparam=True, num_feature_levels=1)
_SERVED |= dict(decoder_type="global_rpe_decomp", position_embedding="sine")
ENCODER_DIM_FEEDFORWARD, ENCODER_DROPOUT = 2048, 0.1  # build_transformer leaves the encoder at these defaults


def dinov3_detector_config(backbone: nn.Module, n_windows_sqrt: int, **overrides) -> DetectionHeadConfig:
    """The hub detector's settings for ``backbone`` (a DINOv3 ViT): windows, proposal strides of half to 4 patches,
    the outputs of blocks at 1/4, 2/4, 3/4 and the end of the ViT; ``overrides``: other config fields."""
    config = DetectionHeadConfig(**{**HUB_SETTINGS, "n_windows_sqrt": n_windows_sqrt, **overrides})
    patch = backbone.patch_size
    config.proposal_in_stride = config.proposal_in_stride or patch
    config.proposal_tgt_strides = config.proposal_tgt_strides or [int(m * patch) for m in (0.5, 1, 2, 4)]
    if config.layers_to_use is None:
        config.layers_to_use = [m * backbone.n_blocks // 4 - 1 for m in range(1, 5)]
    return config


def _check_served(config: DetectionHeadConfig) -> None:
    for field, served in _SERVED.items():
        value = getattr(config, field)
        if getattr(value, "value", value) != served:  # an enum: the release's or ours
            raise NotImplementedError(f"{field}={value!r} is not served; only {served!r}")
    if config.proposal_in_stride is None or (config.proposal_feature_levels > 1 and not config.proposal_tgt_strides):
        raise ValueError("set proposal_in_stride (the backbone's patch size) and proposal_tgt_strides")
    if config.layers_to_use is None:
        raise ValueError("set layers_to_use: the backbone blocks to read (indices, or an int for the last ones)")


def build_model(backbone_model: nn.Module, config: DetectionHeadConfig) -> PlainDETR:
    """The release's ``build_model``: the detector on the frozen ``backbone_model``, weights initialised in the
    release's order (the same ``torch.manual_seed`` gives the same head)."""
    _check_served(config)
    backbone: nn.Module = DINOBackbone(backbone_model, config.layers_to_use, config.backbone_use_layernorm)
    if config.n_windows_sqrt > 0:
        n = config.n_windows_sqrt
        backbone = WindowsWrapper(backbone, n_windows_w=n, n_windows_h=n, patch_size=backbone.patch_size)
    backbone = BackboneWithPositionEncoding(backbone, sine_position_encoding(config.hidden_dim))
    layer = GlobalDecoderLayer(
        d_model=config.hidden_dim,
        d_ffn=config.dim_feedforward,
        dropout=config.dropout,
        n_heads=config.nheads,
        norm_type=config.norm_type,
        rpe_hidden_dim=config.decoder_rpe_hidden_dim,
        rpe_type=config.decoder_rpe_type,
        feature_stride=config.proposal_in_stride,
    )
    decoder = GlobalDecoder(
        layer,
        config.dec_layers,
        look_forward_twice=config.look_forward_twice,
        use_checkpoint=config.decoder_use_checkpoint,
        d_model=config.hidden_dim,
        norm_type=config.norm_type,
    )
    transformer = Transformer(
        decoder,
        d_model=config.hidden_dim,
        nhead=config.nheads,
        two_stage_num_proposals=config.num_queries_one2one + config.num_queries_one2many,
        proposal_feature_levels=config.proposal_feature_levels,
        proposal_in_stride=config.proposal_in_stride,
        proposal_tgt_strides=tuple(config.proposal_tgt_strides or ()),
        proposal_min_size=config.proposal_min_size,
        add_transformer_encoder=config.add_transformer_encoder,
        dim_feedforward=ENCODER_DIM_FEEDFORWARD,
        dropout=ENCODER_DROPOUT,
        num_encoder_layers=config.num_encoder_layers,
    )
    return PlainDETR(
        backbone,
        transformer,
        num_classes=config.num_classes,
        aux_loss=config.aux_loss,
        num_queries_one2one=config.num_queries_one2one,
        num_queries_one2many=config.num_queries_one2many,
    )


class DetectorWithProcessor(nn.Module):
    """The hub model: ``[3, H_i, W_i]`` normalised images (or a ``[B, 3, H, W]`` batch) -> per image a dict of the
    ``topk`` ``scores``, ``labels`` (COCO category ids) and ``boxes`` ``[topk, 4]`` (x0, y0, x1, y1 in pixels)."""

    def __init__(self, detector: PlainDETR, postprocessor: PostProcess) -> None:
        super().__init__()
        self.detector = detector
        self.postprocessor = postprocessor

    def forward(self, samples: Sequence[Tensor] | Tensor) -> list[dict[str, Tensor]]:
        outputs = self.detector(samples)
        sizes = torch.tensor([sample.shape[1:] for sample in samples], device=samples[0].device)  # [B, 2] (H, W)
        return self.postprocessor(outputs, target_sizes=sizes, original_target_sizes=sizes)


def backbone_prefix(windows: bool) -> str:
    """The keys of the ViT in a detector's state dict, with ``windows`` (``n_windows_sqrt > 0``) or without; a released
    head file holds every other key."""
    return "backbone.0._backbone.backbone." if windows else "backbone.0.backbone."


_ADVICE = "Pass a head file made for this detector (same backbone, windows, blocks, sizes and numbers of queries)."


def load_detector_weights(detector: PlainDETR, source: HeadSource, what: str = "the detector's head") -> None:
    """Load ``source`` strictly: a head file (every key but the ViT's; ``{"model": ...}`` as released, see
    :mod:`dinov2.heads.head_files`) into the detector but its ViT, or a whole detector into all of it; a mismatch
    raises before anything is copied, listing every difference (the release loads with ``strict=False``)."""
    prefix = backbone_prefix(isinstance(detector.backbone[0], WindowsWrapper))
    head = without_module(detector, prefix.removesuffix("."))
    load_head_state(detector, head, source, backbone_prefix=prefix, what=what, advice=_ADVICE)
