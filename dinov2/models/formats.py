"""Former home of the Hugging Face / timm / safetensors reader, folded into :mod:`dinov2.models.weights` (the one
module that opens weight files); these names stay importable from here."""

from __future__ import annotations

from dinov2.models.weights import (
    WeightsFormat,
    detect_format,
    is_model_folder,
    load_backbone_state_dict,
    read_weights,
)

__all__ = ["WeightsFormat", "detect_format", "is_model_folder", "load_backbone_state_dict", "read_weights"]
