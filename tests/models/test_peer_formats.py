"""Interop with timm and Hugging Face transformers, both ways (when those are installed, as in the bench extra).

At 518 px (the stored 37 x 37 position grid of the hub backbones) conversions are exact both ways; at other sizes
the peers resize the position table by output size with antialias, which our register backbones also do and the
plain ones (scale factor with offset 0.1, no antialias, as released) do not: that difference is asserted too.
"""

from __future__ import annotations

import pytest
import torch

from dinov2.models.convert import (
    export_hf,
    from_hf_state_dict,
    from_timm_state_dict,
    to_hf_state_dict,
    to_timm_state_dict,
)
from dinov2.models.vision_transformer import DinoVisionTransformer

VARIANTS = {
    "plain": dict(num_register_tokens=0, ffn_layer="mlp"),
    "registers": dict(num_register_tokens=4, ffn_layer="mlp", interpolate_antialias=True, interpolate_offset=0.0),
    "swiglu": dict(num_register_tokens=0, ffn_layer="swiglufused"),
}
DIMS = dict(patch_size=14, embed_dim=32, depth=2, num_heads=2, init_values=1.0, block_chunks=0)
TIMM_NAMES = {"plain": "vit_small_patch14_dinov2", "registers": "vit_small_patch14_reg4_dinov2",
              "swiglu": "vit_giant_patch14_dinov2"}  # fmt: skip
TOKEN_TOL = dict(rtol=1e-5, atol=1e-5)  # separate q/k/v (HF) or gate/up matmuls round differently from fused ones


def _ours(variant: str, img_size: int = 56) -> DinoVisionTransformer:
    torch.manual_seed(0)
    model = DinoVisionTransformer(img_size=img_size, **DIMS, **VARIANTS[variant]).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(std=0.3) if param.ndim > 1 else param.add_(torch.randn_like(param) * 0.1)
    return model


def _assert_tokens(hidden: torch.Tensor, ours: DinoVisionTransformer, x: torch.Tensor, **tol) -> None:
    """``hidden`` [B, 1 + R + N, D] normed tokens of a peer equal our cls and patch tokens."""
    expected = ours.forward_features(x)
    torch.testing.assert_close(hidden[:, 0], expected["x_norm_clstoken"], **tol)
    torch.testing.assert_close(hidden[:, 1 + ours.num_register_tokens :], expected["x_norm_patchtokens"], **tol)


def _max_token_gap(hidden: torch.Tensor, ours: DinoVisionTransformer, x: torch.Tensor) -> float:
    expected = ours.forward_features(x)["x_norm_patchtokens"]
    return (hidden[:, 1 + ours.num_register_tokens :] - expected).abs().max().item()


def _timm_model(timm, variant: str, img_size: int, **kwargs):
    extra = {"mlp_ratio": 2 * 88 / 32} if variant == "swiglu" else {}  # timm sizes its packed SwiGLU by ratio
    return timm.create_model(TIMM_NAMES[variant], pretrained=False, img_size=img_size, embed_dim=32, depth=2,
                             num_heads=2, **extra, **kwargs).eval()  # fmt: skip


def _hf_model(transformers, variant: str, img_size: int):
    kwargs = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=img_size, patch_size=14,
                  layer_norm_eps=1e-6, layerscale_value=1.0, use_swiglu_ffn=variant == "swiglu")  # fmt: skip
    if variant == "registers":
        return transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(**kwargs)).eval()
    return transformers.Dinov2Model(transformers.Dinov2Config(**kwargs)).eval()


# --------------------------------------------------------------------------------------------------- timm
@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_timm_model_with_converted_weights_gives_our_tokens(variant):
    timm = pytest.importorskip("timm")
    ours = _ours(variant)
    peer = _timm_model(timm, variant, 56, reg_tokens=ours.num_register_tokens,
                       no_embed_class=ours.num_register_tokens > 0)  # fmt: skip
    peer.load_state_dict(to_timm_state_dict(ours.state_dict()), strict=True)
    x = torch.randn(2, 3, 56, 56)  # the stored grid: no position-embedding interpolation involved
    _assert_tokens(peer.forward_features(x), ours, x, **TOKEN_TOL)


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_timm_round_trips_both_ways_at_518(variant):
    timm = pytest.importorskip("timm")
    peer = _timm_model(timm, variant, 518)
    with torch.no_grad():  # timm initialises some tensors (cls, registers) to zero: make every one distinct
        for param in peer.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    state = from_timm_state_dict(peer.state_dict())
    ours = DinoVisionTransformer(img_size=518, **DIMS, **VARIANTS[variant]).eval()
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 518, 518)
    _assert_tokens(peer.forward_features(x), ours, x, rtol=0, atol=0)  # same kernels: bit-identical tokens
    back = to_timm_state_dict(ours.state_dict())  # timm -> ours -> timm gives the same tensors
    assert back.keys() == peer.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in peer.state_dict().items())
    again = DinoVisionTransformer(img_size=518, **DIMS, **VARIANTS[variant]).eval()  # ours -> timm -> ours
    again.load_state_dict(from_timm_state_dict(back), strict=True)
    assert torch.equal(again.forward_features(x)["x_prenorm"], ours.forward_features(x)["x_prenorm"])


