"""DINOv3 <-> timm / transformers: equal outputs at two resolutions, exact round trips, strict keys, weights door."""

from __future__ import annotations

import pytest
import torch

from dinov2.models.convert_dinov3 import (
    dinov3_peer_kind,
    from_hf_dinov3,
    from_timm_dinov3,
    to_hf_dinov3,
    to_timm_dinov3,
)
from dinov2.models.convnext import ConvNeXt
from dinov2.models.peers_dinov3 import export_hf_dinov3, hf_dinov3_config, timm_dinov3_args
from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3
from dinov2.models.weights import read_backbone_weights, read_parts

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

SIZES = [(32, 48), (48, 32)]  # two resolutions, non-square: RoPE's separate normalisation of the two axes
ATOL = 1e-5


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Release-like random weights: init, then noise everywhere but the mask token and the masked k bias."""
    generator = torch.Generator().manual_seed(seed)
    model.init_weights()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name != "mask_token":
                param.add_(0.1 * torch.randn(param.shape, generator=generator))
        for module in model.modules():
            if hasattr(module, "bias_mask"):
                module.bias.mul_(module.bias_mask)  # what the release's checkpoints hold: a zero k bias
    return model.eval()


def _vit(ffn_layer: str, seed: int = 0, **kwargs) -> DinoVisionTransformerV3:
    args = dict(
        embed_dim=64,
        depth=2,
        num_heads=1,  # head width 64, as every released ViT but the 7B: the periods need no num_heads
        n_storage_tokens=4,
        mask_k_bias=True,
        layerscale_init=1e-5,
        norm_layer="layernormbf16",
        ffn_layer=ffn_layer,
        pos_embed_rope_dtype="fp32",
        pos_embed_rope_rescale_coords=2,
    )
    return _perturbed(DinoVisionTransformerV3(**{**args, **kwargs}), seed)


@pytest.fixture(scope="module", params=["mlp", "swiglu"])
def vit(request) -> DinoVisionTransformerV3:
    return _vit(request.param)


@pytest.fixture(scope="module")
def convnext() -> ConvNeXt:
    return _perturbed(ConvNeXt(depths=[1, 1, 2, 1], dims=[8, 16, 24, 32]), seed=1)


def _tokens(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Our ``[cls, storage, patches]`` after the final norm, as the peers return them."""
    out = model.forward_features(x)
    return torch.cat([out["x_norm_clstoken"][:, None], out["x_storage_tokens"], out["x_norm_patchtokens"]], dim=1)


def _assert_same_outputs(ours: torch.nn.Module, peer_tokens, sizes=SIZES) -> None:
    for height, width in sizes:
        x = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(height))
        with torch.no_grad():
            expected, got = _tokens(ours, x), peer_tokens(x)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def _timm_peer(model: DinoVisionTransformerV3, qkv_bias: bool | None = None):
    name, kwargs = timm_dinov3_args(model)
    if qkv_bias is not None:
        name, kwargs = name.removesuffix("_qkvb") + ("_qkvb" if qkv_bias else ""), {**kwargs, "qkv_bias": qkv_bias}
    peer = timm.create_model(name, pretrained=False, **kwargs).eval()
    peer.load_state_dict(to_timm_dinov3(model.state_dict(), qkv_bias=qkv_bias), strict=True)
    return peer


# ------------------------------------------------------------------------------------------------ timm
def test_timm_outputs_equal_ours(vit):
    peer = _timm_peer(vit)
    assert timm_dinov3_args(vit)[0] == "vit_base_patch16_dinov3_qkvb"  # no released size: the kwargs say all
    _assert_same_outputs(vit, peer.forward_features)


def test_timm_round_trip_is_exact(vit):
    ours = vit.state_dict()
    back = from_timm_dinov3(to_timm_dinov3(ours))
    assert back.keys() == ours.keys()
    for key, value in ours.items():
        assert torch.equal(back[key], value), key


