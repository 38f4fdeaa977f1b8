"""The adaptation presets load and validate, and their hub name fits their student section."""

from __future__ import annotations

import pytest

from dinov2.configs import config_path
from dinov2.train.pretrained import check_hub_arch, hub_source
from dinov2.utils.config import load_cfg


@pytest.mark.parametrize(
    "name", ["adapt_dinov2_vits14", "adapt_dinov2_vitb14", "adapt_dinov2_vitl14", "adapt_dinov3_vitl16"]
)
def test_a_preset_starts_from_its_hub_backbone(name, tmp_path):
    cfg = load_cfg(str(config_path(f"train/{name}")), output_dir=str(tmp_path))
    hub = hub_source(cfg.student.pretrained_weights)
    assert hub is not None and hub[0] == name.replace("adapt_", "")
    check_hub_arch(hub[0], cfg.student)  # raises when the preset's student is another arch
    assert cfg.adapt.head_warmup_iterations > 0 and cfg.adapt.collapse_guard.action == "stop"
    assert cfg.teacher.warmup_teacher_temp == cfg.teacher.teacher_temp  # no cold-teacher warm-up


def test_the_cpu_preset_takes_an_export_and_a_dataset(tmp_path):
    opts = [
        "student.pretrained_weights=/runs/x/eval/training_99/teacher_checkpoint.pth",
        "train.dataset_path=ImageFolder:root=/data/images",
    ]
    cfg = load_cfg(str(config_path("train/adapt_demo_cpu")), opts=opts, output_dir=str(tmp_path))
    demo = load_cfg(str(config_path("train/demo_cpu")), output_dir=str(tmp_path))
    assert (cfg.student.arch, cfg.crops.global_crops_size, cfg.crops.local_crops_size) == (
        demo.student.arch,
        demo.crops.global_crops_size,
        demo.crops.local_crops_size,
    )
