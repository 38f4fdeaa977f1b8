"""State-dict keys, shapes and sizes of the 11 released DINOv3 backbones (built on the meta device, no weights)."""

from __future__ import annotations

import pytest
import torch

from dinov2.hub import dinov3_backbones
from dinov2.hub.dinov3_backbones import Weights
from dinov2.models import convnext, vision_transformer_v3

# name -> (parameters, state-dict keys, embed_dim, mlp kind or None for ConvNeXt), counted on the release's models.
RELEASED = {
    "dinov3_vits16": (21_601_152, 188, 384, "mlp"),
    "dinov3_vits16plus": (28_697_472, 212, 384, "swiglu"),
    "dinov3_vitb16": (85_669_632, 188, 768, "mlp"),
    "dinov3_vitl16": (303_154_176, 368, 1024, "mlp"),
    "dinov3_vitl16plus": (403_915_776, 416, 1024, "swiglu"),
    "dinov3_vith16plus": (840_633_600, 552, 1280, "swiglu"),
    "dinov3_vit7b16": (6_716_043_264, 610, 4096, "swiglu"),
    "dinov3_convnext_tiny": (27_820_128, 182, 768, None),
    "dinov3_convnext_small": (49_500_000, 344, 768, None),
    "dinov3_convnext_base": (87_600_000, 344, 1024, None),
    "dinov3_convnext_large": (196_200_000, 344, 1536, None),
}
SWIGLU_HIDDEN = {384: 1536, 1024: 4096, 1280: 5120, 4096: 8192}


def _build(name: str, **kwargs):
    with torch.device("meta"):
        return getattr(dinov3_backbones, name)(pretrained=False, **kwargs)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_keys_and_shapes(name):
    params, n_keys, dim, mlp = RELEASED[name]
    model = _build(name)
    state = model.state_dict()
    assert len(state) == n_keys
    total = sum(p.numel() for p in model.parameters())
    if name.startswith("dinov3_convnext") and name != "dinov3_convnext_tiny":
        assert round(total / 1e5) == params // 100_000  # the sheet gives these to 0.1M
    else:
        assert total == params
    if mlp is None:
        assert state["norm.weight"].shape == state["norms.3.weight"].shape == (dim,)
        assert model.norms[3] is model.norm
        return
    heads = model.num_heads
    assert state["cls_token"].shape == (1, 1, dim)
    assert state["storage_tokens"].shape == (1, 4, dim)
    assert state["mask_token"].shape == (1, dim)
    assert state["patch_embed.proj.weight"].shape == (dim, 3, 16, 16)
    assert state["rope_embed.periods"].shape == (dim // heads // 4,)
    assert state["blocks.0.attn.qkv.weight"].shape == (3 * dim, dim)
    is_7b = name == "dinov3_vit7b16"
    assert ("blocks.0.attn.qkv.bias_mask" in state) == (not is_7b)
    assert ("blocks.0.attn.qkv.bias" in state) == (not is_7b)
    assert ("local_cls_norm.weight" in state) == is_7b
    assert not any(key.startswith("cls_norm.") for key in state)
    if mlp == "mlp":
        assert state["blocks.0.mlp.fc1.weight"].shape == (4 * dim, dim)
    else:
        hidden = SWIGLU_HIDDEN[dim]
        assert state["blocks.0.mlp.w1.weight"].shape == state["blocks.0.mlp.w2.weight"].shape == (hidden, dim)
        assert state["blocks.0.mlp.w3.weight"].shape == (dim, hidden)


def test_sat_vitl_has_local_cls_norm():
    state = _build("dinov3_vitl16", weights=Weights.SAT493M).state_dict()
    assert len(state) == 370 and "local_cls_norm.bias" in state


def test_arch_functions_and_student_builders():
    student = {"arch": "vit_small", "patch_size": 16, "n_storage_tokens": 4, "layerscale": 1e-5}
    student |= {"mask_k_bias": True, "norm_layer": "layernormbf16", "pos_embed_rope_rescale_coords": 2}
    with torch.device("meta"):
        built = vision_transformer_v3.build_from_student_cfg(student, img_size=224)
        hub = _build("dinov3_vits16")
        conv = convnext.build_from_student_cfg({"arch": "convnext_tiny", "patch_size": 16}, img_size=224)
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in hub.state_dict().items()}
    assert built.rope_embed.periods.dtype == torch.bfloat16  # the release's training builder keeps the bf16 default
    assert conv.patch_size == 16 and len(conv.state_dict()) == 182
    with pytest.raises(ValueError, match="student.arch"):
        vision_transformer_v3.build_from_student_cfg({"arch": "vit_tiny"})
    with pytest.raises(ValueError, match="student.arch"):
        convnext.build_from_student_cfg({"arch": "convnext_huge"})
