"""Conversions to timm and Hugging Face DINOv2 models give the same features (when those are installed)."""

from __future__ import annotations

import pytest
import torch

from dinov2.models.convert import to_hf_state_dict, to_timm_state_dict
from dinov2.models.vision_transformer import DinoVisionTransformer

VARIANTS = {
    "plain": dict(num_register_tokens=0, ffn_layer="mlp"),
    "registers": dict(num_register_tokens=4, ffn_layer="mlp", interpolate_antialias=True, interpolate_offset=0.0),
    "swiglu": dict(num_register_tokens=0, ffn_layer="swiglufused"),
}
DIMS = dict(img_size=56, patch_size=14, embed_dim=32, depth=2, num_heads=2, init_values=1.0, block_chunks=0)


def _ours(variant: str) -> DinoVisionTransformer:
    torch.manual_seed(0)
    model = DinoVisionTransformer(**DIMS, **VARIANTS[variant]).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(std=0.3) if param.ndim > 1 else param.add_(torch.randn_like(param) * 0.1)
    return model


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_timm_model_with_converted_weights_gives_our_tokens(variant):
    timm = pytest.importorskip("timm")
    ours = _ours(variant)
    swiglu = variant == "swiglu"
    peer = timm.create_model(
        "vit_giant_patch14_dinov2" if swiglu else "vit_small_patch14_dinov2",
        pretrained=False, img_size=56, embed_dim=32, depth=2, num_heads=2,
        reg_tokens=ours.num_register_tokens, no_embed_class=ours.num_register_tokens > 0,
        **({"mlp_ratio": 2 * 88 / 32} if swiglu else {}),  # timm sizes its packed SwiGLU by ratio: 2 x 88 here
    ).eval()  # fmt: skip
    peer.load_state_dict(to_timm_state_dict(ours.state_dict()), strict=True)
    x = torch.randn(2, 3, 56, 56)  # the stored grid: no position-embedding interpolation involved
    expected = ours.forward_features(x)
    tokens = peer.forward_features(x)  # [B, 1 + R + N, D], normed
    torch.testing.assert_close(tokens[:, 0], expected["x_norm_clstoken"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(tokens[:, 1 + ours.num_register_tokens :], expected["x_norm_patchtokens"],
                               rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_hf_model_with_converted_weights_gives_our_tokens(variant):
    transformers = pytest.importorskip("transformers")
    ours = _ours(variant)
    kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14,
                  layer_norm_eps=1e-6, layerscale_value=1.0, use_swiglu_ffn=variant == "swiglu")  # fmt: skip
    if ours.num_register_tokens:
        peer = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **kwargs)
        )
    else:
        peer = transformers.Dinov2Model(transformers.Dinov2Config(**kwargs))
    converted = to_hf_state_dict(ours.state_dict())
    if set(converted) != set(peer.state_dict()):
        pytest.skip(f"transformers {transformers.__version__} uses other parameter names (converter targets >= 5)")
    peer.load_state_dict(converted, strict=True)
    x = torch.randn(2, 3, 56, 56)
    expected = ours.forward_features(x)
    hidden = peer.eval()(pixel_values=x).last_hidden_state  # [B, 1 + R + N, D], normed
    torch.testing.assert_close(hidden[:, 0], expected["x_norm_clstoken"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hidden[:, 1 + ours.num_register_tokens :], expected["x_norm_patchtokens"],
                               rtol=1e-5, atol=1e-5)  # fmt: skip
