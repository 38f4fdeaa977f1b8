"""The peer models of our DINOv3 backbones: timm's ``create_model`` arguments, transformers' ``config.json``, and a
transformers model folder (``export_hf_dinov3``). The state-dict conversions are :mod:`dinov2.models.convert_dinov3`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from torch import Tensor, nn

from dinov2.models.convert import write_hf_folder
from dinov2.models.convert_dinov3 import _blocks, _effective_biases, _qv_bias_used, to_hf_dinov3

__all__ = ["export_hf_dinov3", "hf_dinov3_config", "timm_dinov3_args"]

# (width, SwiGLU) of the released ViTs -> timm's size name; timm has no L+ and no 7B with q/v biases.
_TIMM_SIZES = {
    (384, False): "small",
    (384, True): "small_plus",
    (768, False): "base",
    (1024, False): "large",
    (1280, True): "huge_plus",
    (4096, True): "7b",
}
_TIMM_NAMES = {f"vit_{size}_patch16_dinov3{tail}" for size in _TIMM_SIZES.values() for tail in ("", "_qkvb")} - {
    "vit_7b_patch16_dinov3_qkvb"
}


def timm_dinov3_args(model: nn.Module) -> tuple[str, dict]:
    """``(name, kwargs)`` for ``timm.create_model(name, **kwargs)`` building the peer of our DINOv3 ViT ``model``.

    CLS pooling (``global_pool='token'``, as released) and no classifier; pass ``pretrained=False`` for no download.
    """
    block = model.blocks[0]
    swiglu = hasattr(block.mlp, "w1")
    hidden = block.mlp.w1.out_features if swiglu else block.mlp.fc1.out_features
    qkv_bias = _qv_bias_used(_effective_biases(_blocks(model.state_dict())[1]))
    kwargs = dict(
        patch_size=model.patch_size,
        in_chans=model.patch_embed.in_chans,
        embed_dim=model.embed_dim,
        depth=model.n_blocks,
        num_heads=model.num_heads,
        mlp_ratio=hidden / model.embed_dim,
        swiglu_mlp=swiglu,
        swiglu_align_to=8 if swiglu else 0,
        qkv_bias=qkv_bias,
        num_reg_tokens=model.n_storage_tokens,
        norm_layer=partial(nn.LayerNorm, eps=model.norm.eps),
        init_values=1.0 if hasattr(block.ls1, "gamma") else None,
        global_pool="token",
        num_classes=0,
    )
    size = _TIMM_SIZES.get((model.embed_dim, swiglu), "base")  # a released size's name; the kwargs decide anyway
    name = f"vit_{size}_patch16_dinov3" + ("_qkvb" if qkv_bias else "")
    return (name if name in _TIMM_NAMES else "vit_base_patch16_dinov3" + ("_qkvb" if qkv_bias else "")), kwargs


_AUGMENTATIONS = ("shift", "jitter", "rescale")


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def _hf_vit_config(model: nn.Module, state: Mapping[str, Tensor]) -> dict:
    block, rope = model.blocks[0], model.rope_embed
    if not isinstance(model.norm, nn.LayerNorm):
        raise ValueError(f"transformers' DINOv3ViTModel uses LayerNorm; this model uses {type(model.norm).__name__}")
    if rope.base is None:
        raise ValueError(
            "transformers' DINOv3ViTModel computes RoPE periods from a base; this model uses min/max periods"
        )
    swiglu = hasattr(block.mlp, "w1")
    hidden = block.mlp.w1.out_features if swiglu else block.mlp.fc1.out_features
    layer = "layer.0.attention."
    return {
        "architectures": ["DINOv3ViTModel"],
        "model_type": "dinov3_vit",
        "hidden_size": model.embed_dim,
        "num_hidden_layers": model.n_blocks,
        "num_attention_heads": model.num_heads,
        "intermediate_size": hidden,
        "hidden_act": "silu" if swiglu else "gelu",
        "use_gated_mlp": swiglu,
        "layer_norm_eps": model.norm.eps,
        "layerscale_value": 1.0,
        "image_size": 224,
        "patch_size": model.patch_size,
        "num_channels": model.patch_embed.in_chans,
        "num_register_tokens": model.n_storage_tokens,
        "rope_theta": float(rope.base),
        **{f"pos_embed_{name}": _float_or_none(getattr(rope, f"{name}_coords")) for name in _AUGMENTATIONS},
        "query_bias": f"{layer}q_proj.bias" in state,
        "key_bias": f"{layer}k_proj.bias" in state,
        "value_bias": f"{layer}v_proj.bias" in state,
        "proj_bias": f"{layer}o_proj.bias" in state,
        "mlp_bias": "layer.0.mlp.up_proj.bias" in state,
        "drop_path_rate": 0.0,
        "attention_dropout": 0.0,
        "dtype": str(model.cls_token.dtype).removeprefix("torch."),
    }


def hf_dinov3_config(model: nn.Module) -> dict:
    """``config.json`` content for transformers ``DINOv3ViTModel`` / ``DINOv3ConvNextModel`` of ``model``."""
    from dinov2.models.convnext import ConvNeXt

    if not isinstance(model, ConvNeXt):
        return _hf_vit_config(model, to_hf_dinov3(model.state_dict(), file_names=True))
    block = model.stages[0][0]
    return {
        "architectures": ["DINOv3ConvNextModel"],
        "model_type": "dinov3_convnext",
        "hidden_sizes": list(model.embed_dims),
        "depths": [len(stage) for stage in model.stages],
        "num_channels": model.downsample_layers[0][0].in_channels,
        "hidden_act": "gelu",
        "layer_norm_eps": model.norm.eps,
        "layer_scale_init_value": float(block.layer_scale_init_value) if block.gamma is not None else 0.0,
        "drop_path_rate": 0.0,
        "image_size": 224,
        "dtype": str(model.norm.weight.dtype).removeprefix("torch."),
    }


def _hf_file_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's weights under transformers' file names, with a unit layer scale where the model has none."""
    state = to_hf_dinov3(model.state_dict(), file_names=True)
    for index in range(len(getattr(model, "blocks", ()))):
        for name in ("layer_scale1.lambda1", "layer_scale2.lambda1"):
            state.setdefault(f"layer.{index}.{name}", model.cls_token.new_ones(model.embed_dim))
    return {key: value.detach().to("cpu", copy=True).contiguous() for key, value in state.items()}


def export_hf_dinov3(model: nn.Module, out_dir: str | os.PathLike) -> Path:
    """Write ``config.json`` and ``model.safetensors`` that transformers' ``from_pretrained`` loads as
    ``DINOv3ViTModel`` / ``DINOv3ConvNextModel``; the outputs equal ours at every size (eval mode). Returns ``out_dir``.
    """
    return write_hf_folder(out_dir, _hf_file_state_dict(model), hf_dinov3_config(model))
