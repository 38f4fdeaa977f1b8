"""DINOv3 hub entry points: gated weights, loading a file strictly, hash checks, the ViT-L variant choice."""

from __future__ import annotations

import hashlib

import pytest
import torch

from dinov2.hub import dinov3_backbones
from dinov2.hub.dinov3_backbones import Weights


def test_pretrained_without_weights_explains_the_licence_gate():
    with pytest.raises(ValueError, match="needs weights=.*licence form"):
        dinov3_backbones.dinov3_vits16()
    with pytest.raises(ValueError, match="licence form"):
        dinov3_backbones.dinov3_convnext_tiny()
    with pytest.raises(ValueError, match="SAT493M were not released"):
        dinov3_backbones.dinov3_vitb16(weights=Weights.SAT493M)


def test_weights_file_is_loaded_strictly(tmp_path):
    torch.manual_seed(0)
    source = dinov3_backbones.dinov3_convnext_tiny(pretrained=False)
    path = tmp_path / "dinov3_convnext_tiny_pretrain_lvd1689m.pth"
    torch.save(source.state_dict(), path)
    loaded = dinov3_backbones.dinov3_convnext_tiny(weights=str(path))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))
    vit_path = tmp_path / "other.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 384)}, vit_path)
    with pytest.raises(RuntimeError, match="Missing key"):
        dinov3_backbones.dinov3_vits16(weights=str(vit_path))


def test_check_hash(tmp_path):
    state = dinov3_backbones.dinov3_vits16(pretrained=False).state_dict()
    path = tmp_path / "tmp.pth"
    torch.save(state, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    good = path.rename(tmp_path / f"dinov3_vits16_pretrain_lvd1689m-{digest}.pth")
    dinov3_backbones.dinov3_vits16(weights=str(good), check_hash=True)
    bad = tmp_path / "dinov3_vits16_pretrain_lvd1689m-00000000.pth"
    bad.write_bytes(good.read_bytes())
    with pytest.raises(RuntimeError, match="expected 00000000"):
        dinov3_backbones.dinov3_vits16(weights=str(bad), check_hash=True)


def test_vitl_variant_from_the_file_name():
    with pytest.raises(ValueError, match="SAT-493M"):
        with torch.device("meta"):
            dinov3_backbones.dinov3_vitl16(weights="/nowhere/vitl.pth")
    assert dinov3_backbones.weights_url("vitl16", Weights.SAT493M, "eadcf0ff") == (
        "https://dl.fbaipublicfiles.com/dinov3/dinov3_vitl16/dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"
    )


def test_hubconf_offers_the_eleven_released_dinov3_names():
    import hubconf

    names = [
        "dinov3_vits16", "dinov3_vits16plus", "dinov3_vitb16", "dinov3_vitl16", "dinov3_vitl16plus",
        "dinov3_vith16plus", "dinov3_vit7b16", "dinov3_convnext_tiny", "dinov3_convnext_small",
        "dinov3_convnext_base", "dinov3_convnext_large",
    ]  # fmt: skip
    assert all(callable(getattr(hubconf, name)) for name in names)


def test_the_released_entry_points_and_the_door_build_the_same_model():
    from dinov2.hub.backbones import make_backbone

    with torch.device("meta"):
        for name in ("dinov3_vits16", "dinov3_convnext_tiny"):
            released = getattr(dinov3_backbones, name)(pretrained=False).state_dict()
            door = make_backbone(name, pretrained=False).state_dict()
            assert {k: v.shape for k, v in released.items()} == {k: v.shape for k, v in door.items()}


# ------------------------------------------------------------------------------------------------ dinov3_vit7b16_lc
def test_the_released_dinov3_classifier_entry_point_and_its_gated_files():
    import inspect

    import hubconf
    from dinov2.hub import classifiers

    assert hubconf.dinov3_vit7b16_lc is classifiers.dinov3_vit7b16_lc
    parameters = list(inspect.signature(classifiers.dinov3_vit7b16_lc).parameters)
    assert parameters == ["pretrained", "weights", "backbone_weights", "check_hash", "kwargs"]
    with pytest.raises(ValueError, match="licence form.*dinov3_vit7b16_imagenet1k_linear_head-90d8ed92.pth"):
        classifiers.dinov3_vit7b16_lc()
    with torch.device("meta"):
        model = classifiers.dinov3_vit7b16_lc(pretrained=False)  # ViT-7B/16, random weights, no file
    assert model.linear_head.in_features == 2 * 4096 and model.linear_head.out_features == 1000


def test_a_dinov3_classifier_reads_a_head_file_or_a_whole_classifier(tmp_path):
    from dinov2.hub.classifiers import make_dinov3_linear_classifier

    torch.manual_seed(0)
    backbone = dinov3_backbones.dinov3_vits16(pretrained=False).eval()
    backbone_file = tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"
    torch.save(backbone.state_dict(), backbone_file)
    head = torch.nn.Linear(2 * 384, 7)
    torch.save(head.state_dict(), tmp_path / "head.pth")
    files = dict(weights=tmp_path / "head.pth", backbone_weights=backbone_file)
    model = make_dinov3_linear_classifier("dinov3_vits16", **files)
    images = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        features = backbone.forward_features(images)
        expected = head(torch.cat([features["x_norm_clstoken"], features["x_norm_patchtokens"].mean(dim=1)], dim=1))
        torch.testing.assert_close(model.eval()(images), expected)  # the release's [cls, mean(patches)] input
    torch.save(model.state_dict(), tmp_path / "classifier.pth")  # backbone.* + linear_head.*
    whole = make_dinov3_linear_classifier("dinov3_vits16", weights=str(tmp_path / "classifier.pth"))
    with torch.no_grad():
        torch.testing.assert_close(whole.eval()(images), expected)
    with pytest.raises(RuntimeError, match="expected 0a1b2c3d"):
        torch.save(head.state_dict(), tmp_path / "head-0a1b2c3d.pth")
        make_dinov3_linear_classifier("dinov3_vits16", weights=tmp_path / "head-0a1b2c3d.pth", check_hash=True)
