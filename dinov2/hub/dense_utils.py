"""Weights of the dense hub models (depthers, segmentors): where a head comes from, and strict loading.

Released head files are mmcv checkpoints: ``{"state_dict": {"decode_head.<...>": tensor}, ...}``. A file may
also be a bare state dict with the same keys, or a whole model (``backbone.*`` + ``decode_head.*``). Files are
read by :mod:`dinov2.models.weights` (``weights_only=True``; its "dense model or head" layout); what is specific
to heads (the mmcv ``meta``, strict loading into the decode head) is here.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from dinov2.hub.utils import load_strict
from dinov2.models.weights import read_checkpoint

logger = logging.getLogger("dinov2")

__all__ = [
    "HeadSource",
    "resolve_head_source",
    "read_dense_checkpoint",
    "read_dense_state_dict",
    "load_dense_state_dict",
]

HeadSource = enum.Enum | Path | str  # released weights | local file | URL


def resolve_head_source(weights: enum.Enum | str | os.PathLike, enum_cls: type[enum.Enum]) -> HeadSource:
    """A ``weights`` argument as an ``enum_cls`` member (released, case-insensitive name), a URL or a local path."""
    if isinstance(weights, enum_cls):
        return weights
    if isinstance(weights, os.PathLike):
        return Path(weights).expanduser()
    if isinstance(weights, str):
        if weights.upper() in enum_cls.__members__:
            return enum_cls[weights.upper()]
        if urlparse(weights).scheme in ("http", "https", "file"):
            return weights
        if Path(weights).expanduser().exists() or os.sep in weights or weights.endswith((".pth", ".pt")):
            return Path(weights).expanduser()
    valid = ", ".join(enum_cls.__members__)
    raise ValueError(f"unsupported weights {weights!r}: pass one of {valid}, the path of a local .pth file or a URL")


def read_dense_checkpoint(source: Path | str) -> tuple[dict[str, torch.Tensor], dict]:
    """``(state dict, meta)`` of a head file: ``{"state_dict": ..., "meta": {...}}`` (mmcv layout; the probes add
    e.g. ``depth_range`` to ``meta``) or a bare state dict (meta ``{}``). Read with ``weights_only=True``."""
    checkpoint = read_checkpoint(source, argument="weights")
    state_dict = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state_dict, Mapping) or not any(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(
            f"{source} holds no tensors at the top level or under 'state_dict' (keys: {sorted(checkpoint)[:8]}); "
            "expected a released head file ({'state_dict': {'decode_head.*': ...}}) or a state dict"
        )
    meta = checkpoint.get("meta") if "state_dict" in checkpoint else None
    return dict(state_dict), dict(meta) if isinstance(meta, Mapping) else {}


def read_dense_state_dict(source: Path | str) -> dict[str, torch.Tensor]:
    """The state dict of a head file (``{"state_dict": ...}`` unwrapped), read with ``weights_only=True``."""
    return read_dense_checkpoint(source)[0]


def load_dense_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: object, what: str) -> None:
    """Load ``decode_head.*`` keys into ``model.decode_head`` (or, when ``backbone.*`` keys come too, the whole
    model) strictly; any other key is an error naming it."""
    other = sorted(k for k in state_dict if not k.startswith(("decode_head.", "backbone.")))
    if other or not any(k.startswith("decode_head.") for k in state_dict):
        raise RuntimeError(
            f"weights from {source} do not fit {what}: expected keys 'decode_head.*' (and optionally 'backbone.*'), "
            f"found {other[:8] or sorted(state_dict)[:8]}"
        )
    if any(k.startswith("backbone.") for k in state_dict):
        logger.info("%s holds backbone weights too: loading the whole model from it", source)
        load_strict(model, dict(state_dict), source, what)
        return
    expected = {f"decode_head.{k}" for k in model.decode_head.state_dict()}
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise RuntimeError(
            f"weights from {source} do not fit {what}: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}"
        )
    head_state = {k.removeprefix("decode_head."): v for k, v in state_dict.items()}
    load_strict(model.decode_head, head_state, source, f"the decode head of {what}")
