"""Weight locations and loading for the hub entry points.

Released files live under ``https://dl.fbaipublicfiles.com/dinov2`` (URLs: :mod:`dinov2.hub.catalog`). Files are read by
:mod:`dinov2.models.weights` (``weights_only=True``: tensors and plain containers only); a ``weights`` argument may
also name a local file or a trainer checkpoint folder.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from dinov2.hub import catalog
from dinov2.layers.center_padding import CenterPadding  # noqa: F401  (the released import path)
from dinov2.models.weights import load_strict as _load_strict

logger = logging.getLogger("dinov2")

_DINOV2_BASE_URL = catalog.DINOV2_BASE_URL  # released name
_make_dinov2_model_name = catalog.model_name  # released name: ``vit_small``, 14, 4 -> ``dinov2_vits14_reg4``
_HUB_ADVICE = "Pass weights made for this entry point (same architecture, patch size, registers and FFN)."


def resolve_weights(weights: enum.Enum | str | os.PathLike, enum_cls: type[enum.Enum]) -> enum.Enum | Path:
    """A ``weights`` argument as an enum member (released weights) or a local file path."""
    if isinstance(weights, enum_cls):
        return weights
    if isinstance(weights, os.PathLike):
        return Path(weights)
    if isinstance(weights, str):
        if weights in enum_cls.__members__:
            return enum_cls[weights]
        if Path(weights).expanduser().exists() or os.sep in weights or weights.endswith((".pth", ".pt")):
            return Path(weights).expanduser()
    valid = ", ".join(enum_cls.__members__)
    raise ValueError(f"unsupported weights {weights!r}: pass one of {valid} or the path of a local .pth file")


def load_strict(module: nn.Module, state_dict: Mapping, source: object, what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)``, or :class:`~dinov2.models.weights.WeightsMismatchError`
    (a ``RuntimeError``) listing every difference, raised before anything is copied."""
    _load_strict(module, state_dict, source, what, _HUB_ADVICE)


def no_other_kwargs(entry: str, kwargs: dict) -> None:
    """DINOv3's released entry points take ``**kwargs`` and read ``hash`` (a file name suffix, not needed here):
    drop it, and refuse what is left with a ``TypeError`` naming ``entry``."""
    kwargs.pop("hash", None)
    if kwargs:
        raise TypeError(f"{entry} got unexpected keyword arguments {sorted(kwargs)}")
