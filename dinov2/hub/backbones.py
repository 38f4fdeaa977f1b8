"""Hub entry points for the released DINOv2 backbones (ViT-S/B/L/g, patch 14, with or without registers)."""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

from dinov2.hub import utils
from dinov2.hub.utils import _make_dinov2_model_name, load_strict, resolve_weights
from dinov2.models.vision_transformer import ARCHS, DinoVisionTransformer
from dinov2.models.weights import read_backbone_weights


class Weights(Enum):
    LVD142M = "LVD142M"


WeightsArg = Weights | str | os.PathLike

# What the released `_reg` backbones change (all hub backbones: img 518, patch 14, layer-scale 1.0, no chunks).
REGISTER_SETTINGS = {"num_register_tokens": 4, "interpolate_antialias": True, "interpolate_offset": 0.0}


def backbone_weights_source(weights: WeightsArg, arch_name: str, patch_size: int, num_register_tokens: int):
    """URL of the released backbone file for a ``Weights`` value, or the local path given instead."""
    resolved = resolve_weights(weights, Weights)
    if isinstance(resolved, Path):
        return resolved
    model_base_name = _make_dinov2_model_name(arch_name, patch_size)
    model_full_name = _make_dinov2_model_name(arch_name, patch_size, num_register_tokens)
    return f"{utils._DINOV2_BASE_URL}/{model_base_name}/{model_full_name}_pretrain.pth"


def _make_dinov2_model(
    *,
    arch_name: str = "vit_large",
    img_size: int = 518,
    patch_size: int = 14,
    init_values: float = 1.0,
    ffn_layer: str = "mlp",
    block_chunks: int = 0,
    num_register_tokens: int = 0,
    interpolate_antialias: bool = False,
    interpolate_offset: float = 0.1,
    pretrained: bool = True,
    weights: WeightsArg = Weights.LVD142M,
    **kwargs,
) -> DinoVisionTransformer:
    """Build a hub backbone and load ``weights`` strictly: the released file when ``pretrained``, or a local file /
    folder given as ``weights`` (loaded whatever ``pretrained`` says: ``pretrained=False`` only turns off
    downloads, as for the depth and segmentation entry points).

    Local files may be hub state dicts, training exports or checkpoints (``teacher`` / ``backbone.`` / chunked
    layouts, checkpoint folders, Hugging Face folders, safetensors and timm files: every source
    :mod:`dinov2.models.weights` reads).
    """
    if arch_name not in ARCHS:
        raise ValueError(f"unknown arch_name {arch_name!r}; valid: {sorted(ARCHS)}")
    vit_kwargs = dict(
        img_size=img_size,
        patch_size=patch_size,
        init_values=init_values,
        ffn_layer=ffn_layer,
        block_chunks=block_chunks,
        num_register_tokens=num_register_tokens,
        interpolate_antialias=interpolate_antialias,
        interpolate_offset=interpolate_offset,
    )
    vit_kwargs.update(**kwargs)
    state_dict = source = None
    local = isinstance(resolve_weights(weights, Weights), Path)
    if pretrained or local:  # fetch (or fail) before spending time on building the model
        source = backbone_weights_source(weights, arch_name, patch_size, num_register_tokens)
        state_dict = read_backbone_weights(source, argument="weights")
    model = ARCHS[arch_name](**vit_kwargs)
    if state_dict is not None:  # chunked models get chunked block names from load_strict's fit report
        load_strict(model, state_dict, source, _make_dinov2_model_name(arch_name, patch_size, num_register_tokens))
    return model


def dinov2_vits14(*, pretrained: bool = True, weights: WeightsArg = Weights.LVD142M, **kwargs):
    """DINOv2 ViT-S/14 (21M parameters), optionally pretrained on LVD-142M."""
    return _make_dinov2_model(arch_name="vit_small", pretrained=pretrained, weights=weights, **kwargs)


def dinov2_vitb14(*, pretrained: bool = True, weights: WeightsArg = Weights.LVD142M, **kwargs):
    """DINOv2 ViT-B/14 (86M parameters), optionally pretrained on LVD-142M."""
    return _make_dinov2_model(arch_name="vit_base", pretrained=pretrained, weights=weights, **kwargs)


def dinov2_vitl14(*, pretrained: bool = True, weights: WeightsArg = Weights.LVD142M, **kwargs):
    """DINOv2 ViT-L/14 (300M parameters), optionally pretrained on LVD-142M."""
    return _make_dinov2_model(arch_name="vit_large", pretrained=pretrained, weights=weights, **kwargs)


def dinov2_vitg14(*, pretrained: bool = True, weights: WeightsArg = Weights.LVD142M, **kwargs):
    """DINOv2 ViT-g/14 (1.1B parameters, SwiGLU FFN), optionally pretrained on LVD-142M."""
    return _make_dinov2_model(
        arch_name="vit_giant2", ffn_layer="swiglufused", pretrained=pretrained, weights=weights, **kwargs
    )


def dinov2_vits14_reg(*, pretrained: bool = True, weights: WeightsArg = Weights.LVD142M, **kwargs):
    """DINOv2 ViT-S/14 with 4 registers, optionally pretrained on LVD-142M."""
    return _make_dinov2_model(
        arch_name="vit_small", pretrained=pretrained, weights=weights, **REGISTER_SETTINGS, **kwargs
    )


def dinov2_vitb14_reg(*, pretrained: bool = True, weights: WeightsArg = Weights.LVD142M, **kwargs):
    """DINOv2 ViT-B/14 with 4 registers, optionally pretrained on LVD-142M."""
    return _make_dinov2_model(
        arch_name="vit_base", pretrained=pretrained, weights=weights, **REGISTER_SETTINGS, **kwargs
    )


def dinov2_vitl14_reg(*, pretrained: bool = True, weights: WeightsArg = Weights.LVD142M, **kwargs):
    """DINOv2 ViT-L/14 with 4 registers, optionally pretrained on LVD-142M."""
    return _make_dinov2_model(
        arch_name="vit_large", pretrained=pretrained, weights=weights, **REGISTER_SETTINGS, **kwargs
    )


def dinov2_vitg14_reg(*, pretrained: bool = True, weights: WeightsArg = Weights.LVD142M, **kwargs):
    """DINOv2 ViT-g/14 with 4 registers (SwiGLU FFN), optionally pretrained on LVD-142M."""
    return _make_dinov2_model(
        arch_name="vit_giant2",
        ffn_layer="swiglufused",
        pretrained=pretrained,
        weights=weights,
        **REGISTER_SETTINGS,
        **kwargs,
    )
