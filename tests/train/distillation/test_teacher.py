"""The frozen teacher: every accepted file layout loads the same weights strictly, fresh heads are seeded and
frozen, and every mismatch fails before any model is built with a message naming the key to change."""

from __future__ import annotations

import shutil

import pytest
import torch
from omegaconf import OmegaConf

from dinov2.models import build_model_from_cfg
from dinov2.models.convert import flat_to_chunked
from dinov2.train.checkpointing import Checkpointer
from dinov2.train.distillation.teacher import build_teacher, plan_teacher
from dinov2.train.distillation.teacher_weights import teacher_fingerprint
from dinov2.train.meta_archs import build_meta_arch
from dinov2.utils.config import ConfigValueError
from tests.train.distillation.tiny_distill import distill_cfg, teacher_run
from tests.train.tiny import tiny_cfg


def _teacher(cfg):
    return build_teacher(plan_teacher(cfg))


def _same_weights(teacher, reference) -> None:
    state, expected = teacher.state_dict(), reference.state_dict()
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state[key], value), key


@pytest.fixture
def run(tmp_path):
    """(teacher config, teacher export, the SSL model whose teacher was exported), separate iBOT head."""
    return teacher_run(tmp_path, "ibot.separate_head=true")


def _student(tmp_path, teacher_config, source, *opts):
    return distill_cfg(tmp_path / "student", teacher_config, source, "ibot.separate_head=true", *opts)


def test_layouts_load_the_same_teacher(tmp_path, run):
    teacher_config, export, ssl = run
    exported = torch.load(export, weights_only=True)["teacher"]
    full_state = {**ssl.state_dict(), "dino_loss.center": torch.ones(1, 64)}  # centres in the file are ignored
    sources = {
        "export": export,
        "chunked": {"teacher": flat_to_chunked(exported, depth=3, block_chunks=3)},
        "prefixed": {"teacher": {f"module.{k}": v for k, v in exported.items()}},
        "training state": {"model": full_state},
    }
    for name, content in sources.items():
        path = export if name == "export" else tmp_path / f"{name.replace(' ', '_')}.pth"
        if name != "export":
            torch.save(content, path)
        _same_weights(_teacher(_student(tmp_path, teacher_config, path)), ssl.teacher)
    # one of our checkpoint folders: only its teacher.* tensors are read
    folder = Checkpointer(tmp_path / "ckpt").save(3, {"model": ssl})
    _same_weights(_teacher(_student(tmp_path, teacher_config, folder)), ssl.teacher)


def test_teacher_with_block_chunks_reads_flat_files(tmp_path, run):
    teacher_config, export, ssl = run
    opts = ("student.arch=vit_test_t", "ibot.separate_head=true", "student.block_chunks=3")
    OmegaConf.save(tiny_cfg(tmp_path / "t2", *opts), tmp_path / "chunked.yaml")
    teacher = _teacher(_student(tmp_path, tmp_path / "chunked.yaml", export)).state_dict()
    expected = flat_to_chunked(ssl.teacher.state_dict(), depth=3, block_chunks=3)
    assert "backbone.blocks.1.1.attn.qkv.weight" in teacher and teacher.keys() == expected.keys()
    assert all(torch.equal(teacher[k], v) for k, v in expected.items())


def test_backbone_only_file_needs_fresh_heads(tmp_path, run):
    teacher_config, _, ssl = run
    hub_file = tmp_path / "backbone.pth"  # what a released hub file holds: the backbone alone, no prefix
    torch.save(ssl.teacher.backbone.state_dict(), hub_file)
    with pytest.raises(ConfigValueError, match=r"backbone only .* distillation.teacher_heads=fresh"):
        _teacher(_student(tmp_path, teacher_config, hub_file))
    cfg = _student(tmp_path, teacher_config, hub_file, "distillation.teacher_heads=fresh")
    first, second = _teacher(cfg), _teacher(cfg)
    _same_weights(first.backbone, ssl.teacher.backbone)
    _same_weights(first, second)  # seeded from train.seed: the same heads on every rank and every run
    assert all(not p.requires_grad for p in first.parameters()) and not first.training
    other = _teacher(_student(tmp_path, teacher_config, hub_file, "distillation.teacher_heads=fresh", "train.seed=1"))
    assert not torch.equal(other.dino_head.mlp[0].weight, first.dino_head.mlp[0].weight)
    with pytest.raises(ConfigValueError, match="holds trained teacher heads.*teacher_heads=checkpoint"):
        _teacher(_student(tmp_path, teacher_config, run[1], "distillation.teacher_heads=fresh"))


