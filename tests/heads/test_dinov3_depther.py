"""DINOv3's depther (``dinov2.heads.depth.depther``) and its hub entry points ``dinov3_vit7b16_dd`` /
``dinov3_vitl16_chmv2``: equal to the release (numbers kept in ``dinov3_depther_release.json``, printed from the
release by ``scripts/check_dinov3_depther.py``, which also shows bit-identical outputs and seeded initialisations),
released files gated, every weights layout loaded strictly."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from dinov2.heads.depth import depther as dd
from dinov2.heads.depth.dpt import DPTDecoder, ReassembleBlocks
from dinov2.hub import depthers as hub
from dinov2.hub import dinov3_backbones
from dinov2.layers.center_padding import CenterPadding, StretchToMultiple
from dinov2.models.weights import WeightsMismatchError
from scripts import check_dinov3_depther as check
from tests.heads.release_numbers import assert_like_release

RELEASE = json.loads((Path(__file__).parent / "dinov3_depther_release.json").read_text())


@pytest.mark.parametrize("name", sorted(check.CASES))
def test_small_depthers_give_the_released_depth_maps(name):
    with torch.no_grad():
        output = check.our_depther(name)(check.case_input(name))
    assert_like_release(output, RELEASE["cases"][name])


def test_the_hub_depthers_are_the_released_models():
    ours = check.hub_summary({name: getattr(hub, name) for name in RELEASE["hub"]})
    assert ours == RELEASE["hub"]  # decoder keys and shapes in order, sizes, whole-model keys, taps, depth bins


def test_the_hub_entry_points_have_the_released_signatures_and_gated_files():
    import hubconf

    assert hubconf.dinov3_vit7b16_dd is hub.dinov3_vit7b16_dd and hubconf.dinov3_vitl16_chmv2 is hub.dinov3_vitl16_chmv2
    assert list(inspect.signature(hub.dinov3_vit7b16_dd).parameters) == [
        "pretrained", "weights", "backbone_weights", "check_hash", "autocast_dtype", "kwargs"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="licence form.*dinov3_vit7b16_synthmix_dpt_head-02040be1.pth"):
        hub.dinov3_vit7b16_dd()
    with pytest.raises(ValueError, match="licence form.*dinov3_vitl16_chmv2_dpt_head-3703d643.pth"):
        hub.dinov3_vitl16_chmv2()
    with pytest.raises(ValueError, match="not released for it; use DepthWeights.CHMV2"):
        hub.dinov3_vitl16_chmv2(weights="SYNTHMIX")
    with pytest.raises(ValueError, match="'dinov3_vitx16' is not a DINOv3 hub ViT; valid: dinov3_vits16"):
        hub.make_dinov3_depther("dinov3_vitx16", hub.chmv2_config(), hub.DepthWeights.CHMV2, pretrained=False)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['depth_range'\]"):
        hub.dinov3_vit7b16_dd(pretrained=False, depth_range=(0, 1))
    with torch.device("meta"):
        model = hub.dinov3_vit7b16_dd(pretrained=False, hash="02040be1")  # the release's file-name suffix argument
    assert isinstance(model, dd.Depther) and not any(p.requires_grad for p in model.encoder.backbone.parameters())


def _small_depther(tmp_path: Path, **files):
    """``make_dinov3_depther`` on a ViT-S/16 with a small DPT decoder (the dd settings otherwise)."""
    config = hub.dinov3_dpt_depther_config("dinov3_vit7b16")
    config.backbone_out_layers, config.n_output_channels = [2, 5, 8, 11], 16
    config.head_kwargs = dict(channels=16, post_process_channels=[8, 16, 32, 64])
    return hub.make_dinov3_depther("dinov3_vits16", config, hub.DepthWeights.SYNTHMIX, **files)


def test_a_decoder_file_an_evaluation_checkpoint_or_a_whole_depther_loads_strictly(tmp_path):
    torch.manual_seed(0)
    backbone_file = tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"  # the released file name
    torch.save(dinov3_backbones.dinov3_vits16(pretrained=False).state_dict(), backbone_file)
    model = _small_depther(tmp_path, pretrained=False).eval()
    for p in model.decoder.parameters():
        torch.nn.init.normal_(p, std=0.1)
    torch.save(model.decoder.state_dict(), tmp_path / "decoder.pth")  # the released head layout
    torch.save({"model": {f"module.{k}": v for k, v in model.decoder.state_dict().items()}}, tmp_path / "ckpt.pth")
    model.encoder.backbone.load_state_dict(torch.load(backbone_file, weights_only=True))
    torch.save(model.state_dict(), tmp_path / "whole.pth")
    image = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        expected = model(image)
    assert expected.shape == (1, 1, 64, 64)  # 32 ceil(h / 2) x 32 ceil(w / 2) on the padded 3 x 4 grid, as released
    for name in ("decoder.pth", "ckpt.pth"):
        loaded = _small_depther(tmp_path, weights=str(tmp_path / name), backbone_weights=str(backbone_file))
        with torch.no_grad():
            assert torch.equal(loaded.eval()(image), expected), name
    whole = _small_depther(tmp_path, weights=tmp_path / "whole.pth")  # no backbone_weights needed
    with torch.no_grad():
        assert torch.equal(whole.eval()(image), expected)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(WeightsMismatchError, match="missing key"):
        _small_depther(tmp_path, weights=tmp_path / "other.pth", pretrained=False)
    torch.save(model.decoder.state_dict(), tmp_path / "decoder-0a1b2c3d.pth")
    with pytest.raises(RuntimeError, match="expected 0a1b2c3d"):
        _small_depther(tmp_path, weights=tmp_path / "decoder-0a1b2c3d.pth", pretrained=False, check_hash=True)


def test_features_to_depth_bins_and_normalisations():
    logits = torch.tensor([-1.0, 2.0, 0.5, 0.0]).reshape(1, 4, 1, 1)
    linear = dd.FeaturesToDepth(1.0, 4.0)
    probs = torch.tensor([0.1, 2.1, 0.6, 0.1]) / 2.9
    assert_close(linear(logits).flatten(), (probs * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().reshape(1))
    assert_close(dd.FeaturesToDepth(1.0, 8.0, "log").bins(4), torch.tensor([1.0, 2.0, 4.0, 8.0]))
    bins = dd.create_chmv2_mixlog_bins(0.001, 96.0, 5, None)  # log at the near end, linear at the far end
    assert_close(bins[[0, -1]], torch.tensor([0.001, 12.0]))  # up to max_depth / 8
    chm = dd.FeaturesToDepth(0.001, 96.0, "chmv2_mixlog", "chmv2_mixlog")
    one_hot = torch.zeros(1, 5, 1, 1)
    one_hot[0, 4] = 1.0
    assert_close(chm(one_hot).flatten(), torch.tensor([96.0]), rtol=1e-4, atol=0)  # the far bin, times 8
    assert_close(linear(torch.tensor([[[[-2.0]]]])), torch.tensor([[[[1.0]]]]))  # one channel: relu + min_depth
    with pytest.raises(ValueError, match="bins_strategy must be one of linear, log, chmv2_mixlog"):
        dd.FeaturesToDepth(bins_strategy="cubic")
    with pytest.raises(ValueError, match="norm_strategy"):
        dd.FeaturesToDepth(norm_strategy="argmax")


def test_taps_as_released():
    assert dd.backbone_out_indices(12, "FOUR_EVEN_INTERVALS") == [2, 5, 8, 11]
    assert dd.backbone_out_indices(24, dd.BackboneLayersSet.FOUR_EVEN_INTERVALS) == [4, 11, 17, 23]  # as released
    assert dd.backbone_out_indices(40, dd.BackboneLayersSet.FOUR_EVEN_INTERVALS) == [9, 19, 29, 39]
    assert dd.backbone_out_indices(32, dd.BackboneLayersSet.FOUR_LAST) == [28, 29, 30, 31]
    assert dd.backbone_out_indices(32, dd.BackboneLayersSet.LAST) == [31]
    with pytest.raises(ValueError, match=r"do not fit a backbone of 12 blocks"):
        dd.backbone_out_indices(12, [3, 12])


def test_the_encoder_fits_images_to_the_backbone():
    from dinov2.models.convnext import ConvNeXt

    convnext = ConvNeXt(depths=[1, 1, 1, 1], dims=[8, 16, 24, 32])
    encoder = dd.DinoVisionTransformerWrapper(convnext, [0, 1, 2, 3])
    assert isinstance(encoder.patch_size_adapter, CenterPadding) and encoder.patch_size_adapter.multiple == 4
    assert encoder.embed_dims == [8, 16, 24, 32]  # the stages' widths
    stretch = StretchToMultiple(16)
    assert stretch(torch.zeros(2, 3, 30, 50)).shape == (2, 3, 32, 64)
    same = torch.randn(1, 3, 32, 16)
    assert stretch(same) is same
    with pytest.raises(ValueError, match="'sideways' is not a valid PatchSizeAdaptationStrategy"):
        dd.DinoVisionTransformerWrapper(convnext, "LAST", adapt_to_patch_size="sideways")


def test_readouts_and_refused_settings():
    torch.manual_seed(0)
    patch, cls = torch.randn(2, 8, 3, 4), torch.randn(2, 8)
    add = ReassembleBlocks(8, [4, 4, 4, 4], readout_type="add")
    ignore = ReassembleBlocks(8, [4, 4, 4, 4], readout_type="ignore")
    ignore.load_state_dict(add.state_dict())
    assert_close(add([(patch, cls)] * 4)[2], ignore([(patch + cls[:, :, None, None], cls)] * 4)[2])
    with pytest.raises(ValueError, match="readout_type must be one of ignore, add, project"):
        ReassembleBlocks(8, [4, 4, 4, 4], readout_type="concat")
    with pytest.raises(ValueError, match="expand_channels=True is not supported"):
        DPTDecoder(expand_channels=True)
    with pytest.raises(ValueError, match="head_type must be one of linear, dpt"):
        dd.make_head([8] * 4, 16, head_type="mlp")


def test_autocast_follows_autocast_dtype_and_the_decoder_trains():
    name = "dpt_bn_linear_bins"
    image = check.case_input(name)
    plain, bf16 = check.our_depther(name), check.our_depther(name, torch.bfloat16)
    with torch.no_grad():
        expected = plain.features_to_depth(plain.decoder(plain.encoder(image)))  # no autocast for float32
        assert torch.equal(plain(image), expected)
        low = bf16(image)
    assert not torch.equal(low, expected) and (low - expected).abs().max() < 0.05 * expected.abs().max()
    plain.train()
    plain(image).mean().backward()
    assert all(p.grad is not None for p in plain.decoder.parameters())
    assert all(p.grad is None for p in plain.encoder.backbone.parameters())  # frozen, as released
