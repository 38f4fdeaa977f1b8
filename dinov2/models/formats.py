"""Key layouts of backbone weights: which layout a read mapping has, and its conversion (pure: no file is opened).

:mod:`dinov2.models.weights` opens the files and tries its table ``LAYOUTS`` of :class:`Layout` entries, built from
the functions here: a whole training state (its teacher), Hugging Face ``transformers`` / timm key names (detected
from the names by :func:`detect_format`, never from a file name; converted strictly by :mod:`dinov2.models.convert`,
DINOv3 ones by :mod:`dinov2.models.convert_dinov3`),
a dense model or head (``decode_head.*``), and the DINOv2 layouts (hub backbone, training export with or without
heads, ``module.`` / ``_orig_mod.`` prefixes, chunked blocks). A training export's *parts* are ``backbone.*`` (hub
layout, flat blocks) and its heads (``dino_head.*``, ``ibot_head.*``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

from torch import Tensor

from dinov2.models.convert import (
    chunked_to_flat,
    from_hf_state_dict,
    from_timm_state_dict,
    strip_prefix,
    to_backbone_state_dict,
)
from dinov2.models.convert_dinov3 import dinov3_peer_kind, from_dinov3_peer

logger = logging.getLogger("dinov2")

__all__ = [
    "PARTS",
    "Layout",
    "WeightsFormat",
    "backbone_of",
    "dense_parts",
    "detect_format",
    "export_parts",
    "is_dense_model",
    "is_peer_layout",
    "is_training_state",
    "peer_to_backbone",
    "training_state_parts",
    "unwrap",
]

WeightsFormat = Literal["dinov2", "timm", "hf"]
PARTS = ("backbone.", "dino_head.", "ibot_head.")  # the parts of a training export
_HF_PREFIXES = ("embeddings.", "encoder.layer.", "dinov2.embeddings.", "dinov2.encoder.layer.")
_WRAPPERS = ("teacher", "model", "state_dict")  # the first one present holds the state dict
_PREFIXES = ("module.", "_orig_mod.")  # DDP / torch.compile
_ROLES = ("teacher.", "student.", "model_ema.")  # keys of a meta-architecture state dict


@dataclasses.dataclass(frozen=True)
class Layout:
    """A key layout: ``to_backbone`` gives the flat hub-layout backbone; ``to_parts`` (optional) every part of a
    training export, ``backbone.*`` (flat) and heads (default: the backbone alone, as ``backbone.*``)."""

    name: str
    matches: Callable[[Mapping[str, Any]], bool]
    to_backbone: Callable[[Mapping[str, Any]], dict[str, Tensor]]
    to_parts: Callable[[Mapping[str, Any]], dict[str, Tensor]] | None = None


def detect_format(state_dict: Mapping[str, Any]) -> WeightsFormat:
    """``"hf"``, ``"timm"`` or ``"dinov2"`` (ours / the released layouts) from the key names of a flat state dict.

    Hugging Face keys start with ``embeddings.`` / ``encoder.layer.``; timm DINOv2 backbones have ``blocks.``
    and ``cls_token`` but never a ``mask_token`` (which every released or trained backbone of ours has), and
    register models name their registers ``reg_token``.
    """
    keys = list(state_dict)
    if any(key.startswith(_HF_PREFIXES) for key in keys):
        return "hf"
    if "reg_token" in state_dict:
        return "timm"
    if "cls_token" in state_dict and "mask_token" not in state_dict and any(k.startswith("blocks.") for k in keys):
        return "timm"
    return "dinov2"


def unwrap(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The state dict inside the first wrapper (``teacher`` / ``model`` / ``state_dict``), prefixes removed."""
    state_dict = next((checkpoint[name] for name in _WRAPPERS if isinstance(checkpoint.get(name), Mapping)), checkpoint)
    for prefix in _PREFIXES:
        state_dict = strip_prefix(state_dict, prefix)
    return dict(state_dict)


def backbone_of(parts: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return strip_prefix(parts, "backbone.", keep_others=False)


def is_training_state(checkpoint: Mapping[str, Any]) -> bool:
    return any(str(key).startswith(_ROLES) for key in unwrap(checkpoint))


def training_state_parts(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The teacher of a meta-architecture state dict (``teacher.backbone.*``, ``teacher.dino_head.*``, ...)."""
    teacher = strip_prefix(unwrap(checkpoint), "teacher.", keep_others=False)
    if not teacher:
        raise ValueError(
            "the weights hold a training state without teacher.* tensors (a distillation run's checkpoint?): "
            "use the run's eval/training_<it>/teacher_checkpoint.pth export instead"
        )
    return export_parts(teacher)


def is_peer_layout(checkpoint: Mapping[str, Any]) -> bool:
    """Hugging Face ``transformers`` or timm key names of a DINOv2 (:func:`detect_format`) or DINOv3 backbone
    (:func:`~dinov2.models.convert_dinov3.dinov3_peer_kind`)."""
    state_dict = to_backbone_state_dict(checkpoint)
    return dinov3_peer_kind(state_dict) is not None or detect_format(state_dict) != "dinov2"


def peer_to_backbone(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """Strictly converted: a key that belongs to no DINOv2 / DINOv3 backbone of the detected format raises, naming
    it. DINOv3 weights come back in the release's layout (:mod:`dinov2.models.convert_dinov3`)."""
    state_dict = to_backbone_state_dict(checkpoint)
    kind = dinov3_peer_kind(state_dict)
    if kind is not None:
        logger.info("reading %s DINOv3 weights", {"hf": "Hugging Face", "timm": "timm"}[kind])
        return from_dinov3_peer(state_dict)
    fmt = detect_format(state_dict)
    logger.info("reading %s weights", {"hf": "Hugging Face", "timm": "timm"}[fmt])
    return from_hf_state_dict(state_dict) if fmt == "hf" else from_timm_state_dict(state_dict)


def is_dense_model(checkpoint: Mapping[str, Any]) -> bool:
    return any(str(key).startswith("decode_head.") for key in unwrap(checkpoint))


def dense_parts(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """A dense model or head (mmcv ``{"state_dict": {"decode_head.*", "backbone.*"}}``): its keys, flat blocks."""
    return chunked_to_flat(unwrap(checkpoint))


def export_parts(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """``{backbone.*, dino_head.*, ibot_head.*}``, flat blocks; a bare backbone (hub file) becomes ``backbone.*``."""
    state_dict = unwrap(checkpoint)
    if not any(str(key).startswith(PARTS) for key in state_dict):
        state_dict = {f"backbone.{key}": value for key, value in state_dict.items()}
    return chunked_to_flat(state_dict)
