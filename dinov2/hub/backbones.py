"""Hub entry points for the released DINOv2 backbones (ViT-S/B/L/g, patch 14, with or without registers)."""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from torch import nn

from dinov2.hub import catalog
from dinov2.hub.utils import load_strict, resolve_weights
from dinov2.models.families import get_family, matching_family
from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.models.weights import WeightsMismatchError, read_backbone_weights
from dinov2.utils.registry import named


class Weights(Enum):
    LVD142M = "LVD142M"


WeightsArg = Weights | str | os.PathLike

REGISTER_SETTINGS = catalog.REGISTER_SETTINGS  # released name


def backbone_weights_source(weights: WeightsArg, arch_name: str, patch_size: int, num_register_tokens: int):
    """URL of the released backbone file for a ``Weights`` value, or the local path given instead."""
    resolved = resolve_weights(weights, Weights)
    if isinstance(resolved, Path):
        return resolved
    return catalog.backbone_url(arch_name, patch_size, num_register_tokens)


def check_family(
    entry: catalog.HubBackbone,
    state_dict: dict,
    source: object,
    argument: str = "weights",
    error: BaseException | None = None,
) -> None:
    """Refuse weights of another registered family than ``entry``'s (a DINOv2 file given to a DINOv3 name...) with
    a :class:`~dinov2.models.weights.WeightsMismatchError` saying what they are and what to pass instead; weights
    that no family recognises are left to the strict load, which lists every difference. Called once weights failed
    to load (or to be read as ``entry``'s family), so a family whose ``matches`` never guesses (its weights look like
    another family's) loads its own weights untouched."""
    family = get_family(entry.family)
    found = None if family.matches(state_dict) else matching_family(state_dict)
    if found is None:
        return
    same = [name for name in catalog.backbone_names() if catalog.get_backbone(name).family == found.name]
    names = (
        f"with a {found.name} hub name ({', '.join(same[:4])}{', ...' if len(same) > 4 else ''}), or " if same else ""
    )
    raise WeightsMismatchError(  # ``error``: what failed first (the strict load's list of differences)
        f"{argument} {str(source)!r} holds {found.name} weights, not the {entry.family} weights that {entry.name} "
        f"is built for (nothing was loaded); use them {names}alone (load_backbone(weights=...), --weights without "
        "--model: their architecture is read from them)"
    ) from error


def build_hub_backbone(
    entry: catalog.HubBackbone,
    kwargs: dict,
    source: str | os.PathLike | None,
    load: Callable[[nn.Module, dict, object, str], None] = load_strict,
) -> nn.Module:
    """The one builder of hub backbones: ``entry``'s family arch with constructor ``kwargs``; the weights at
    ``source`` (read by :func:`~dinov2.models.weights.read_backbone_weights` before the model is built, loaded by
    ``load(model, state_dict, source, name)``), or the family's initialisation when ``source`` is None."""
    family = get_family(entry.family)
    if entry.arch not in family.archs:
        raise ValueError(f"unknown arch_name {entry.arch!r}; valid: {sorted(family.archs)}")
    # fetch (or fail) before spending time on building the model
    state_dict = None if source is None else read_backbone_weights(source, argument="weights")
    model = family.archs[entry.arch](**kwargs)
    if state_dict is not None:  # chunked models get chunked block names from load_strict's fit report
        try:
            load(model, state_dict, source, entry.name)
        except RuntimeError as error:  # WeightsMismatchError, or the release's load_state_dict error
            check_family(entry, state_dict, source, error=error)
            raise
    else:
        family.initialise(model)
    return model


def _build(entry: catalog.HubBackbone, kwargs: dict, pretrained: bool, weights: WeightsArg) -> nn.Module:
    """``entry``'s model with constructor ``kwargs``; weights loaded strictly: the released file when
    ``pretrained``, or a local file / folder given as ``weights`` (loaded whatever ``pretrained`` says)."""
    resolved = resolve_weights(weights, Weights)
    source = None
    if isinstance(resolved, Path):
        source = resolved
    elif pretrained and entry.url is None:
        raise ValueError(f"{entry.name} has no released weights: pass weights=<local file> or pretrained=False")
    elif pretrained:
        source = entry.url(kwargs)
    return build_hub_backbone(entry, kwargs, source)


def make_backbone(name: str, *, pretrained: bool = True, weights: WeightsArg = Weights.LVD142M, **kwargs) -> nn.Module:
    """The hub backbone ``name`` (any family's, :data:`dinov2.hub.catalog.BACKBONES`); ``kwargs`` override its
    constructor arguments (e.g. ``img_size``). Weights as :func:`_make_dinov2_model`."""
    entry = catalog.get_backbone(name)
    return _build(entry, {**entry.kwargs, **kwargs}, pretrained, weights)


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
    name = catalog.model_name(arch_name, patch_size, num_register_tokens)
    entry = catalog.HubBackbone(name, "dinov2_vit", arch_name, vit_kwargs, catalog.dinov2_backbone_url(arch_name))
    return _build(entry, vit_kwargs, pretrained, weights)


def _entry_point(name: str, what: str):
    """The released hub function ``name(*, pretrained=True, weights=Weights.LVD142M, **kwargs)`` of DINOv2 ``what``."""

    def entry_point(*, pretrained: bool = True, weights: WeightsArg = Weights.LVD142M, **kwargs):
        return make_backbone(name, pretrained=pretrained, weights=weights, **kwargs)

    return named(entry_point, name, f"DINOv2 {what}, optionally pretrained on LVD-142M.")


dinov2_vits14 = _entry_point("dinov2_vits14", "ViT-S/14 (21M parameters)")
dinov2_vitb14 = _entry_point("dinov2_vitb14", "ViT-B/14 (86M parameters)")
dinov2_vitl14 = _entry_point("dinov2_vitl14", "ViT-L/14 (300M parameters)")
dinov2_vitg14 = _entry_point("dinov2_vitg14", "ViT-g/14 (1.1B parameters, SwiGLU FFN)")
dinov2_vits14_reg = _entry_point("dinov2_vits14_reg", "ViT-S/14 with 4 registers")
dinov2_vitb14_reg = _entry_point("dinov2_vitb14_reg", "ViT-B/14 with 4 registers")
dinov2_vitl14_reg = _entry_point("dinov2_vitl14_reg", "ViT-L/14 with 4 registers")
dinov2_vitg14_reg = _entry_point("dinov2_vitg14_reg", "ViT-g/14 with 4 registers (SwiGLU FFN)")