@pytest.mark.parametrize(("variant", "same"), [("plain", False), ("registers", True)])
@torch.no_grad()
def test_timm_position_resize_at_224_matches_only_the_register_backbones(variant, same):
    timm = pytest.importorskip("timm")
    ours = _ours(variant, img_size=518)
    peer = _timm_model(timm, variant, 518, dynamic_img_size=True)
    peer.load_state_dict(to_timm_state_dict(ours.state_dict()), strict=True)
    x = torch.randn(1, 3, 224, 224)
    gap = _max_token_gap(peer.forward_features(x), ours, x)
    assert (gap == 0.0) if same else (gap > 1e-3), gap


# ------------------------------------------------------------------------------------------- Hugging Face
@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_hf_model_with_converted_weights_gives_our_tokens(variant):
    transformers = pytest.importorskip("transformers")
    ours = _ours(variant)
    peer = _hf_model(transformers, variant, 56)
    converted = to_hf_state_dict(ours.state_dict())
    if set(converted) != set(peer.state_dict()):
        pytest.skip(f"transformers {transformers.__version__} uses other parameter names (converter targets >= 5)")
    peer.load_state_dict(converted, strict=True)
    x = torch.randn(2, 3, 56, 56)
    _assert_tokens(peer(pixel_values=x).last_hidden_state, ours, x, **TOKEN_TOL)


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_hf_round_trips_both_ways_at_518(variant, tmp_path):
    transformers = pytest.importorskip("transformers")
    peer = _hf_model(transformers, variant, 518)
    with torch.no_grad():
        for param in peer.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    ours = DinoVisionTransformer(img_size=518, **DIMS, **VARIANTS[variant]).eval()
    ours.load_state_dict(from_hf_state_dict(peer.state_dict()), strict=True)  # HF (in memory) -> ours
    x = torch.randn(1, 3, 518, 518)
    _assert_tokens(peer(pixel_values=x).last_hidden_state, ours, x, **TOKEN_TOL)
    back = to_hf_state_dict(ours.state_dict())  # -> HF again: the same tensors
    assert back.keys() == peer.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in peer.state_dict().items())
    peer.save_pretrained(tmp_path / "saved")  # HF files (transformers' own writer) -> ours
    from dinov2.models.weights import load_backbone_state_dict

    from_files = load_backbone_state_dict(tmp_path / "saved")
    assert all(torch.equal(from_files[k], v) for k, v in ours.state_dict().items())


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_from_pretrained_on_an_export_hf_folder_gives_our_outputs(variant, tmp_path):
    transformers = pytest.importorskip("transformers")
    ours = _ours(variant, img_size=518)
    export_hf(ours, tmp_path / "hf")
    auto = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()  # the config picks the class
    expected_class = "Dinov2WithRegistersModel" if variant == "registers" else "Dinov2Model"
    assert type(auto).__name__ == expected_class
    assert auto.config.image_size == 518 and auto.config.num_hidden_layers == 2
    x = torch.randn(1, 3, 518, 518)
    exact = variant != "swiglu"  # SwiGLU: transformers splits w12 into two matmuls
    _assert_tokens(auto(pixel_values=x).last_hidden_state, ours, x, **(dict(rtol=0, atol=0) if exact else TOKEN_TOL))
    reread = DinoVisionTransformer(img_size=518, **DIMS, **VARIANTS[variant])
    from dinov2.models.weights import load_backbone_state_dict

    reread.load_state_dict(load_backbone_state_dict(tmp_path / "hf"), strict=True)  # and back: the same tensors
    assert all(torch.equal(reread.state_dict()[k], v) for k, v in ours.state_dict().items())


@pytest.mark.parametrize(("variant", "same"), [("plain", False), ("registers", True)])
@torch.no_grad()
def test_hf_position_resize_at_224_matches_only_the_register_backbones(variant, same, tmp_path):
    transformers = pytest.importorskip("transformers")
    ours = _ours(variant, img_size=518)
    export_hf(ours, tmp_path)
    peer = transformers.AutoModel.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 3, 224, 224)
    gap = _max_token_gap(peer(pixel_values=x).last_hidden_state, ours, x)
    assert (gap < 1e-5) if same else (gap > 1e-3), gap


@pytest.mark.parametrize("variant", ["plain", "registers"])
@torch.no_grad()
def test_timms_own_route_reads_a_released_layout_file(variant, tmp_path):
    """``pretrained_cfg_overlay=dict(file=...)`` runs timm's ``checkpoint_filter_fn`` on a released-layout file."""
    timm = pytest.importorskip("timm")
    ours = _ours(variant, img_size=518)
    torch.save(ours.state_dict(), tmp_path / "backbone.pth")
    peer = timm.create_model(TIMM_NAMES[variant], pretrained=True, img_size=518, embed_dim=32, depth=2, num_heads=2,
                             pretrained_cfg_overlay=dict(file=str(tmp_path / "backbone.pth"))).eval()  # fmt: skip
    x = torch.randn(1, 3, 518, 518)
    _assert_tokens(peer.forward_features(x), ours, x, rtol=0, atol=0)
