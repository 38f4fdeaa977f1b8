"""Pure ``state_dict -> state_dict`` conversions between checkpoint layouts of the backbone, both ways.

A training checkpoint with ``block_chunks=4`` names its blocks ``blocks.<chunk>.<global index>.…``; hub
backbones (``block_chunks=0``) name them ``blocks.<index>.…``. Training checkpoints also carry prefixes
(``module.`` from DDP, ``backbone.`` inside the meta-architecture, ``_orig_mod.`` from ``torch.compile``).

Peers: timm ``vit_*_patch14[_reg4]_dinov2`` (:func:`to_timm_state_dict`, :func:`from_timm_state_dict`) and Hugging
Face ``Dinov2Model`` / ``Dinov2WithRegistersModel`` (:func:`to_hf_state_dict`, :func:`from_hf_state_dict`,
:func:`export_hf`). Every converter is strict: a key it does not know raises ``ValueError`` naming it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from dinov2.utils.io import atomic_path, atomic_write_text

logger = logging.getLogger("dinov2")

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


def _unknown_keys_error(unknown: list[str], what: str, hint: str) -> ValueError:
    return ValueError(f"{len(unknown)} unknown {what} key(s): {unknown[:8]}. {hint}")


# ------------------------------------------------------------------------------------------------------ timm
_TIMM_TOP = ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias")
_TIMM_BLOCK = re.compile(r"^(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$|^ls[12]\.gamma$")


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


def _is_square(n: int) -> bool:
    return n >= 0 and math.isqrt(n) ** 2 == n


def from_timm_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """timm ``vit_*_patch14[_reg4]_dinov2`` state dict -> ours (hub layout, flat blocks).

    The inverse of :func:`to_timm_state_dict` as far as timm keeps the information: a position table without
    a cls row (``no_embed_class``, register models) gets a zero cls row (timm folded it into ``cls_token``, so
    outputs are the same), and the mask token, which timm does not have, is zero (the released
    initialisation; it only matters for masked training inputs). Packed SwiGLU ``fc1`` (twice the width of
    ``fc2``'s input) becomes ``w12``/``w3``. Any other key (a classifier ``head``, ``fc_norm``) raises.
    """
    out, unknown = {}, []
    for key, value in state_dict.items():
        match = _FLAT_KEY.match(key)
        if key == "reg_token":
            out["register_tokens"] = value
        elif key == "pos_embed" and _is_square(value.shape[1]):  # no cls row: prepend a zero one
            out[key] = torch.cat((value.new_zeros(1, 1, value.shape[-1]), value), dim=1)
        elif key in _TIMM_TOP:
            out[key] = value
        elif match and not match["prefix"] and _TIMM_BLOCK.match(match["rest"]):
            out[key] = value
        else:
            unknown.append(key)
    if unknown:
        hint = "Expected a timm vit_*_patch14[_reg4]_dinov2 backbone (created with num_classes=0)."
        raise _unknown_keys_error(unknown, "timm", hint)
    _rename_packed_swiglu(out)
    if "cls_token" in out:
        out.setdefault("mask_token", out["cls_token"].new_zeros(1, out["cls_token"].shape[-1]))
    return out


def _rename_packed_swiglu(state_dict: dict[str, Tensor]) -> None:
    """In place: ``mlp.fc1``/``fc2`` -> ``mlp.w12``/``w3`` for blocks whose ``fc1`` is twice ``fc2``'s input."""
    for key in [k for k in state_dict if k.endswith(".mlp.fc1.weight")]:
        block = key.removesuffix(".mlp.fc1.weight")
        fc2 = state_dict.get(f"{block}.mlp.fc2.weight")
        if fc2 is None or state_dict[key].shape[0] != 2 * fc2.shape[1]:
            continue  # a plain MLP
        for src, dst in (("fc1", "w12"), ("fc2", "w3")):
            for param in ("weight", "bias"):
                if f"{block}.mlp.{src}.{param}" in state_dict:
                    state_dict[f"{block}.mlp.{dst}.{param}"] = state_dict.pop(f"{block}.mlp.{src}.{param}")


# ------------------------------------------------------------------------------------------- Hugging Face
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
# Per block, our name -> (transformers >= 5 in memory, files / transformers 4). A tuple splits our tensor along
# dim 0 into those parts (fused qkv; SwiGLU w12 in memory). Names not listed are the same on both sides.
_HF_BLOCK = {
    "attn.qkv": (
        ("attention.q_proj", "attention.k_proj", "attention.v_proj"),
        ("attention.attention.query", "attention.attention.key", "attention.attention.value"),
    ),
    "attn.proj": ("attention.o_proj", "attention.output.dense"),
    "mlp.w12": (("mlp.gate_proj", "mlp.up_proj"), "mlp.weights_in"),
    "mlp.w3": ("mlp.down_proj", "mlp.weights_out"),
    "ls1.gamma": ("layer_scale1.lambda1", "layer_scale1.lambda1"),
    "ls2.gamma": ("layer_scale2.lambda1", "layer_scale2.lambda1"),
}
_HF_SAME = ("norm1", "norm2", "mlp.fc1", "mlp.fc2")
# HF name (either naming) -> (our name, part index, number of parts)
_HF_TO_OURS = {
    hf: (ours, i, len(names) if isinstance(names, tuple) else 1)
    for ours, both in _HF_BLOCK.items()
    for names in both
    for i, hf in enumerate(names if isinstance(names, tuple) else (names,))
}
_HF_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.(.+)$")


def _module_and_param(rest: str) -> tuple[str, str]:
    """``attn.qkv.weight`` -> (``attn.qkv``, ``.weight``); ``ls1.gamma`` (a parameter itself) -> (it, "")."""
    if rest in _HF_BLOCK or rest in _HF_TO_OURS:
        return rest, ""
    module, param = rest.rsplit(".", 1)
    return module, "." + param


def to_hf_state_dict(state_dict: Mapping[str, Tensor], file_names: bool = False) -> dict[str, Tensor]:
    """Our (released) backbone state dict -> Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel``.

    ``file_names=False``: the in-memory names of transformers >= 5 (``attention.q_proj`` …, SwiGLU
    ``gate_proj`` / ``up_proj`` / ``down_proj``; fused ``qkv`` and ``w12`` are split). ``file_names=True``: the
    names in ``model.safetensors`` files, which ``from_pretrained`` of transformers 4 and 5 reads
    (``attention.attention.query`` …, ``attention.output.dense``, SwiGLU ``mlp.weights_in`` / ``weights_out``).
    """
    column = 1 if file_names else 0
    out = {}
    for block, rest, value in _split_blocks(state_dict):
        if block is None:
            if rest not in _HF_EMBEDDINGS:
                raise _unknown_keys_error([rest], "backbone", "Pass a backbone state dict (to_backbone_state_dict).")
            out[_HF_EMBEDDINGS[rest]] = value
            continue
        module, param = _module_and_param(rest)
        target = _HF_BLOCK[module][column] if module in _HF_BLOCK else module
        prefix = f"encoder.layer.{block}."
        if isinstance(target, tuple):
            for name, part in zip(target, value.chunk(len(target), dim=0)):
                out[prefix + name + param] = part
        else:
            out[prefix + target + param] = value
    return out


def from_hf_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel`` state dict -> ours (hub layout).

    Reads both namings (files / transformers 4 and transformers >= 5 in memory, see :func:`to_hf_state_dict`)
    and the ``dinov2.`` prefix of the task models' backbone; split parts are concatenated back. A missing
    mask token (``use_mask_token=False``) becomes zeros. Any other key (a classifier, a pooler) raises.
    """
    out, unknown, parts = {}, [], {}
    ours_by_hf = {hf: ours for ours, hf in _HF_EMBEDDINGS.items()}
    for key, value in state_dict.items():
        key = key.removeprefix("dinov2.")
        layer = _HF_LAYER.match(key)
        if key in ours_by_hf:
            out[ours_by_hf[key]] = value
        elif layer is None:
            unknown.append(key)
        else:
            module, param = _module_and_param(layer[2])
            prefix = f"blocks.{layer[1]}."
            if module in _HF_TO_OURS:
                ours, index, count = _HF_TO_OURS[module]
                parts.setdefault((prefix + ours + param, count), {})[index] = value
            elif module in _HF_SAME and param in (".weight", ".bias"):
                out[prefix + module + param] = value
            else:
                unknown.append(key)
    if unknown:
        raise _unknown_keys_error(unknown, "Hugging Face DINOv2", "Expected a Dinov2Model / Dinov2WithRegistersModel.")
    for (name, count), found in parts.items():
        if len(found) != count:
            raise ValueError(f"Hugging Face weights hold {len(found)} of the {count} parts of {name}: file incomplete")
        out[name] = found[0] if count == 1 else torch.cat([found[i] for i in range(count)], dim=0)
    if "cls_token" in out:
        out.setdefault("mask_token", out["cls_token"].new_zeros(1, out["cls_token"].shape[-1]))
    return out


def _hf_mlp_ratio(model: nn.Module, swiglu: bool) -> int:
    """The integer ``mlp_ratio`` from which transformers rebuilds this model's FFN width."""
    from dinov2.layers.swiglu_ffn import swiglu_hidden_features

    mlp, dim = model.blocks[0].mlp, model.embed_dim
    hidden = mlp.w3.in_features if swiglu else mlp.fc1.out_features
    for ratio in range(1, 17):
        if (swiglu_hidden_features(dim * ratio) if swiglu else dim * ratio) == hidden:
            return ratio
    raise ValueError(f"FFN width {hidden} (embed_dim {dim}) is not what transformers builds from an integer mlp_ratio")


def hf_config(model: nn.Module) -> dict:
    """``config.json`` content for ``transformers.Dinov2Model`` / ``Dinov2WithRegistersModel`` of ``model``.

    ``image_size`` is the stored position grid times the patch size (518 for the hub backbones). Raises
    ``ValueError`` for what transformers cannot express (block chunks are flattened first; a non-GELU MLP).
    """
    block = model.blocks[0][-1] if getattr(model, "chunked_blocks", False) else model.blocks[0]
    swiglu = hasattr(block.mlp, "w12")
    if not swiglu and not (isinstance(block.mlp.act, nn.GELU) and block.mlp.act.approximate == "none"):
        raise ValueError(f"transformers' DINOv2 uses exact GELU; this model's MLP uses {block.mlp.act}")
    side = math.isqrt(model.pos_embed.shape[1] - 1)
    registers = model.num_register_tokens
    config = {
        "architectures": ["Dinov2WithRegistersModel" if registers else "Dinov2Model"],
        "model_type": "dinov2_with_registers" if registers else "dinov2",
        "hidden_size": model.embed_dim,
        "num_hidden_layers": model.n_blocks,
        "num_attention_heads": model.num_heads,
        "mlp_ratio": _hf_mlp_ratio(model, swiglu),
        "hidden_act": "gelu",
        "layer_norm_eps": model.norm.eps,
        "image_size": side * model.patch_size,
        "patch_size": model.patch_size,
        "num_channels": model.in_chans,
        "qkv_bias": block.attn.qkv.bias is not None,
        "layerscale_value": float(model.init_values or 1.0),
        "use_swiglu_ffn": swiglu,
        "drop_path_rate": 0.0,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "dtype": str(model.pos_embed.dtype).removeprefix("torch."),
    }
    if registers:
        config["num_register_tokens"] = registers
    else:
        config["use_mask_token"] = True
    return config


def _hf_file_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's weights under the file names of :func:`to_hf_state_dict`, with what transformers always
    has and our model may lack filled in exactly: zero biases (``proj_bias`` / ``ffn_bias`` off), unit
    layer-scale (``init_values`` None)."""
    state = to_hf_state_dict(model.state_dict(), file_names=True)
    dim = model.embed_dim
    for i in range(model.n_blocks):
        prefix = f"encoder.layer.{i}."
        for scale in ("layer_scale1.lambda1", "layer_scale2.lambda1"):
            state.setdefault(prefix + scale, model.pos_embed.new_ones(dim))
        for weight in [k for k in state if k.startswith(prefix) and k.endswith(".weight") and "norm" not in k]:
            bias = weight.removesuffix("weight") + "bias"
            if bias not in state and ".attention.attention." not in weight:  # qkv bias follows config.qkv_bias
                state[bias] = state[weight].new_zeros(state[weight].shape[0])
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in state.items()}


def export_hf(model: nn.Module, out_dir: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` that ``transformers`` ``from_pretrained`` loads.

    ``model`` is a :class:`~dinov2.models.vision_transformer.DinoVisionTransformer`; tensor names are those of
    transformers' files (``encoder.layer.0.attention.attention.key.weight`` …), read by transformers 4 and 5.
    Outputs equal ours at ``image_size`` (the stored grid). At other sizes transformers resizes the position
    table by output size (with antialias for the register model): the same as our register backbones, but
    not as the plain ones, which resize by scale factor with ``interpolate_offset`` 0.1 (a warning says so).
    Returns ``out_dir``. DINOv3 backbones: :func:`dinov2.models.peers_dinov3.export_hf_dinov3`.
    """
    if not hasattr(model, "pos_embed"):  # DINOv3 ViT (RoPE) or ConvNeXt
        raise ValueError(
            f"export_hf writes DINOv2 ViTs; this is a {type(model).__name__}: use "
            "dinov2.models.peers_dinov3.export_hf_dinov3 (transformers DINOv3ViTModel / DINOv3ConvNextModel)"
        )
    config = hf_config(model)
    expected = (0.0, True) if model.num_register_tokens else (0.0, False)
    if (float(model.interpolate_offset), bool(model.interpolate_antialias)) != expected:
        logger.warning(
            "export_hf: transformers resizes position embeddings by output size (antialias=%s); this model uses "
            "interpolate_offset=%s, interpolate_antialias=%s: outputs match at %d px only",
            expected[1],
            model.interpolate_offset,
            model.interpolate_antialias,
            config["image_size"],
        )
    return write_hf_folder(out_dir, _hf_file_state_dict(model), config)


def write_hf_folder(out_dir: str | os.PathLike, state_dict: Mapping[str, Tensor], config: Mapping) -> Path:
    """Write ``model.safetensors`` (``state_dict``: contiguous CPU tensors) and ``config.json`` into ``out_dir``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "model.safetensors") as tmp:  # never a partial file under the final name
        save_file(dict(state_dict), str(tmp), metadata={"format": "pt"})
    atomic_write_text(out_dir / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
    logger.info("wrote a transformers %s to %s", config["architectures"][0], out_dir)
    return out_dir
