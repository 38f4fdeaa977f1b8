"""build_model_from_cfg: the released config keys to (student, teacher, embed_dim)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from dinov2.models import build_model, build_model_from_cfg
from dinov2.models.vision_transformer import BlockChunk

STUDENT = dict(
    arch="vit_small",
    patch_size=14,
    drop_path_rate=0.3,
    layerscale=1.0e-05,
    drop_path_uniform=True,
    pretrained_weights="",
    ffn_layer="mlp",
    block_chunks=2,
    qkv_bias=True,
    proj_bias=True,
    ffn_bias=True,
    num_register_tokens=2,
    interpolate_antialias=True,
    interpolate_offset=0.0,
)


def _cfg(**student):
    return OmegaConf.create({"student": {**STUDENT, **student}, "crops": {"global_crops_size": 98}})


def test_student_and_teacher_from_config():
    student, teacher, embed_dim = build_model_from_cfg(_cfg())
    assert embed_dim == 384
    for model in (student, teacher):
        assert model.patch_size == 14 and model.num_register_tokens == 2
        assert model.pos_embed.shape == (1, 1 + 7 * 7, 384)  # img_size = crops.global_crops_size
        assert model.interpolate_antialias and model.interpolate_offset == 0.0
        assert len(model.blocks) == 2 and isinstance(model.blocks[0], BlockChunk)
        assert model.blocks[0][0].ls1.gamma[0].item() == pytest.approx(1e-5)
    student_rates = {b.sample_drop_ratio for chunk in student.blocks for b in chunk if hasattr(b, "attn")}
    teacher_rates = {b.sample_drop_ratio for chunk in teacher.blocks for b in chunk if hasattr(b, "attn")}
    assert student_rates == {0.3} and teacher_rates == {0.0}


def test_only_teacher_and_memeff_suffix():
    with torch.device("meta"):
        teacher, embed_dim = build_model_from_cfg(_cfg(arch="vit_base_memeff", block_chunks=0), only_teacher=True)
    assert embed_dim == 768 and len(teacher.blocks) == 12
    assert {b.sample_drop_ratio for b in teacher.blocks} == {0.0}


def test_build_model_defaults_to_img_size_224():
    teacher, _ = build_model(OmegaConf.create(STUDENT), only_teacher=True)
    assert teacher.patch_embed.img_size == (224, 224)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("arch", "vit_huge", r"unknown student.arch 'vit_huge'.*vit_base"), ("ffn_layer", "glu", r"ffn_layer 'glu'.*mlp")],
)
def test_unknown_names_list_the_valid_ones(key, value, message):
    with pytest.raises(ValueError, match=message):
        build_model_from_cfg(_cfg(**{key: value}))
