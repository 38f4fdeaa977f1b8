"""Hub entry points: released keys/shapes (meta device), torch.hub local loading, weights from files, errors."""

from __future__ import annotations

import pytest
import torch

import hubconf
from dinov2.hub import catalog
from dinov2.hub import utils as hub_utils
from dinov2.hub.backbones import Weights
from dinov2.models.convert import flat_to_chunked
from dinov2.models.vision_transformer import vit_small
from tests.conftest import REPO_ROOT, load_reference

BACKBONES = [
    "dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14",
    "dinov2_vits14_reg", "dinov2_vitb14_reg", "dinov2_vitl14_reg", "dinov2_vitg14_reg",
]  # fmt: skip


def _keys_shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {key: list(value.shape) for key, value in module.state_dict().items()}


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_keys_shapes_and_parameter_count(name):
    reference = load_reference("keys_shapes.json")
    with torch.device("meta"):
        model = getattr(hubconf, name)(pretrained=False)
    assert _keys_shapes(model) == dict(reference["backbones"][name])
    assert sum(p.numel() for p in model.parameters()) == reference["backbone_num_params"][name]


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("layers", [1, 4])
def test_linear_head_keys_shapes(name, layers):
    reference = load_reference("keys_shapes.json")["linear_heads"][name][f"layers_{layers}"]
    with torch.device("meta"):
        classifier = getattr(hubconf, f"{name}_lc")(pretrained=False, layers=layers)
    assert _keys_shapes(classifier.linear_head) == dict(reference)


def test_full_linear_classifier_keys_shapes():
    reference = load_reference("keys_shapes.json")["linear_classifier_example"]
    assert reference["entry_point"] == "dinov2_vits14_lc(pretrained=False, layers=4)"
    with torch.device("meta"):
        classifier = hubconf.dinov2_vits14_lc(pretrained=False, layers=4)
    assert _keys_shapes(classifier) == dict(reference["keys_shapes"])


def test_hub_backbone_settings():
    with torch.device("meta"):
        plain, reg, giant = (
            hubconf.dinov2_vits14(pretrained=False),
            hubconf.dinov2_vits14_reg(pretrained=False),
            (hubconf.dinov2_vitg14(pretrained=False)),
        )
    assert (plain.interpolate_offset, plain.interpolate_antialias, plain.num_register_tokens) == (0.1, False, 0)
    assert (reg.interpolate_offset, reg.interpolate_antialias, reg.num_register_tokens) == (0.0, True, 4)
    assert giant.blocks[0].mlp.w3.in_features == 4096 and not giant.chunked_blocks


def test_torch_hub_load_from_a_local_checkout():
    model = torch.hub.load(str(REPO_ROOT), "dinov2_vits14", source="local", pretrained=False)
    assert model.embed_dim == 384 and model.patch_size == 14 and model.n_blocks == 12
    assert hubconf.dependencies == ["torch"]
    assert all(callable(getattr(hubconf, name)) for name in BACKBONES + [f"{b}_lc" for b in BACKBONES])


def test_offline_download_error_says_how_to_pass_a_local_file(monkeypatch, tmp_path):
    monkeypatch.setattr(catalog, "DINOV2_BASE_URL", "http://127.0.0.1:9/dinov2")  # nothing listens there
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached copy (set_dir would pin the folder for later tests)
    with pytest.raises(RuntimeError, match=r"weights='/path/to/dinov2_vits14_reg4_pretrain.pth'"):
        hubconf.dinov2_vits14_reg()


def test_offline_command_lines_say_which_flag_takes_a_local_file(monkeypatch, tmp_path):
    from dinov2.features.backbone_args import cpu_backbone

    monkeypatch.setattr(catalog, "DINOV2_BASE_URL", "http://127.0.0.1:9/dinov2")  # nothing listens there
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match=r"pass its path instead: --weights /path/to/dinov2_vits14_pretrain.pth$"):
        cpu_backbone("dinov2_vits14")


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    """A ViT-S/14 hub backbone with random weights, saved as a training checkpoint would be (chunked, prefixed)."""
    torch.manual_seed(0)
    source = vit_small(patch_size=14, img_size=518, init_values=1.0, block_chunks=4)
    checkpoint = {"teacher": {f"backbone.{k}": v for k, v in source.state_dict().items()}}
    checkpoint["teacher"]["dino_head.last_layer.weight_g"] = torch.ones(8, 1)
    path = tmp_path_factory.mktemp("weights") / "teacher_checkpoint.pth"
    torch.save(checkpoint, path)
    return path, source


