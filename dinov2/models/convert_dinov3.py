"""Pure ``state_dict -> state_dict`` conversions between the DINOv3 backbones and their peers, both ways.

Peers: timm ``vit_*_patch16_dinov3[_qkvb]`` (:func:`to_timm_dinov3`, :func:`from_timm_dinov3`) and transformers
``DINOv3ViTModel`` / ``DINOv3ConvNextModel`` (:func:`to_hf_dinov3`, :func:`from_hf_dinov3`); the peer models
themselves (timm arguments, transformers config and folder) are in :mod:`dinov2.models.peers_dinov3`.
Every converter is strict: a key it does not know raises ``ValueError`` naming it.

What the peers do not store comes back in the release's layout: the mask token (zeros, its initial value), the RoPE
``periods`` (recomputed from base 100, as the peers do; the head width is that of the released arch of the same
width unless ``num_heads`` is given), the k third of the qkv bias (zero) with its ``bias_mask``, and ConvNeXt's
second name of the final norm (``norms.3``). The peers drop ``local_cls_norm`` (used on training's local crops only).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from dinov2.models.convert import _FLAT_KEY, _split_blocks, _unknown_keys_error

logger = logging.getLogger("dinov2")

__all__ = [
    "dinov3_peer_kind",
    "from_dinov3_peer",
    "from_hf_dinov3",
    "from_timm_dinov3",
    "to_hf_dinov3",
    "to_timm_dinov3",
]

_PARAMS = ("weight", "bias")
_SAME = ("norm1", "norm2", "attn.proj")
_ROPE_BASE = 100.0  # every released model; timm and transformers recompute the periods from it


# ------------------------------------------------------------------------------------------------ shared
def _block_table(mlp: dict[str, str], renames: dict[str, str]) -> dict[str, str]:
    """Our block key rest -> the peer's, for one MLP kind (``mlp``: our module -> the peer's)."""
    table = {f"{m}.{p}": f"{m}.{p}" for m in _SAME for p in _PARAMS}
    table.update({f"mlp.{ours}.{p}": f"mlp.{peer}.{p}" for ours, peer in mlp.items() for p in _PARAMS})
    return {**table, **renames}


def _num_heads(embed_dim: int, num_heads: int | None) -> int:
    """``num_heads``, or that of the released arch of this width (head width 64 for other widths)."""
    from dinov2.models.vision_transformer_v3 import ARCHS

    if num_heads is not None:
        return num_heads
    released = {dim: heads for dim, _, heads, _ in ARCHS.values()}
    if embed_dim in released:
        return released[embed_dim]
    if embed_dim % 64:
        raise ValueError(f"cannot tell the number of heads of a {embed_dim}-wide ViT: pass num_heads=")
    return embed_dim // 64


def _periods(embed_dim: int, num_heads: int | None, base: float) -> Tensor:
    from dinov2.layers.rope import RopePositionEmbedding

    rope = RopePositionEmbedding(embed_dim, num_heads=_num_heads(embed_dim, num_heads), base=base, dtype=torch.float32)
    return rope.periods


def _check_periods(periods: Tensor, embed_dim: int) -> None:
    """A warning when the stored ``periods`` differ from those the peers recompute (base 100)."""
    expected = _periods(embed_dim, embed_dim // (4 * periods.numel()), _ROPE_BASE)
    error = ((periods.float() - expected).abs() / expected).max().item()
    if error > 1e-6:
        logger.warning(
            "RoPE periods differ from base %s by up to %.2g (relative; bf16 or min/max periods?): timm and "
            "transformers recompute them from the base, so their outputs will differ slightly from ours",
            _ROPE_BASE,
            error,
        )


def _bias_mask(dim: int, like: Tensor) -> Tensor:
    mask = like.new_ones(3 * dim)
    mask[dim : 2 * dim] = 0  # the release's LinearKMaskedBias: k has no bias
    return mask


def _blocks(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[int, dict[str, Tensor]]]:
    top, blocks = {}, {}
    for index, rest, value in _split_blocks(state_dict):
        if index is None:
            top[rest] = value
        else:
            blocks.setdefault(index, {})[rest] = value
    return top, blocks


def _release_qkv_bias(out: dict[str, Tensor], prefix: str, parts: list[Tensor | None], masked: bool) -> None:
    """Our ``attn.qkv.bias`` from the peer's q, k, v parts (None: zeros), and ``bias_mask`` when ``masked``."""
    weight = out[prefix + "attn.qkv.weight"]  # [3D, D]
    dim = weight.shape[1]
    out[prefix + "attn.qkv.bias"] = torch.cat([weight.new_zeros(dim) if t is None else t for t in parts])
    if masked:
        out[prefix + "attn.qkv.bias_mask"] = _bias_mask(dim, weight)