def test_teacher_keeps_the_file_position_table(tmp_path, run):
    """A hub file's table (518 px there) is loaded as is and interpolated at run time, as the released model does."""
    teacher_config, _, _ = run
    big = tiny_cfg(tmp_path / "big", "student.arch=vit_test_t", "crops.global_crops_size=32")
    torch.manual_seed(3)
    backbone, _ = build_model_from_cfg(big, only_teacher=True)  # an 8 x 8 position grid
    torch.save(backbone.state_dict(), tmp_path / "hub.pth")
    teacher = _teacher(_student(tmp_path, teacher_config, tmp_path / "hub.pth", "distillation.teacher_heads=fresh"))
    assert teacher.backbone.pos_embed.shape == (1, 65, 48)
    crops = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(teacher.backbone(crops), backbone.eval()(crops))


def test_ignore_gives_a_seeded_random_teacher(tmp_path, run):
    teacher_config = run[0]
    cfg = _student(tmp_path, teacher_config, "ignore")
    _same_weights(_teacher(cfg), _teacher(cfg))
    assert teacher_fingerprint("ignore")["path"] == "ignore"


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (["dino.head_n_prototypes=32"], r"dino.head_n_prototypes=32 but the teacher's DINO head has 64 .*set dino"),
        (["ibot.head_n_prototypes=40"], r"ibot.head_n_prototypes=40 .* 48 prototypes: set ibot.head_n_prototypes=48"),
        (["student.patch_size=8"], r"student.patch_size=8 but the teacher's is 4.*set student.patch_size=4"),
        (["distillation.full_cfg_path=''"], r"distillation.full_cfg_path is empty"),
        (["distillation.checkpoint_path=''"], r"distillation.checkpoint_path is empty"),
        (["distillation.checkpoint_path=https://x/teacher.pth"], r"is a URL: download the file"),
    ],
)
def test_mismatches_fail_before_building_naming_the_key(tmp_path, run, opts, message):
    cfg = _student(tmp_path, run[0], run[1], *opts)
    with pytest.raises((ConfigValueError, ValueError), match=message):
        build_meta_arch(cfg)


def test_file_that_does_not_fit_the_teacher_config(tmp_path, run):
    teacher_config, export, _ = run
    exported = torch.load(export, weights_only=True)["teacher"]
    del exported["ibot_head.last_layer.weight_g"]
    torch.save({"teacher": exported}, tmp_path / "broken.pth")
    with pytest.raises(ConfigValueError, match=r"full_cfg_path .*missing \['ibot_head.last_layer.weight_g'\]"):
        build_meta_arch(_student(tmp_path, teacher_config, tmp_path / "broken.pth"))


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (["distillation.mask_student=true", "distillation.ibot_tokens=all"], "distillation.mask_student"),
        (["distillation.ibot_tokens=some"], "distillation.ibot_tokens"),
        (["distillation.teacher_heads=none"], "distillation.teacher_heads"),
        (["MODEL.META_ARCHITECTURE=DistillationMetaArch"], "distillation.enabled: got False"),
        (["MODEL.META_ARCHITECTURE=MultiDistillationMetaArch"], "multidistillation.enabled: got False"),
        (["multidistillation.enabled=true"], "MODEL.META_ARCHITECTURE: got 'SSLMetaArch'"),
        (["multidistillation.students=[{name: a/b, config_path: x, ranks_range: [0, 1]}]"], r"students\[0\]"),
    ],
)
def test_config_values_are_validated(tmp_path, opts, message):
    with pytest.raises(ConfigValueError, match=message):
        tiny_cfg(tmp_path, *opts)


def test_fingerprint_follows_content_not_path(tmp_path, run):
    export = run[1]
    copy = tmp_path / "elsewhere.pth"
    shutil.copy(export, copy)
    first, moved = teacher_fingerprint(export), teacher_fingerprint(copy)
    assert (first["size"], first["crc32"]) == (moved["size"], moved["crc32"]) and first["path"] != moved["path"]
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert teacher_fingerprint(copy)["crc32"] != first["crc32"]
