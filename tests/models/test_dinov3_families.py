"""The DINOv3 families on the model-family seam: config sections, weights without a config, hub names, the door."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from dinov2.features import load_backbone
from dinov2.hub import catalog
from dinov2.hub.backbones import make_backbone
from dinov2.models import build_model, family_for_arch, family_for_student
from dinov2.models.families import family_for_weights, get_family

DINOV3_NAMES = [name for name in catalog.backbone_names() if name.startswith("dinov3_")]


def test_the_eleven_released_names_are_in_the_catalogue():
    assert len(DINOV3_NAMES) == 11
    assert {catalog.get_backbone(name).family for name in DINOV3_NAMES} == {"dinov3_vit", "dinov3_convnext"}


@pytest.mark.parametrize(
    ("section", "family"),
    [
        ({"arch": "vit_large"}, "dinov2_vit"),
        ({"arch": "vit_large", "n_storage_tokens": 4}, "dinov3_vit"),
        ({"arch": "vit_large", "pos_embed_rope_base": 100.0}, "dinov3_vit"),
        ({"arch": "vit_7b"}, "dinov3_vit"),
        ({"arch": "convnext_small"}, "dinov3_convnext"),
        ({"arch": "vit_large", "family": "dinov3_vit"}, "dinov3_vit"),
    ],
)
def test_a_student_section_picks_its_family(section, family):
    assert family_for_student(OmegaConf.create(section)).name == family


def test_a_shared_arch_name_alone_stays_dinov2s_and_a_wrong_explicit_family_is_named():
    assert family_for_arch("vit_small").name == "dinov2_vit"
    with pytest.raises(ValueError, match="not an arch of student.family='dinov3_convnext'"):
        family_for_student({"arch": "vit_small", "family": "dinov3_convnext"})


def test_a_dinov3_section_builds_a_teacher_without_stochastic_depth():
    section = OmegaConf.create({"arch": "vit_small", "patch_size": 16, "n_storage_tokens": 2, "drop_path_rate": 0.2})
    with torch.device("meta"):
        student, teacher, dim = build_model(section, img_size=64)
    assert type(teacher).__name__ == "DinoVisionTransformerV3" and dim == 384
    assert student.blocks[0].drop_path1.drop_prob == 0.2 and teacher.blocks[0].drop_path1.drop_prob == 0.0


@pytest.mark.parametrize("name", DINOV3_NAMES)
def test_weights_alone_rebuild_every_released_architecture(name):
    """Keys and shapes of each released backbone tell its architecture back (built on the meta device)."""
    with torch.device("meta"):
        model = make_backbone(name, pretrained=False)
        state_dict = model.state_dict()
        family = family_for_weights(state_dict)
        arch, kwargs = family.kwargs_from_weights(state_dict)
        rebuilt = family.archs[arch](**kwargs)
    assert family.name == catalog.get_backbone(name).family
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in state_dict.items()}


def test_the_sat_vitl_norms_come_from_its_weights():
    with torch.device("meta"):
        sat = make_backbone("dinov3_vitl16", pretrained=False, untie_global_and_local_cls_norm=True)
    _, kwargs = get_family("dinov3_vit").kwargs_from_weights(sat.state_dict())
    assert (
        kwargs["untie_global_and_local_cls_norm"]
        and "untie_global_and_local_cls_norm" in get_family("dinov3_vit").from_weights
    )


@pytest.fixture(scope="module")
def tiny_v3_file(tmp_path_factory):
    torch.manual_seed(0)
    model = make_backbone("dinov3_vits16", pretrained=False, depth=2)
    path = tmp_path_factory.mktemp("v3") / "tiny.pth"
    torch.save(model.state_dict(), path)
    return model.eval(), path


def test_the_door_takes_a_dinov3_weights_file_alone(tiny_v3_file):
    model, path = tiny_v3_file
    loaded = load_backbone(path, device="cpu")
    facts = (loaded.family, loaded.patch_size, loaded.num_extra_tokens, loaded.embed_dim)
    assert facts == ("dinov3_vit", 16, 5, 384)
    x = torch.randn(2, 3, 48, 64)
    torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)


def test_a_hub_name_with_weights_of_another_architecture_names_the_difference(tiny_v3_file):
    with pytest.raises(RuntimeError, match="blocks.2"):
        load_backbone("dinov3_vits16", weights=tiny_v3_file[1], device="cpu")


def test_the_door_takes_a_dinov3_hub_name_with_its_weights(tmp_path):
    torch.manual_seed(1)
    model = make_backbone("dinov3_convnext_tiny", pretrained=False).eval()
    torch.save(model.state_dict(), tmp_path / "convnext.pth")
    loaded = load_backbone("dinov3_convnext_tiny", weights=tmp_path / "convnext.pth", device="cpu")
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)


def test_the_door_explains_the_gated_release_weights():
    with pytest.raises(ValueError, match="licence form.*--weights PATH|--weights PATH.*licence form"):
        load_backbone("dinov3_vits16", device="cpu")


def test_a_random_convnext_from_the_door_tokens_every_32_pixels():
    loaded = load_backbone("dinov3_convnext_tiny", random_init=True, device="cpu")
    assert (loaded.family, loaded.patch_size, loaded.num_extra_tokens) == ("dinov3_convnext", 32, 0)
    out = loaded.model.forward_features(torch.randn(1, 3, 64, 96))
    assert out["x_norm_patchtokens"].shape == (1, 2 * 3, 768)
