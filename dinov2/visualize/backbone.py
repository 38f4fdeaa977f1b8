"""The backbone of a picture command: a hub backbone by name, or the teacher of a training config, through the
backbone door (:func:`dinov2.features.load_backbone`; flags in :mod:`dinov2.features.backbone_args`)."""

from __future__ import annotations

from dinov2.features.backbone_args import BACKBONE_NOTE, add_backbone_args, backbone_from_args
from dinov2.features.backbone_args import cpu_backbone as load_backbone
from dinov2.hub import catalog

__all__ = ["BACKBONE_NAMES", "BACKBONE_NOTE", "add_backbone_args", "backbone_from_args", "load_backbone"]


BACKBONE_NAMES = catalog.backbone_names()  # the names at import; --model reads them again when parsing