def _rename_block(
    block: Mapping[str, Tensor], tables: Mapping[str, Mapping[str, str]], swiglu_key: str, prefix: str, out: dict
) -> dict[str, Tensor]:
    """Into ``out``: the block's keys that the table of its FFN kind (SwiGLU when ``swiglu_key`` is there) renames,
    under ``prefix``. Returns the other keys (qkv parts, or unknown ones) for the caller."""
    table = tables["swiglu" if swiglu_key in block else "mlp"]
    left = {}
    for rest, value in block.items():
        if rest in table:
            out[prefix + table[rest]] = value
        else:
            left[rest] = value
    return left


def _released_has_qkv_bias(embed_dim: int) -> bool:
    """Every released ViT has a (k-masked) qkv bias but the 7B."""
    from dinov2.models.vision_transformer_v3 import ARCHS

    return embed_dim != ARCHS["vit_7b"][0]


def _finish_vit(out: dict[str, Tensor], num_heads: int | None) -> dict[str, Tensor]:
    """Add what the peers do not store: a zero mask token and the RoPE periods."""
    cls_token = out["cls_token"]
    out.setdefault("mask_token", cls_token.new_zeros(1, cls_token.shape[-1]))
    out["rope_embed.periods"] = _periods(cls_token.shape[-1], num_heads, _ROPE_BASE).to(cls_token.device)
    return out


def _top_level(top: Mapping[str, Tensor], table: Mapping[str, str], peer: str) -> tuple[dict[str, Tensor], list[str]]:
    """Our non-block keys under the peer's names (``table``); periods checked, pretraining-only keys dropped."""
    if any(key.startswith("cls_norm.") for key in top):
        raise ValueError(f"cls_norm.* (untie_cls_and_patch_norms=True): {peer} has no separate CLS norm to hold it")
    out, unknown = {}, []
    for key, value in top.items():
        if key in table:
            out[table[key]] = value
        elif key == "rope_embed.periods":
            _check_periods(value, top["cls_token"].shape[-1])
        elif not key.startswith("local_cls_norm.") and key != "mask_token":
            unknown.append(key)
    return out, unknown


def _effective_biases(blocks: Mapping[int, Mapping[str, Tensor]]) -> dict[int, tuple[Tensor, ...] | None]:
    """Per block, the q, k, v biases as used (times ``bias_mask``), None without a qkv bias."""
    out = {}
    for index, block in blocks.items():
        bias = block.get("attn.qkv.bias")
        if bias is not None and "attn.qkv.bias_mask" in block:
            bias = bias * block["attn.qkv.bias_mask"].to(bias.dtype)
        out[index] = None if bias is None else bias.chunk(3)
    return out


def _qv_bias_used(biases: Mapping[int, tuple[Tensor, ...] | None]) -> bool:
    return any(parts is not None and bool(parts[0].any() or parts[2].any()) for parts in biases.values())


