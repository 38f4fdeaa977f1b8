"""Distillation from a DINOv3 teacher file (RoPE ViT, no position table) into a DINOv3 ViT and into a ConvNeXt
student, with the shipped DINOv3 configs scaled down (tiny archs, 64/32 px crops, CPU, fp32)."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from dinov2.config import apply_scaling_rules
from dinov2.train.checkpointing import export_teacher
from dinov2.train.distillation import DistillationMetaArch
from dinov2.train.distillation.teacher_weights import read_teacher_weights
from dinov2.train.meta_archs import build_meta_arch
from dinov2.train.precision import PrecisionPolicy
from dinov2.train.ssl_meta_arch import SSLMetaArch
from dinov2.train.train import build_optimizer, train_step
from dinov2.utils.schedules import build_schedulers
from tests.train.test_dinov3_configs import GLOBAL, PATCH, TINY_DINOV3, dinov3_config, tiny_batch

DISTIL = ["distillation.enabled=true", "MODEL.META_ARCHITECTURE=DistillationMetaArch"]


@pytest.fixture(scope="module")
def dinov3_teacher(tmp_path_factory):
    """(config file, teacher export, backbone-only file) of a tiny DINOv3 ViT trained the fast ViT-L recipe's way."""
    folder = tmp_path_factory.mktemp("dinov3_teacher")
    cfg = dinov3_config("vitl_im1k_lin834", "student.arch=vit3_test", *TINY_DINOV3, output_dir=str(folder))
    torch.manual_seed(3)  # not the students' seed: the teacher differs from any student's initialisation
    model = SSLMetaArch(cfg)
    OmegaConf.save(cfg, folder / "config.yaml")
    export = export_teacher(folder / "teacher_checkpoint.pth", model.teacher)
    backbone_file = folder / "backbone.pth"  # a hub-style file: the backbone's state dict alone
    torch.save(model.teacher.backbone.state_dict(), backbone_file)
    return folder / "config.yaml", export, backbone_file


def _distil(tmp_path, recipe: str, teacher, *opts: str):
    config, export, _ = teacher
    opts = [*DISTIL, *TINY_DINOV3, f"distillation.full_cfg_path={config}", f"distillation.checkpoint_path={export}"]
    cfg = apply_scaling_rules(dinov3_config(recipe, *opts, output_dir=str(tmp_path)), 1)
    torch.manual_seed(0)
    model = build_meta_arch(cfg)
    assert type(model) is DistillationMetaArch
    model.train()
    model.precision = PrecisionPolicy.from_config(cfg, "cpu")
    return cfg, model


def _step(cfg, model, iteration: int = 100) -> dict[str, float]:
    optimizer = build_optimizer(cfg, model.get_params_groups())
    losses, _ = train_step(cfg, model, optimizer, tiny_batch(), build_schedulers(cfg), iteration)
    assert set(losses) == {"dino_global_crops_loss", "dino_local_crops_loss", "koleo_loss", "ibot_loss"}
    assert all(math.isfinite(v) for v in losses.values())
    return losses


def test_dinov3_teacher_file_is_loaded_strictly_and_stays_frozen(tmp_path, dinov3_teacher):
    cfg, model = _distil(tmp_path, "multidist_tests/vits_p16", dinov3_teacher, "student.arch=vit3_test")
    saved = read_teacher_weights(str(dinov3_teacher[1]))
    teacher_state = model.teacher.state_dict()
    assert set(teacher_state) == set(saved)
    for key, value in saved.items():
        assert torch.equal(teacher_state[key], value), key
    _step(cfg, model)
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_released_style_backbone_file_with_fresh_heads(tmp_path, dinov3_teacher):
    _, _, backbone_file = dinov3_teacher
    opts = [
        "student.arch=vit3_test",
        f"distillation.checkpoint_path={backbone_file}",
        "distillation.teacher_heads=fresh",
    ]
    cfg, model = _distil(tmp_path, "multidist_tests/vits_p16", dinov3_teacher, *opts)
    saved = torch.load(backbone_file, weights_only=True)
    assert all(torch.equal(model.teacher.backbone.state_dict()[k], v) for k, v in saved.items())
    _step(cfg, model)


