"""Pure ``state_dict -> state_dict`` conversions between checkpoint layouts of the backbone.

A training checkpoint with ``block_chunks=4`` names its blocks ``blocks.<chunk>.<global index>.…``; hub
backbones (``block_chunks=0``) name them ``blocks.<index>.…``. Training checkpoints also carry prefixes
(``module.`` from DDP, ``backbone.`` inside the meta-architecture, ``_orig_mod.`` from ``torch.compile``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

_CHUNKED_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)blocks\.(?P<chunk>\d+)\.(?P<block>\d+)\.(?P<rest>.+)$")
_FLAT_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)blocks\.(?P<block>\d+)\.(?P<rest>[^\d].*)$")
# Wrappers around a state dict in saved files: teacher exports, trainer checkpoints, other tools.
_CHECKPOINT_KEYS = ("teacher", "model", "state_dict")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str, keep_others: bool = True) -> dict[str, Tensor]:
    """Remove ``prefix`` from the keys starting with it; keep other keys unless ``keep_others`` is False."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            out[key[len(prefix) :]] = value
        elif keep_others:
            out[key] = value
    return out


def is_chunked(state_dict: Mapping[str, Tensor]) -> bool:
    """True when block keys read ``blocks.<chunk>.<index>.…``."""
    return any(_CHUNKED_KEY.match(key) for key in state_dict)


def chunked_to_flat(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``blocks.<chunk>.<index>.rest`` -> ``blocks.<index>.rest`` (any key prefix is kept); others unchanged."""
    out = {}
    for key, value in state_dict.items():
        match = _CHUNKED_KEY.match(key)
        if match:
            key = f"{match['prefix']}blocks.{match['block']}.{match['rest']}"
            if key in out:
                raise ValueError(f"block key {key!r} appears in two chunks: not a valid chunked state dict")
        out[key] = value
    return out


def flat_to_chunked(state_dict: Mapping[str, Tensor], depth: int, block_chunks: int) -> dict[str, Tensor]:
    """``blocks.<i>.rest`` -> ``blocks.<i // chunk_size>.<i>.rest``, ``chunk_size = depth // block_chunks``.

    Matches the layout of ``DinoVisionTransformer(depth=depth, block_chunks=block_chunks)``; with
    ``block_chunks=0`` the dict is returned unchanged (as a new dict).
    """
    if block_chunks <= 0:
        return dict(state_dict)
    chunk_size = depth // block_chunks
    if chunk_size == 0:
        raise ValueError(f"block_chunks={block_chunks} exceeds depth={depth}")
    if is_chunked(state_dict):
        raise ValueError("state dict is already chunked (keys blocks.<chunk>.<index>.…); use chunked_to_flat first")
    out = {}
    for key, value in state_dict.items():
        match = _FLAT_KEY.match(key)
        if match:
            index = int(match["block"])
            if index >= depth:
                raise ValueError(f"key {key!r} names block {index} but depth={depth}")
            key = f"{match['prefix']}blocks.{index // chunk_size}.{index}.{match['rest']}"
        out[key] = value
    return out


def to_backbone_state_dict(checkpoint: Mapping[str, object]) -> dict[str, Tensor]:
    """A hub-layout backbone state dict from any of the usual checkpoint layouts.

    Accepts a plain backbone state dict, ``{"teacher": …}`` / ``{"model": …}`` / ``{"state_dict": …}``
    wrappers, ``module.`` / ``_orig_mod.`` prefixes, the meta-architecture's ``backbone.`` prefix (other
    sub-modules such as ``dino_head.`` are then dropped) and chunked block names.
    """
    state_dict = checkpoint
    for name in _CHECKPOINT_KEYS:
        if name in state_dict and isinstance(state_dict[name], Mapping):
            state_dict = state_dict[name]
            break
    for prefix in _WRAPPER_PREFIXES:
        state_dict = strip_prefix(state_dict, prefix)
    if any(key.startswith("backbone.") for key in state_dict):
        state_dict = strip_prefix(state_dict, "backbone.", keep_others=False)
    return chunked_to_flat(state_dict)