def test_timm_without_qkv_bias_gives_the_release_layout():
    model = _vit("mlp", seed=2)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.bias.zero_()  # the distilled B/L/H+ checkpoints: all-zero qkv biases
    assert timm_dinov3_args(model)[0] == "vit_base_patch16_dinov3"
    peer = _timm_peer(model)
    assert not any("q_bias" in key for key in peer.state_dict())
    back = from_timm_dinov3(peer.state_dict())  # no q/v bias in timm: zero bias + k mask, as released
    assert torch.equal(back["blocks.0.attn.qkv.bias_mask"], model.blocks[0].attn.qkv.bias_mask)
    rebuilt = _vit("mlp", seed=3)
    rebuilt.load_state_dict(back, strict=True)
    _assert_same_outputs(rebuilt, peer.forward_features, sizes=SIZES[:1])


def test_timm_refuses_what_it_cannot_express(vit):
    with pytest.raises(ValueError, match="_qkvb"):
        to_timm_dinov3(vit.state_dict(), qkv_bias=False)
    state = dict(vit.state_dict())
    state["blocks.1.attn.qkv.bias_mask"] = torch.ones_like(state["blocks.1.attn.qkv.bias_mask"])
    state["blocks.1.attn.qkv.bias"] = torch.ones_like(state["blocks.1.attn.qkv.bias"])
    with pytest.raises(ValueError, match="block 1 has a non-zero k bias"):
        to_timm_dinov3(state)


def test_timm_unknown_keys_raise_naming_them(vit):
    timm_state = to_timm_dinov3(vit.state_dict())
    with pytest.raises(ValueError, match="head.weight"):
        from_timm_dinov3({**timm_state, "head.weight": torch.zeros(10, 64)})
    with pytest.raises(ValueError, match="blocks.0.attn.extra"):
        to_timm_dinov3({**vit.state_dict(), "blocks.0.attn.extra": torch.zeros(1)})


# ------------------------------------------------------------------------------------------------ transformers
@pytest.fixture(scope="module")
def hf_folder(vit, tmp_path_factory):
    return export_hf_dinov3(vit, tmp_path_factory.mktemp("hf_dinov3"))


def _from_pretrained(cls, folder):
    model, info = cls.from_pretrained(folder, output_loading_info=True)
    assert not any(info.get(kind) for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


def test_hf_export_loads_and_outputs_equal_ours(vit, hf_folder):
    peer = _from_pretrained(transformers.DINOv3ViTModel, hf_folder)
    assert peer.config.num_register_tokens == 4 and peer.config.key_bias is False
    _assert_same_outputs(vit, lambda x: peer(pixel_values=x).last_hidden_state)


def test_hf_round_trips_are_exact_in_both_namings(vit):
    ours = vit.state_dict()
    for file_names in (False, True):
        back = from_hf_dinov3(to_hf_dinov3(ours, file_names=file_names))
        assert back.keys() == ours.keys()
        for key, value in ours.items():
            assert torch.equal(back[key], value), (file_names, key)
    peer = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**_config_args(hf_dinov3_config(vit))))
    peer.load_state_dict(to_hf_dinov3(ours), strict=True)  # transformers' in-memory names, strictly


def _config_args(config: dict) -> dict:
    return {key: value for key, value in config.items() if key not in ("architectures", "model_type", "dtype")}


def test_hf_convnext_outputs_equal_ours_and_round_trip(convnext, tmp_path):
    peer = _from_pretrained(transformers.DINOv3ConvNextModel, export_hf_dinov3(convnext, tmp_path))
    tokens = lambda x: peer(pixel_values=x).last_hidden_state  # noqa: E731
    _assert_same_outputs(convnext, tokens, sizes=[(64, 96), (96, 64)])
    ours = convnext.state_dict()
    for file_names in (False, True):
        back = from_hf_dinov3(to_hf_dinov3(ours, file_names=file_names))
        assert back.keys() == ours.keys() and all(torch.equal(back[k], v) for k, v in ours.items())
    assert from_hf_dinov3(peer.state_dict()).keys() == ours.keys()