def test_convnext_student_of_a_dinov3_teacher(tmp_path, dinov3_teacher):
    cfg, model = _distil(
        tmp_path, "distillation_convnext/convnext_tiny_p16", dinov3_teacher, "student.arch=convnext_test"
    )
    student = model.student.backbone
    assert type(student).__name__ == "ConvNeXt" and cfg.student.patch_size == PATCH
    out = student(torch.zeros(1, 3, GLOBAL, GLOBAL), is_training=True)
    assert out["x_norm_patchtokens"].shape[1] == (GLOBAL // PATCH) ** 2  # on the teacher's iBOT grid, not stride 32
    before = [p.detach().clone() for p in student.parameters()]
    _step(cfg, model)
    assert any(not torch.equal(b, a) for b, a in zip(before, student.parameters()))


@pytest.mark.parametrize(
    ("recipe", "arch"),
    [
        ("multidist_tests/vitb_p16", "vit3_test"),
        *((f"distillation_convnext/convnext_{size}_p16", "convnext_test") for size in ("small", "base", "large")),
    ],
)
def test_every_released_distillation_recipe_runs_a_scaled_down_step(tmp_path, dinov3_teacher, recipe, arch):
    # The single-student recipes (the multi-student ones: the two-rank test below).
    cfg, model = _distil(tmp_path, recipe, dinov3_teacher, f"student.arch={arch}")
    _step(cfg, model)


def _released_multi_step(rank: int, world_size: int, tmp_dir: str, teacher: tuple, base: str, students, arch: str):
    """Rank ``rank`` trains its student of the released multi-student file ``base`` for one step with the shared
    frozen teacher, scaled down: every student the tiny ``arch`` (the command line overrides the student files),
    one rank each, a global batch of 4 images."""
    import argparse

    from dinov2.distributed.subgroups import new_subgroups, scope
    from dinov2.train.distillation import MultiDistillationMetaArch
    from dinov2.train.distillation.multi_setup import student_config

    config, export = teacher
    entries = ", ".join(
        f"{{name: {n}, config_path: {p}, ranks_range: [{i}, {i + 1}]}}" for i, (n, p) in enumerate(students)
    )
    opts = [
        "train.dataset_path=ImageNet:split=TRAIN",
        *TINY_DINOV3,
        f"student.arch={arch}",
        f"distillation.full_cfg_path={config}",
        f"distillation.checkpoint_path={export}",
        "multidistillation.global_batch_size=4",
        f"multidistillation.students=[{entries}]",
    ]
    args = argparse.Namespace(config_file=f"configs/train/dinov3/{base}.yaml", opts=opts, output_dir=tmp_dir)
    subgroup = new_subgroups([[i, i + 1] for i in range(world_size)])
    name, path = students[subgroup.index]
    cfg = student_config(args, {"name": name, "config_path": path}, n_load=2, warn=False)
    with scope(subgroup.group):
        torch.manual_seed(0)
        model = build_meta_arch(cfg)
        assert type(model) is MultiDistillationMetaArch
        model.prepare_for_distributed_training("cpu")
        model.train()
        losses = model.forward_backward(tiny_batch(n_images=2, seed=rank), 0.07)
    return {"arch": str(cfg.student.arch), "losses": {k: float(v) for k, v in losses.items()}}


STUDENT_FILES = {  # the released lvd1689m recipe names student files it does not ship: the test ones stand in
    "multi_distillation_test": ["multidist_tests/vits_p16", "multidist_tests/vitb_p16"],
    "dinov3_vitl16_lvd1689m_distilled": ["multidist_tests/vits_p16", "multidist_tests/vitb_p16"],
    "distillation_convnext/multi_distillation_convnext_test": [
        "distillation_convnext/convnext_tiny_p16",
        "distillation_convnext/convnext_small_p16",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("base", "arch"),
    [
        ("multi_distillation_test", "vit3_test"),
        ("dinov3_vitl16_lvd1689m_distilled", "vit3_test"),
        ("distillation_convnext/multi_distillation_convnext_test", "convnext_test"),
    ],
)
def test_released_multi_student_recipes_run_a_scaled_down_step_on_two_ranks(dinov3_teacher, tmp_path, base, arch):
    from tests.dist_helpers import run_distributed

    config, export, _ = dinov3_teacher
    students = [(f.rsplit("/", 1)[-1], f"configs/train/dinov3/{f}.yaml") for f in STUDENT_FILES[base]]
    results = run_distributed(
        _released_multi_step, 2, str(tmp_path), (str(config), str(export)), base, students, arch, timeout=240
    )
    for result in results:
        assert result["arch"] == arch and all(math.isfinite(v) for v in result["losses"].values())
