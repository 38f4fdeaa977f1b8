"""Backbone weights in any supported format -> our backbone state dict (hub layout), detecting the format.

One entry point, :func:`load_backbone_state_dict`, for every weight loader. It takes

- a **folder**: a Hugging Face model folder (``config.json`` + ``model.safetensors``, a sharded
  ``model.safetensors.index.json``, or ``pytorch_model.bin``) holding ``transformers`` DINOv2 weights, or a
  timm model folder (the same files with timm names, as timm's own hub folders are laid out);
- a **file**: ``.safetensors`` (our names, Hugging Face names or timm names) or a ``torch.save`` file (``.pth``,
  ``.pt``, ``.bin``: a released hub backbone, a teacher export ``{"teacher": ...}``, a training state, a timm
  or Hugging Face ``pytorch_model.bin``), always read with ``weights_only=True``;
- an already **loaded state dict** (e.g. fetched from a URL by the caller).

The format is read from the tensor names (:func:`detect_format`), never from the file name. Conversions are
strict: a key that does not belong to a DINOv2 backbone of that format raises ``ValueError`` naming it. Our own
layouts (wrappers, prefixes, chunked blocks) go through :func:`dinov2.models.convert.to_backbone_state_dict`,
and the caller's ``load_state_dict(strict=True)`` checks them against the model.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from dinov2.models.convert import from_hf_state_dict, from_timm_state_dict, to_backbone_state_dict

logger = logging.getLogger("dinov2")

__all__ = ["WeightsFormat", "detect_format", "is_model_folder", "load_backbone_state_dict", "read_weights"]

WeightsFormat = Literal["dinov2", "timm", "hf"]
# Weight files of a model folder, in order of preference (Hugging Face and timm hub folders use these names).
_FOLDER_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
_HF_PREFIXES = ("embeddings.", "encoder.layer.", "dinov2.embeddings.", "dinov2.encoder.layer.")
_HF_MODEL_TYPES = ("dinov2", "dinov2_with_registers")


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


def is_model_folder(path: Path) -> bool:
    """A Hugging Face / timm model folder: one of ``model.safetensors``, its sharded index, ``pytorch_model.bin``."""
    return path.is_dir() and any((path / name).is_file() for name in _FOLDER_FILES)


def _load_file(path: Path) -> dict[str, Any]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_sharded(index_path: Path) -> dict[str, Tensor]:
    """Every tensor of a sharded ``*.index.json`` (``{"weight_map": {name: shard file}}``)."""
    weight_map = json.loads(index_path.read_text()).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index_path} has no 'weight_map': not a sharded weights index")
    state_dict: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        state_dict.update(_load_file(index_path.parent / shard))
    return state_dict


def _check_folder_config(folder: Path) -> None:
    """A ``config.json`` naming another model type is a clear error (timm folders name an ``architecture``)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        return
    config = json.loads(config_path.read_text())
    model_type = config.get("model_type")
    if model_type is not None and model_type not in _HF_MODEL_TYPES:
        raise ValueError(
            f"{config_path} describes a {model_type!r} model, not DINOv2 (model_type {' or '.join(_HF_MODEL_TYPES)})"
        )


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """The raw contents of a weights file or model folder (no conversion), loaded on the CPU."""
    path = Path(path).expanduser()
    if path.is_dir():
        _check_folder_config(path)
        for name in _FOLDER_FILES:
            if (path / name).is_file():
                return _load_sharded(path / name) if name.endswith(".index.json") else _load_file(path / name)
        raise FileNotFoundError(
            f"weights folder {path} holds none of {', '.join(_FOLDER_FILES)}: pass a Hugging Face or timm model "
            "folder, or the weights file itself"
        )
    if not path.is_file():
        raise FileNotFoundError(f"weights {path} do not exist: pass a weights file or a model folder")
    return _load_file(path)


def load_backbone_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Tensor]:
    """Our backbone state dict (hub layout: flat ``blocks.<i>``) from weights in any supported format.

    ``source``: a model folder, a weights file (see the module docstring) or a loaded state dict / checkpoint.
    Load the result with ``model.load_state_dict(state_dict, strict=True)`` (chunked models: first
    :func:`dinov2.models.convert.flat_to_chunked`). Raises ``FileNotFoundError`` for a missing file or an empty
    folder and ``ValueError`` for keys that belong to no DINOv2 backbone of the detected format.
    """
    checkpoint = read_weights(source) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"weights {source!r} hold a {type(checkpoint).__name__}, not a state dict")
    state_dict = to_backbone_state_dict(checkpoint)  # unwraps our layouts; peers' flat dicts pass unchanged
    fmt = detect_format(state_dict)
    what = source if isinstance(source, (str, os.PathLike)) else "the given state dict"
    logger.info("reading %s weights from %s", {"hf": "Hugging Face", "timm": "timm", "dinov2": "DINOv2"}[fmt], what)
    if fmt == "hf":
        return from_hf_state_dict(state_dict)
    if fmt == "timm":
        return from_timm_state_dict(state_dict)
    return dict(state_dict)