def test_hf_unknown_keys_raise_naming_them(vit, convnext):
    with pytest.raises(ValueError, match="pooler.dense.weight"):
        from_hf_dinov3({**to_hf_dinov3(vit.state_dict()), "pooler.dense.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="cls_norm"):
        to_hf_dinov3({**vit.state_dict(), "cls_norm.weight": torch.ones(64)})
    with pytest.raises(ValueError, match="classifier.weight"):
        from_hf_dinov3({**to_hf_dinov3(convnext.state_dict()), "classifier.weight": torch.zeros(1)})


# ------------------------------------------------------------------------------------------------ weights door
def test_peer_kind_tells_dinov3_peers_from_dinov2_and_ours(vit, convnext):
    from dinov2.models.convert import to_hf_state_dict, to_timm_state_dict
    from dinov2.models.vision_transformer import vit_small

    assert dinov3_peer_kind(to_timm_dinov3(vit.state_dict())) == "timm"
    assert dinov3_peer_kind(to_hf_dinov3(vit.state_dict(), file_names=True)) == "hf"
    assert dinov3_peer_kind(to_hf_dinov3(convnext.state_dict())) == "hf"
    with torch.device("meta"):
        dinov2 = vit_small(patch_size=14, img_size=28, num_register_tokens=4).state_dict()
    for state in (
        vit.state_dict(),
        convnext.state_dict(),
        dinov2,
        to_timm_state_dict(dinov2),
        to_hf_state_dict(dinov2),
    ):
        assert dinov3_peer_kind(state) is None


def test_weights_door_reads_hf_folders_and_timm_files(vit, convnext, hf_folder, tmp_path):
    from safetensors.torch import save_file

    ours = vit.state_dict()
    timm_file = tmp_path / "timm_dinov3.safetensors"
    save_file(to_timm_dinov3(ours), str(timm_file))
    cnx_folder = export_hf_dinov3(convnext, tmp_path / "hf_convnext")
    for source, expected in ((hf_folder, ours), (timm_file, ours), (cnx_folder, convnext.state_dict())):
        got = read_backbone_weights(source)
        assert got.keys() == expected.keys(), source
        assert all(torch.equal(got[key], value) for key, value in expected.items()), source
        assert read_parts(source).keys() == {f"backbone.{key}" for key in expected}


def test_dinov2_export_hf_names_the_dinov3_exporter(convnext, tmp_path):
    from dinov2.models.convert import export_hf

    with pytest.raises(ValueError, match="export_hf_dinov3"):
        export_hf(convnext, tmp_path)


def test_load_backbone_builds_dinov3_from_peer_files_and_folders(vit, convnext, hf_folder, tmp_path):
    from safetensors.torch import save_file

    from dinov2.features import load_backbone

    timm_file = tmp_path / "timm_dinov3.safetensors"
    save_file(to_timm_dinov3(vit.state_dict()), str(timm_file))
    cnx_folder = export_hf_dinov3(convnext, tmp_path / "hf_convnext")
    for source, ours, family in ((hf_folder, vit, "dinov3_vit"), (timm_file, vit, "dinov3_vit")):
        loaded = load_backbone(source, device="cpu")
        assert loaded.family == family
        _assert_same_outputs(ours, lambda x: _tokens(loaded.model, x), sizes=SIZES[:1])  # noqa: B023
    loaded = load_backbone(cnx_folder, device="cpu")
    assert loaded.family == "dinov3_convnext"
    _assert_same_outputs(convnext, lambda x: _tokens(loaded.model, x), sizes=[(64, 64)])


def test_hub_name_with_a_timm_file(tmp_path):
    """``load_backbone("dinov3_vits16", weights=<timm file>)``: the released architecture, strictly loaded."""
    from safetensors.torch import save_file

    from dinov2.features import load_backbone
    from dinov2.hub.dinov3_backbones import dinov3_vits16

    torch.manual_seed(0)
    ours = dinov3_vits16(pretrained=False).eval()
    save_file(to_timm_dinov3(ours.state_dict()), str(tmp_path / "vits16.safetensors"))
    assert timm_dinov3_args(ours)[0] == "vit_small_patch16_dinov3"  # initialised: zero qkv biases
    loaded = load_backbone("dinov3_vits16", weights=tmp_path / "vits16.safetensors", device="cpu")
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        torch.testing.assert_close(_tokens(loaded.model, x), _tokens(ours, x), atol=0, rtol=0)


def test_num_heads_sets_the_recomputed_periods():
    model = _vit("mlp", seed=4, num_heads=2)  # head width 32: not what the released archs of this width would say
    ours = model.state_dict()
    for back in (
        from_timm_dinov3(to_timm_dinov3(ours), num_heads=2),
        from_hf_dinov3(to_hf_dinov3(ours), num_heads=2),
    ):
        assert torch.equal(back["rope_embed.periods"], ours["rope_embed.periods"])
