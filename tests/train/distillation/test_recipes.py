"""The packaged distillation recipes (paper Table 16) fit their ViT-g teacher and give the table's numbers."""

from __future__ import annotations

import pytest
import torch

from dinov2.configs import config_path
from dinov2.train.distillation.config import load_teacher_config
from dinov2.train.meta_archs import build_meta_arch, resolve_meta_architecture
from dinov2.utils.config import ConfigValueError, apply_scaling_rules_to_cfg, load_cfg

RECIPES = {"vits14": "vit_small", "vitb14": "vit_base", "vitl14": "vit_large"}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_matches_table_16_and_fits_the_teacher(name, tmp_path):
    cfg = load_cfg(config_path(f"train/{name}_distill_vitg14"), output_dir=str(tmp_path))
    assert resolve_meta_architecture(cfg) == "DistillationMetaArch"
    assert cfg.student.arch == RECIPES[name] and cfg.student.patch_size == 14 and cfg.student.ffn_layer == "mlp"
    assert cfg.student.drop_path_rate == 0 and cfg.train.centering == "sinkhorn_knopp"
    world = 2048 // cfg.train.batch_size_per_gpu  # Table 16: batch 2048, lr 1e-3
    assert apply_scaling_rules_to_cfg(cfg, world_size=world).optim.lr == pytest.approx(1e-3, rel=1e-3)
    assert cfg.optim.epochs * cfg.train.OFFICIAL_EPOCH_LENGTH == 625_000
    assert (cfg.teacher.momentum_teacher, cfg.optim.weight_decay, cfg.optim.weight_decay_end) == (0.994, 0.04, 0.2)
    teacher = load_teacher_config(cfg)  # prototype counts and patch size agree with the ViT-g recipe
    assert teacher.student.arch == "vit_giant2" and teacher.ibot.separate_head
    with pytest.raises(ConfigValueError, match="distillation.checkpoint_path is empty"):
        build_meta_arch(cfg)  # the teacher weights must be given; nothing is built before


@pytest.mark.parametrize("registers", [False, True])
def test_released_hub_vitg14_fits_the_teacher_recipe_with_fresh_heads(tmp_path, registers):
    """Keys and shapes of the released ViT-g/14 backbone (built on the meta device, no download) are what the
    recipe's teacher expects from a hub file under ``teacher_heads: fresh`` (position table: the file's 37 x 37)."""
    from dinov2.hub.backbones import dinov2_vitg14, dinov2_vitg14_reg
    from dinov2.models.convert import flat_to_chunked
    from dinov2.train.distillation.teacher import TeacherPlan, _build_modules

    cfg = load_cfg(config_path("train/vits14_distill_vitg14"), output_dir=str(tmp_path))
    teacher_cfg = load_teacher_config(cfg)
    if registers:  # the reg4 teacher: the released settings of configs/eval/vitg14_reg4_pretrain.yaml
        teacher_cfg.student.num_register_tokens = 4
    with torch.device("meta"):
        hub = (dinov2_vitg14_reg if registers else dinov2_vitg14)(pretrained=False)
        plan = TeacherPlan(teacher_cfg, "hub.pth", ("dino_head", "ibot_head"), True, 518, 0)
        teacher = _build_modules(plan)
    expected = {k: v.shape for k, v in teacher["backbone"].state_dict().items()}
    found = flat_to_chunked({k: v.shape for k, v in hub.state_dict().items()}, depth=40, block_chunks=4)
    assert found == expected
    assert teacher["dino_head"].last_layer.out_features == teacher["ibot_head"].last_layer.out_features == 131072


def test_a_missing_teacher_file_is_a_usage_error_before_any_output(tmp_path, capsys):
    """issue 26: the teacher's config and file are checked with the command line, before the output folder, its
    config.yaml and logs exist (as a missing --pretrained-weights is for evaluation)."""
    from dinov2.configs import config_path
    from dinov2.train.train import cli_main

    output_dir = tmp_path / "run"
    argv = ["--config-file", str(config_path("train/demo_cpu_distill")), "--output-dir", str(output_dir)]
    argv += [
        f"distillation.full_cfg_path={config_path('train/demo_cpu')}",
        f"distillation.checkpoint_path={tmp_path / 'no_teacher.pth'}",
        f"train.dataset_path=Synthetic:root={tmp_path}/data:split=TRAIN",
    ]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code == 2
    assert "no_teacher.pth does not exist" in capsys.readouterr().err
    assert not output_dir.exists()


@pytest.mark.parametrize(
    "heads, trained_with, centring, expected",
    [
        ("checkpoint", "centering", "centering", None),
        ("checkpoint", "sinkhorn_knopp", "sinkhorn_knopp", None),
        ("checkpoint", "centering", "sinkhorn_knopp", "were trained with train.centering=centering"),
        ("checkpoint", "sinkhorn_knopp", "centering", "set train.centering=sinkhorn_knopp"),
        ("fresh", "centering", "sinkhorn_knopp", None),
        ("fresh", "sinkhorn_knopp", "centering", "DINOv3 uses sinkhorn_knopp"),
    ],
)
def test_the_centring_warning_follows_what_the_teachers_heads_were_trained_with(
    heads, trained_with, centring, expected
):
    from omegaconf import OmegaConf

    from dinov2.train.distillation.config import centring_warning

    cfg = OmegaConf.create({"train": {"centering": centring}, "distillation": {"teacher_heads": heads}})
    warning = centring_warning(cfg, OmegaConf.create({"train": {"centering": trained_with}}))
    assert warning is None if expected is None else expected in warning


def test_the_cpu_demo_distils_with_its_teachers_own_targets(tmp_path):
    """The distillation demo's centring and (constant) temperature are those its teacher trained with."""
    from dinov2.train.distillation.config import centring_warning

    teacher_config = config_path("train/demo_cpu")
    cfg = load_cfg(config_path("train/demo_cpu_distill"), [f"distillation.full_cfg_path={teacher_config}"], tmp_path)
    teacher = load_teacher_config(cfg)
    assert centring_warning(cfg, teacher) is None and cfg.train.centering == teacher.train.centering == "centering"
    assert cfg.teacher.warmup_teacher_temp == cfg.teacher.teacher_temp == teacher.teacher.teacher_temp == 0.04
