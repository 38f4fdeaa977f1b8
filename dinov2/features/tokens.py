"""How a backbone's output tokens map to pixels, for tools that take a bare model: the pixels per patch token, and
the tokens between the class token and the patches (DINOv2 registers, DINOv3 storage tokens). Both are facts of the
model's family (:func:`dinov2.models.families.family_for_model`); :class:`~dinov2.features.LoadedBackbone` carries
the same facts for a backbone from the door."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dinov2.models.families import family_for_model

__all__ = ["ExtraTokens", "extra_tokens", "token_stride"]


@dataclass(frozen=True)
class ExtraTokens:
    """``count`` tokens after the class token: ``name`` as an output (``register_tokens`` / ``storage_tokens``),
    ``key`` in ``forward_features`` (``x_norm_regtokens`` / ``x_storage_tokens``)."""

    name: str
    key: str
    count: int


def extra_tokens(model: nn.Module) -> ExtraTokens | None:
    """DINOv2 registers or DINOv3 storage tokens of ``model``; ``None`` without (a plain ViT, a ConvNeXt)."""
    family = family_for_model(model)
    count = family.num_extra_tokens(model) - 1  # the family counts the class token too
    return ExtraTokens(*family.extra_tokens, count) if count > 0 else None


def token_stride(model: nn.Module, patch_size: int | None = None) -> int:
    """Pixels per patch token of ``x_norm_patchtokens``: ``patch_size`` when given, else the family's (the model's
    ``patch_size``; 32 for a DINOv3 ConvNeXt without one)."""
    stride = patch_size if patch_size is not None else family_for_model(model).patch_size(model)
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"patch_size={stride!r} for a {type(model).__name__}: pass a positive number of pixels")
    return stride
