"""Weight locations and loading for the hub entry points.

Released files live under ``https://dl.fbaipublicfiles.com/dinov2``. Every file is loaded with
``weights_only=True`` (tensors and plain containers only); a ``weights`` argument may also name a local file.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import urllib.error
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger("dinov2")

_DINOV2_BASE_URL = "https://dl.fbaipublicfiles.com/dinov2"


def _make_dinov2_model_name(arch_name: str, patch_size: int, num_register_tokens: int = 0) -> str:
    """``vit_small``, 14, 4 -> ``dinov2_vits14_reg4`` (the released file naming)."""
    compact_arch_name = arch_name.replace("_", "")[:4]
    registers_suffix = f"_reg{num_register_tokens}" if num_register_tokens else ""
    return f"dinov2_{compact_arch_name}{patch_size}{registers_suffix}"


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


def fetch_state_dict(source: str | Path) -> dict:
    """Load a checkpoint from a URL (cached by ``torch.hub``) or a local file, with ``weights_only=True``."""
    if isinstance(source, Path):
        if not source.is_file():
            raise FileNotFoundError(f"weights file {source} does not exist")
        return torch.load(source, map_location="cpu", weights_only=True)
    try:
        return torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True)
    except (urllib.error.URLError, OSError) as err:
        filename = source.rsplit("/", 1)[-1]
        raise RuntimeError(
            f"could not download {source} ({err}). Without network access, fetch the file on another machine "
            f"and pass its path instead: weights='/path/to/{filename}'"
        ) from err


def load_strict(module: nn.Module, state_dict: dict, source: object, what: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with an error that names the file and the model."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"weights from {source} do not fit {what}: {err}") from err
    logger.info("loaded %s weights from %s", what, source)


class CenterPadding(nn.Module):
    """Zero-pad the last two dimensions up to a multiple of ``multiple`` (the released ``CenterPadding``).

    The padding is split as ``left = total // 2``, ``right = total - left`` (the odd pixel goes right/bottom).
    Deviation: the release runs ``forward`` under ``torch.inference_mode()``, so nothing padded by it can be
    trained; here it is an ordinary differentiable op (same values).
    """

    def __init__(self, multiple: int):
        super().__init__()
        self.multiple = multiple

    def _get_pad(self, size: int) -> tuple[int, int]:
        new_size = math.ceil(size / self.multiple) * self.multiple
        pad_size = new_size - size
        pad_size_left = pad_size // 2
        return pad_size_left, pad_size - pad_size_left

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.pad takes (left, right) pairs from the last dimension backwards: width first, then height.
        pads = [*self._get_pad(x.shape[-1]), *self._get_pad(x.shape[-2])]
        return F.pad(x, pads)