# ------------------------------------------------------------------------------------------------ timm
_TIMM_TOP = {
    "cls_token": "cls_token",
    "storage_tokens": "reg_token",
    "patch_embed.proj.weight": "patch_embed.proj.weight",
    "patch_embed.proj.bias": "patch_embed.proj.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
_TIMM_RENAMES = {"attn.qkv.weight": "attn.qkv.weight", "ls1.gamma": "gamma_1", "ls2.gamma": "gamma_2"}
_TIMM_BLOCK = {
    "mlp": _block_table({"fc1": "fc1", "fc2": "fc2"}, _TIMM_RENAMES),
    "swiglu": _block_table({"w1": "fc1_g", "w2": "fc1_x", "w3": "fc2"}, _TIMM_RENAMES),
}
_QKV_BIAS = ("attn.qkv.bias", "attn.qkv.bias_mask")


def to_timm_dinov3(state_dict: Mapping[str, Tensor], qkv_bias: bool | None = None) -> dict[str, Tensor]:
    """Our DINOv3 ViT state dict -> timm ``vit_*_patch16_dinov3`` (``qkv_bias=False``) or ``_qkvb`` (True).

    timm keeps the q and v biases only (``q_bias``, ``v_bias``) and no mask token. ``qkv_bias=None`` picks
    ``_qkvb`` when a q or v bias is non-zero. A non-zero k bias (no ``mask_k_bias``) or, for ``qkv_bias=False``,
    a non-zero q / v bias raises: timm's model could not reproduce the outputs.
    """
    top, blocks = _blocks(state_dict)
    out, unknown = _top_level(top, _TIMM_TOP, "timm's Eva")
    biases = _effective_biases(blocks)
    if qkv_bias is None:
        qkv_bias = _qv_bias_used(biases)
    for index, block in sorted(blocks.items()):
        prefix = f"blocks.{index}."
        left = _rename_block(block, _TIMM_BLOCK, "mlp.w1.weight", prefix, out)
        unknown += [prefix + rest for rest in left if rest not in _QKV_BIAS]
        parts = biases[index]
        if parts is not None and parts[1].any():
            raise ValueError(f"block {index} has a non-zero k bias: timm's DINOv3 attention has none (q and v only)")
        if qkv_bias:
            dim = block["attn.qkv.weight"].shape[1]
            q, _, v = parts if parts is not None else (block["attn.qkv.weight"].new_zeros(dim),) * 3
            out[prefix + "attn.q_bias"], out[prefix + "attn.v_bias"] = q, v
        elif parts is not None and (parts[0].any() or parts[2].any()):
            raise ValueError(f"block {index} has non-zero q / v biases: use timm's _qkvb model (qkv_bias=True)")
    if unknown:
        raise _unknown_keys_error(unknown, "DINOv3 backbone", "Pass a DINOv3 ViT backbone state dict.")
    return out


def from_timm_dinov3(
    state_dict: Mapping[str, Tensor], *, num_heads: int | None = None, qkv_bias: bool | None = None
) -> dict[str, Tensor]:
    """timm ``vit_*_patch16_dinov3[_qkvb]`` state dict -> ours, in the release's layout.

    ``qkv_bias=None`` gives the release's layout: a k-masked qkv bias (zero where timm has none) for every width but
    the 7B's. ``num_heads`` (for the recomputed RoPE periods) defaults to the released arch of the same width. Any
    other key (a classifier ``head``, ``fc_norm``) raises.
    """
    top_table = {peer: ours for ours, peer in _TIMM_TOP.items()}
    inverse = {kind: {peer: ours for ours, peer in table.items()} for kind, table in _TIMM_BLOCK.items()}
    out, unknown, blocks = {}, [], {}
    for key, value in state_dict.items():
        match = _FLAT_KEY.match(key)
        if key in top_table:
            out[top_table[key]] = value
        elif match and not match["prefix"]:
            blocks.setdefault(int(match["block"]), {})[match["rest"]] = value
        else:
            unknown.append(key)
    if "cls_token" not in out:
        unknown.append("(no cls_token)")
    for index, block in sorted(blocks.items()):
        prefix = f"blocks.{index}."
        left = _rename_block(block, inverse, "mlp.fc1_g.weight", prefix, out)
        unknown += [prefix + rest for rest in left if rest not in ("attn.q_bias", "attn.v_bias")]
        if unknown:
            continue
        has_bias = "attn.q_bias" in block if qkv_bias is None else qkv_bias
        if has_bias or (qkv_bias is None and _released_has_qkv_bias(out["cls_token"].shape[-1])):
            _release_qkv_bias(out, prefix, [block.get("attn.q_bias"), None, block.get("attn.v_bias")], masked=True)
        elif "attn.q_bias" in block:
            raise ValueError(f"timm block {index} has q / v biases: convert with qkv_bias=True (or None)")
    if unknown:
        hint = "Expected a timm vit_*_patch16_dinov3[_qkvb] backbone (created with num_classes=0)."
        raise _unknown_keys_error(unknown, "timm DINOv3", hint)
    return _finish_vit(out, num_heads)


# ------------------------------------------------------------------------------------------------ transformers
_HF_TOP = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "storage_tokens": "embeddings.register_tokens",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.bias",
    "norm.weight": "norm.weight",
    "norm.bias": "norm.bias",
}
_HF_RENAMES = {
    "attn.proj.weight": "attention.o_proj.weight",
    "attn.proj.bias": "attention.o_proj.bias",
    "ls1.gamma": "layer_scale1.lambda1",
    "ls2.gamma": "layer_scale2.lambda1",
}
_HF_BLOCK = {
    "mlp": _block_table({"fc1": "up_proj", "fc2": "down_proj"}, _HF_RENAMES),
    "swiglu": _block_table({"w1": "gate_proj", "w2": "up_proj", "w3": "down_proj"}, _HF_RENAMES),
}
_HF_QKV = ("attention.q_proj", "attention.k_proj", "attention.v_proj")
_HF_LAYER = re.compile(r"^(?:model\.)?layer\.(\d+)\.(.+)$")
# ConvNeXt: stages.<i>.<j>.<module> -> stages.<i>.layers.<j>.<module'>, downsample_layers.<i>.<j> ->
# stages.<i>.downsample_layers.<j>; the final norm is ``layer_norm``.
_CNX_BLOCK = {
    "gamma": "gamma",
    "dwconv": "depthwise_conv",
    "norm": "layer_norm",
    "pwconv1": "pointwise_conv1",
    "pwconv2": "pointwise_conv2",
}
_HF_CNX = re.compile(r"^(?:model\.)?stages\.(\d+)\.(downsample_layers|layers)\.(\d+)\.([a-z_0-9]+)(\.weight|\.bias|)$")


