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


def _split_blocks(state_dict: Mapping[str, Tensor]):
    """Yield ``(block index or None, rest of key, value)`` for a flat backbone state dict."""
    for key, value in chunked_to_flat(state_dict).items():
        match = _FLAT_KEY.match(key)
        if match and not match["prefix"]:
            yield int(match["block"]), match["rest"], value
        else:
            yield None, key, value


def to_timm_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our (released) backbone state dict -> timm ``vit_*_patch14[_reg4]_dinov2`` names.

    timm has no mask token; its register models keep cls out of the position table (``no_embed_class``), so
    the cls position embedding is folded into ``cls_token`` there. SwiGLU ``w12`` / ``w3`` become ``fc1`` /
    ``fc2`` (timm's packed SwiGLU gates with the first half, like ours).
    """
    out = {}
    state_dict = chunked_to_flat(state_dict)
    registers = "register_tokens" in state_dict
    for key, value in state_dict.items():
        if key == "mask_token":
            continue
        if registers and key == "cls_token":
            value = value + state_dict["pos_embed"][:, :1]
        elif registers and key == "pos_embed":
            value = value[:, 1:]
        elif key == "register_tokens":
            key = "reg_token"
        key = re.sub(r"\.mlp\.w12\.", ".mlp.fc1.", re.sub(r"\.mlp\.w3\.", ".mlp.fc2.", key))
        out[key] = value
    return out


_HF_EMBEDDINGS = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "pos_embed": "embeddings.position_embeddings",
    "register_tokens": "embeddings.register_tokens",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_HF_BLOCK = {
    "attn.proj": "attention.o_proj",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
    "mlp.w3": "mlp.down_proj",
}


def to_hf_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our (released) backbone state dict -> Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel``.

    Names of transformers >= 5 (``q_proj`` / ``k_proj`` / ``v_proj`` / ``o_proj``; SwiGLU ``gate_proj`` /
    ``up_proj`` / ``down_proj``): the fused ``qkv`` and ``w12`` weights are split into their parts.
    """
    out = {}
    for block, rest, value in _split_blocks(state_dict):
        if block is None:
            out[_HF_EMBEDDINGS[rest]] = value
            continue
        prefix = f"encoder.layer.{block}."
        name, param = rest.rsplit(".", 1)
        if name == "attn.qkv":
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{prefix}attention.{part}.{param}"] = chunk
        elif name == "mlp.w12":
            for part, chunk in zip(("gate_proj", "up_proj"), value.chunk(2, dim=0)):
                out[f"{prefix}mlp.{part}.{param}"] = chunk
        elif rest in _HF_BLOCK:  # ls gammas have no ".weight"
            out[prefix + _HF_BLOCK[rest]] = value
        else:
            out[f"{prefix}{_HF_BLOCK.get(name, name)}.{param}"] = value
    return out