def test_local_training_checkpoint_loads_into_hub_model_and_back(backbone_file):
    path, source = backbone_file
    model = hubconf.dinov2_vits14(weights=str(path))
    for key, value in model.state_dict().items():
        chunk = int(key.split(".")[1]) // 3 if key.startswith("blocks.") else None
        source_key = key if chunk is None else key.replace("blocks.", f"blocks.{chunk}.", 1)
        assert torch.equal(value, source.state_dict()[source_key]), key
    again = vit_small(patch_size=14, img_size=518, init_values=1.0, block_chunks=4)
    again.load_state_dict(flat_to_chunked(model.state_dict(), depth=12, block_chunks=4), strict=True)
    x = torch.randn(1, 3, 56, 70)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_linear_classifier_from_local_head_and_backbone_files(backbone_file, tmp_path):
    path, source = backbone_file
    head = {"weight": torch.randn(10, 5 * 384), "bias": torch.randn(10)}  # layers=4, 10 classes
    torch.save(head, tmp_path / "head.pth")
    classifier = hubconf.dinov2_vits14_lc(weights=tmp_path / "head.pth", backbone_weights=str(path))
    assert torch.equal(classifier.linear_head.weight, head["weight"])
    assert torch.equal(classifier.backbone.norm.weight, source.norm.weight)
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        blocks = classifier.backbone.get_intermediate_layers(x, n=4, return_class_token=True)
        features = torch.cat([cls for _, cls in blocks] + [blocks[-1][0].mean(dim=1)], dim=1)  # [B, 5 * 384]
        torch.testing.assert_close(classifier(x), features @ head["weight"].T + head["bias"])
    torch.save(classifier.state_dict(), tmp_path / "classifier.pth")
    whole = hubconf.dinov2_vits14_lc(weights=str(tmp_path / "classifier.pth"))  # no download: backbone inside
    with torch.no_grad():
        torch.testing.assert_close(whole(x), classifier(x), rtol=0, atol=0)


def test_one_layer_classifier_uses_cls_and_mean_patch_token():
    torch.manual_seed(0)
    classifier = hubconf.dinov2_vits14_lc(pretrained=False, layers=1).eval()
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        features = classifier.backbone.forward_features(x)
        expected = classifier.linear_head(
            torch.cat([features["x_norm_clstoken"], features["x_norm_patchtokens"].mean(dim=1)], dim=1)
        )
        torch.testing.assert_close(classifier(x), expected)


def test_weights_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match=r"unsupported weights 'LVD': pass one of LVD142M"):
        hubconf.dinov2_vits14(weights="LVD")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        hubconf.dinov2_vits14(weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="layers=2"):
        hubconf.dinov2_vits14_lc(pretrained=False, layers=2)
    torch.save({"something": torch.ones(1)}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="neither a linear head"):
        hubconf.dinov2_vits14_lc(weights=str(tmp_path / "odd.pth"))
    assert hub_utils.resolve_weights("LVD142M", Weights) is Weights.LVD142M


def test_released_urls():
    from dinov2.hub.backbones import backbone_weights_source
    from dinov2.hub.classifiers import _head_url

    base = "https://dl.fbaipublicfiles.com/dinov2"
    assert backbone_weights_source(Weights.LVD142M, "vit_giant2", 14, 4) == (
        f"{base}/dinov2_vitg14/dinov2_vitg14_reg4_pretrain.pth"
    )
    assert _head_url("vit_small", 14, 4, 0) == f"{base}/dinov2_vits14/dinov2_vits14_linear4_head.pth"
    assert _head_url("vit_base", 14, 1, 4) == f"{base}/dinov2_vitb14/dinov2_vitb14_reg4_linear_head.pth"


# What the DINOv3 release's hubconf.py exports (facebookresearch/dinov3 at 6876159): every name is served here.
DINOV3_HUBCONF = [
    *(f"dinov3_{arch}" for arch in ("vits16", "vits16plus", "vitb16", "vitl16", "vitl16plus", "vith16plus", "vit7b16")),
    *(f"dinov3_convnext_{size}" for size in ("tiny", "small", "base", "large")),
    "dinov3_vit7b16_lc",
    "dinov3_vit7b16_dd",
    "dinov3_vitl16_chmv2",
    "dinov3_vit7b16_de",
    "dinov3_vitl16_dinotxt_tet1280d20h24l",
    "dinov3_vit7b16_ms",
]


def test_hubconf_serves_every_released_dinov3_entry_point():
    missing = [name for name in DINOV3_HUBCONF if not callable(getattr(hubconf, name, None))]
    assert not missing, f"released DINOv3 hub entry points not in hubconf.py: {missing}"