def _is_convnext(state_dict: Mapping[str, Tensor]) -> bool:
    return any(key.startswith("downsample_layers.") for key in state_dict)


def to_hf_dinov3(state_dict: Mapping[str, Tensor], file_names: bool = False) -> dict[str, Tensor]:
    """Our DINOv3 ViT or ConvNeXt state dict -> transformers ``DINOv3ViTModel`` / ``DINOv3ConvNextModel``.

    ``file_names=False``: the in-memory names of transformers >= 5 (``model.layer.<i>.`` / ``model.stages.<i>.``);
    ``True``: the names of the released ``model.safetensors`` files (``layer.<i>.`` / ``stages.<i>.``), which
    transformers 4.56+ and 5 read. The fused qkv is split; the k bias is written only where it is non-zero (then
    the config needs ``key_bias=True``). The mask token becomes ``[1, 1, D]``.
    """
    if _is_convnext(state_dict):
        return _to_hf_convnext(state_dict, file_names)
    top, blocks = _blocks(state_dict)
    out, unknown = _top_level(top, _HF_TOP, "transformers' DINOv3ViTModel")
    dim = top["cls_token"].shape[-1]
    out["embeddings.mask_token"] = out.get("embeddings.mask_token", top["cls_token"].new_zeros(dim)).reshape(1, 1, dim)
    out.setdefault("embeddings.register_tokens", top["cls_token"].new_zeros(1, 0, dim))
    biases = _effective_biases(blocks)
    for index, block in sorted(blocks.items()):
        prefix = f"{'' if file_names else 'model.'}layer.{index}."
        left = _rename_block(block, _HF_BLOCK, "mlp.w1.weight", prefix, out)
        unknown += [f"blocks.{index}.{rest}" for rest in left if rest not in (*_QKV_BIAS, "attn.qkv.weight")]
        if "attn.qkv.weight" not in block:
            raise ValueError(f"blocks.{index}.attn.qkv.weight is missing: not a complete DINOv3 ViT state dict")
        for name, part in zip(_HF_QKV, block["attn.qkv.weight"].chunk(3)):
            out[f"{prefix}{name}.weight"] = part
        for name, part in zip(_HF_QKV, biases[index] or ()):
            if name != "attention.k_proj" or part.any():
                out[f"{prefix}{name}.bias"] = part
    if unknown:
        raise _unknown_keys_error(unknown, "DINOv3 backbone", "Pass a DINOv3 ViT or ConvNeXt backbone state dict.")
    return out


