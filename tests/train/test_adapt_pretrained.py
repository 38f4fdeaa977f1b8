"""Starting an adaptation: ``student.pretrained_weights`` from hub names (registers / storage tokens kept, DINOv3
students without a position table) and ``adapt.pretrained_heads`` from a training export."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from dinov2.hub import catalog
from dinov2.hub.backbones import make_backbone
from dinov2.models.weights import resize_pos_embed
from dinov2.train.checkpointing import export_teacher
from dinov2.train.pretrained import hub_source, load_pretrained_heads, load_student_pretrained_weights
from dinov2.train.ssl_meta_arch import SSLMetaArch
from tests.train.tiny import GLOBAL_SIZE, PATCH, tiny_cfg

TINY_REG = catalog.HubBackbone(
    "test_vit_test_reg2",
    "dinov2_vit",
    "vit_test",
    dict(img_size=2 * GLOBAL_SIZE, patch_size=PATCH, init_values=1.0, block_chunks=0, num_register_tokens=2),
)


def _model(tmp_path, seed: int, *opts: str) -> SSLMetaArch:
    torch.manual_seed(seed)
    return SSLMetaArch(tiny_cfg(tmp_path, *opts))


def test_hub_source_tells_names_from_paths():
    assert hub_source("dinov2_vits14_reg") == ("dinov2_vits14_reg", None)
    assert hub_source("dinov3_vits16:/data/w.pth") == ("dinov3_vits16", "/data/w.pth")
    for value in ("/data/w.pth", "w.pth", "https://example.org/dinov2_vits14.pth", "dinov2_vits14_x"):
        assert hub_source(value) is None


def test_a_hub_name_with_a_file_keeps_the_registers_and_fills_student_and_teacher(tmp_path):
    with catalog.registered_backbone(TINY_REG):
        torch.manual_seed(1)
        source = make_backbone(TINY_REG.name, pretrained=False)
        with torch.no_grad():
            source.register_tokens.normal_()
        torch.save(source.state_dict(), tmp_path / "reg.pth")
        model = _model(tmp_path, 0, "student.num_register_tokens=2")
        load_student_pretrained_weights(model, f"{TINY_REG.name}:{tmp_path / 'reg.pth'}")
    expected = dict(source.state_dict())
    expected["pos_embed"] = resize_pos_embed(source.pos_embed.detach(), (GLOBAL_SIZE // PATCH) ** 2 + 1)
    for role in ("student", "teacher"):
        state_dict = getattr(model, role).backbone.state_dict()
        assert state_dict.keys() == expected.keys()
        assert all(torch.equal(state_dict[k], v) for k, v in expected.items()), role
    assert model.student.backbone.register_tokens.abs().sum() > 0


def test_a_hub_name_of_another_arch_names_the_student_keys(tmp_path):
    model = _model(tmp_path, 0)
    with pytest.raises(ValueError, match="student.arch=vit_small student.patch_size=14 student.num_register_tokens=4"):
        load_student_pretrained_weights(model, "dinov2_vits14_reg")


class _V3Student(nn.Module):
    """The parts of a meta-architecture that pretrained loading uses, around a 1-block DINOv3 ViT-S."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.cfg = OmegaConf.create({"student": {"arch": "vit_small", "patch_size": 16, "n_storage_tokens": 4}})
        self.student = nn.ModuleDict({"backbone": make_backbone("dinov3_vits16", pretrained=False, depth=1)})
        self.teacher = nn.ModuleDict({"backbone": make_backbone("dinov3_vits16", pretrained=False, depth=1)})

    def student_ema(self) -> nn.ModuleDict:
        return self.teacher


def test_a_dinov3_student_loads_its_storage_tokens_and_rope_without_a_position_table(tmp_path):
    source = _V3Student(1).student.backbone
    with torch.no_grad():
        source.storage_tokens.normal_()
    torch.save(source.state_dict(), tmp_path / "v3.pth")
    model = _V3Student(0)
    assert "pos_embed" not in source.state_dict()
    load_student_pretrained_weights(model, str(tmp_path / "v3.pth"))
    for role in ("student", "teacher"):
        state_dict = getattr(model, role).backbone.state_dict()
        assert all(torch.equal(state_dict[k], v) for k, v in source.state_dict().items()), role


def test_a_dinov3_name_without_its_file_says_how_to_pass_it():
    with pytest.raises(ValueError, match="student.pretrained_weights=dinov3_vits16:/path/to/file.pth"):
        load_student_pretrained_weights(_V3Student(0), "dinov3_vits16")


def test_heads_from_an_export_go_to_the_student_heads_and_their_ema(tmp_path):
    trained = _model(tmp_path, 3)
    export_teacher(tmp_path / "teacher_checkpoint.pth", trained.teacher)
    model = _model(tmp_path, 0)
    load_pretrained_heads(model, str(tmp_path / "teacher_checkpoint.pth"))
    for role in ("student", "teacher"):
        for head in [name for name in trained.teacher if name != "backbone"]:
            mine, theirs = getattr(model, role)[head].state_dict(), trained.teacher[head].state_dict()
            assert all(torch.equal(mine[k], v) for k, v in theirs.items()), (role, head)
    torch.save(trained.teacher.backbone.state_dict(), tmp_path / "backbone.pth")
    with pytest.raises(ValueError, match="holds no dino_head"):
        load_pretrained_heads(model, str(tmp_path / "backbone.pth"))
    other = _model(tmp_path, 0, "dino.head_n_prototypes=32")
    with pytest.raises(RuntimeError, match="set the dino.\\* / ibot.\\* head sizes"):
        load_pretrained_heads(other, str(tmp_path / "teacher_checkpoint.pth"))
