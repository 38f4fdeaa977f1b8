"""How a backbone's output tokens map to pixels, read from the model itself (for tools that take a bare model):
the pixels per patch token, and the tokens between the class token and the patches (DINOv2 registers, DINOv3
storage tokens). :class:`~dinov2.features.LoadedBackbone` carries the same facts for a backbone from the door."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

__all__ = ["ExtraTokens", "extra_tokens", "token_stride"]


@dataclass(frozen=True)
class ExtraTokens:
    """``count`` tokens after the class token: ``name`` as an output (``register_tokens`` / ``storage_tokens``),
    ``key`` in ``forward_features`` (``x_norm_regtokens`` / ``x_storage_tokens``)."""

    name: str
    key: str
    count: int


def extra_tokens(model: nn.Module) -> ExtraTokens | None:
    """DINOv2 registers (``num_register_tokens``) or DINOv3 storage tokens (``n_storage_tokens``); ``None``
    without (a plain ViT, a ConvNeXt)."""
    registers = int(getattr(model, "num_register_tokens", 0) or 0)
    if registers:
        return ExtraTokens("register_tokens", "x_norm_regtokens", registers)
    storage = int(getattr(model, "n_storage_tokens", 0) or 0)
    return ExtraTokens("storage_tokens", "x_storage_tokens", storage) if storage else None


def token_stride(model: nn.Module, patch_size: int | None = None) -> int:
    """Pixels per patch token of ``x_norm_patchtokens``: ``patch_size`` when given, else ``model.patch_size``."""
    stride = patch_size if patch_size is not None else getattr(model, "patch_size", None)
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(
            f"{type(model).__name__}.patch_size is {stride!r}: pass patch_size= (the pixels per patch token, "
            "load_backbone(...).patch_size; 32 for a DINOv3 ConvNeXt)"
        )
    return stride