def _hf_blocks(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[int, dict[str, Tensor]], list]:
    """Our non-block keys, the per-layer transformers keys, and the unknown keys of a ``DINOv3ViTModel``."""
    top_table = {peer: ours for ours, peer in _HF_TOP.items()}
    top, blocks, unknown = {}, {}, []
    for key, value in state_dict.items():
        layer = _HF_LAYER.match(key)
        if key in top_table:
            top[top_table[key]] = value
        elif layer:
            blocks.setdefault(int(layer[1]), {})[layer[2]] = value
        elif key != "rope_embeddings.inv_freq":
            unknown.append(key)
    return top, blocks, unknown


def from_hf_dinov3(state_dict: Mapping[str, Tensor], *, num_heads: int | None = None) -> dict[str, Tensor]:
    """transformers ``DINOv3ViTModel`` / ``DINOv3ConvNextModel`` state dict (either naming) -> ours, release layout.

    A ViT without a k bias gets the release's k-masked qkv bias; the RoPE periods come from
    ``rope_embeddings.inv_freq`` when present, else from base 100 with ``num_heads`` (default: the released arch
    of the same width). Any other key (a classifier, a pooler) raises.
    """
    if any(_HF_CNX.match(key) for key in state_dict):
        return _from_hf_convnext(state_dict)
    out, blocks, unknown = _hf_blocks(state_dict)
    inverse = {kind: {peer: ours for ours, peer in table.items()} for kind, table in _HF_BLOCK.items()}
    for index, block in sorted(blocks.items()):
        prefix = f"blocks.{index}."
        qkv = _rename_block(block, inverse, "mlp.gate_proj.weight", prefix, out)
        unknown += [f"layer.{index}.{rest}" for rest in qkv if rest.rpartition(".")[0] not in _HF_QKV]
        weights = [qkv.get(f"{name}.weight") for name in _HF_QKV]
        if any(weight is None for weight in weights):
            unknown.append(f"layer.{index}.attention: q/k/v_proj.weight incomplete")
            continue
        out[prefix + "attn.qkv.weight"] = torch.cat(weights)
        biases = [qkv.get(f"{name}.bias") for name in _HF_QKV]
        if any(bias is not None for bias in biases):
            _release_qkv_bias(out, prefix, biases, masked=biases[1] is None)
    if unknown or "cls_token" not in out:
        hint = "Expected a transformers DINOv3ViTModel or DINOv3ConvNextModel."
        raise _unknown_keys_error(unknown or ["(no embeddings.cls_token)"], "transformers DINOv3", hint)
    out["mask_token"] = out["mask_token"].reshape(1, -1)
    if out.get("storage_tokens") is not None and out["storage_tokens"].shape[1] == 0:
        del out["storage_tokens"]
    out = _finish_vit(out, num_heads)
    if "rope_embeddings.inv_freq" in state_dict:
        out["rope_embed.periods"] = 1 / state_dict["rope_embeddings.inv_freq"]
    return out


def _convnext_rules(to_hf: bool, root: str = "") -> list[tuple[re.Pattern, str]]:
    """``(pattern, replacement)`` key renames between our ConvNeXt and transformers' in the direction asked
    (``root``: ``model.`` for transformers' in-memory names; both are read)."""
    param, peer_stage = r"(\.weight|\.bias|)", r"^(?:model\.)?stages\.(\d+)\."
    pairs = [  # (ours, transformers'), patterns on the left of the direction
        ((r"^norm\.(weight|bias)$", r"norm.\1"), (r"^layer_norm\.(weight|bias)$", r"layer_norm.\1")),
        (
            (r"^downsample_layers\.(\d+)\.(\d+)\.(weight|bias)$", r"downsample_layers.\1.\2.\3"),
            (peer_stage + r"downsample_layers\.(\d+)\.(weight|bias)$", root + r"stages.\1.downsample_layers.\2.\3"),
        ),
        *(
            (
                (rf"^stages\.(\d+)\.(\d+)\.{ours}{param}$", rf"stages.\1.\2.{ours}\3"),
                (rf"{peer_stage}layers\.(\d+)\.{peer}{param}$", rf"{root}stages.\1.layers.\2.{peer}\3"),
            )
            for ours, peer in _CNX_BLOCK.items()
        ),
    ]
    if to_hf:
        return [(re.compile(ours[0]), peer[1]) for ours, peer in pairs]
    return [(re.compile(peer[0]), ours[1]) for ours, peer in pairs]


def _renamed(state_dict: Mapping[str, Tensor], rules: list[tuple[re.Pattern, str]], what: str, hint: str) -> dict:
    """Each key renamed by the first rule whose pattern matches it; a key no rule matches raises."""
    out, unknown = {}, []
    for key, value in state_dict.items():
        rule = next(((pattern, repl) for pattern, repl in rules if pattern.match(key)), None)
        if rule is None:
            unknown.append(key)
        else:
            out[rule[0].sub(rule[1], key)] = value
    if unknown:
        raise _unknown_keys_error(unknown, what, hint)
    return out


def _to_hf_convnext(state_dict: Mapping[str, Tensor], file_names: bool) -> dict[str, Tensor]:
    state_dict = dict(state_dict)
    for param in ("weight", "bias"):  # the release's final norm has two names; transformers keeps one
        second = state_dict.pop(f"norms.3.{param}", None)
        if second is not None and not torch.equal(second, state_dict.get(f"norm.{param}", second.new_empty(0))):
            raise ValueError(f"norms.3.{param} differs from norm.{param}: the release's final norm is one module")
    rules = _convnext_rules(to_hf=True, root="" if file_names else "model.")
    return _renamed(state_dict, rules, "DINOv3 ConvNeXt", "Pass a DINOv3 ConvNeXt backbone state dict.")


def _from_hf_convnext(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    hint = "Expected a DINOv3ConvNextModel."
    out = _renamed(state_dict, _convnext_rules(to_hf=False), "transformers DINOv3 ConvNeXt", hint)
    for param in ("weight", "bias"):
        if f"norm.{param}" in out:
            out[f"norms.3.{param}"] = out[f"norm.{param}"]  # the release's second name of the final norm
    return out


# ------------------------------------------------------------------------------------------------ detection
def dinov3_peer_kind(state_dict: Mapping[str, Tensor]) -> str | None:
    """``"hf"`` / ``"timm"`` for a DINOv3 backbone under transformers' / timm's names, else None.

    transformers' DINOv3 ViT names its patch embedding ``embeddings.patch_embeddings.weight`` (DINOv2:
    ``….projection.weight``) and its ConvNeXt blocks ``stages.<i>.layers.<j>``; timm's DINOv3 ViT has a
    ``cls_token`` but neither a position table (DINOv2's timm models) nor a mask token (ours).
    """
    if "embeddings.patch_embeddings.weight" in state_dict or any(_HF_CNX.match(key) for key in state_dict):
        return "hf"
    blocks = any(key.startswith("blocks.") for key in state_dict)
    if blocks and "cls_token" in state_dict and "pos_embed" not in state_dict and "mask_token" not in state_dict:
        return "timm"
    return None


def from_dinov3_peer(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Ours, strictly converted from a transformers or timm DINOv3 state dict (:func:`dinov3_peer_kind`)."""
    kind = dinov3_peer_kind(state_dict)
    if kind is None:
        raise ValueError(f"not a transformers or timm DINOv3 state dict (first keys: {sorted(state_dict)[:6]})")
    return from_hf_dinov3(state_dict) if kind == "hf" else from_timm_dinov3(state_dict)
