"""DINOv3's configs as released: which defaults a config gets, DINOv3's forms turned into the trainer's keys (the
learning rate bit for bit), the keys read by no released code accepted, the unimplemented ones named in one error."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

import dinov2.utils.config  # noqa: F401  (registers the registry checks and the student-family test)
from dinov2.config import (
    ConfigKeyError,
    UnimplementedConfigError,
    apply_scaling_rules,
    fresh_dinov3_default_config,
    load_cfg,
    write_config,
)
from dinov2.config.dinov3 import UNIMPLEMENTED

V3_STUDENT = "student.pos_embed_type=rope"  # a DINOv3-only student key (its default value)


def _load(*opts: str, tmp_path=None, config_file=None):
    return load_cfg(config_file, list(opts), output_dir=str(tmp_path) if tmp_path else "/tmp/unused")


@pytest.mark.parametrize(
    ("opts", "dinov3"),
    [
        ([], False),
        (["student.arch=vit_small"], False),
        ([V3_STUDENT], True),
        (["student.n_storage_tokens=4"], True),
        (["student.arch=vit_7b"], True),  # an arch only DINOv3 has
        (["student.arch=convnext_tiny"], True),
        (["gram.use_loss=false"], False),  # Gram anchoring is a trainer feature for either family's student
        (["crops.teacher_to_student_resolution_scale=1.0"], True),  # a key only DINOv3's defaults have
    ],
)
def test_defaults_follow_the_student_family(opts, dinov3):
    cfg = _load(*opts)
    assert "gram" in cfg  # both defaults carry the Gram keys (off in DINOv2's)
    assert (OmegaConf.select(cfg, "compute_precision.param_dtype") is not None) is dinov3
    if dinov3:  # DINOv3's values where the two defaults differ
        assert cfg.train.centering == "sinkhorn_knopp" and cfg.ibot.separate_head is True
        assert cfg.checkpointing.period == 3750 and cfg.train.compile is True
    else:
        assert cfg.train.centering == "centering" and cfg.optim.base_lr == 0.004


def test_precision_policy_becomes_the_per_part_sections():
    cfg = _load(V3_STUDENT, "compute_precision.param_dtype=fp16")
    for model in ("student", "teacher"):
        for part in ("backbone", "dino_head", "ibot_head"):
            section = cfg.compute_precision[model][part]
            assert section.sharding_strategy == "SHARD_GRAD_OP"
            assert dict(section.mixed_precision) == {
                "param_dtype": "fp16",
                "reduce_dtype": "fp32",
                "buffer_dtype": "fp32",
            }
    assert cfg.compute_precision.grad_scaler is False  # DINOv3 trains without one


@pytest.mark.parametrize("lr", [0.001, 0.0002, 3.7e-4])
@pytest.mark.parametrize("world", [1, 3, 128])
def test_learning_rate_equals_the_release_bit_for_bit(lr, world):
    cfg = apply_scaling_rules(_load(V3_STUDENT, f"optim.lr={lr}", "train.batch_size_per_gpu=24"), world)
    # DINOv3's sqrt_wrt_1024 rule: lr *= 4 * sqrt(batch_per_gpu * world / 1024)
    assert cfg.optim.lr == lr * (4 * math.sqrt(24 * world / 1024.0))


def test_schedules_v2_scale_factor_and_null_v1_keys():
    opts = [V3_STUDENT, "train.batch_size_per_gpu=16", "optim.lr=null", "teacher.momentum_teacher=null"]
    spec = "{start: 0, peak: 1.0e-4, end: 1.0e-4, warmup_epochs: 1, freeze_last_layer_epochs: 0}"
    const = "{start: 0.04, peak: 0.04, end: 0.04, warmup_epochs: 0}"
    opts += [f"schedules.lr={spec}", f"schedules.weight_decay={const}", f"schedules.momentum={const}"]
    opts += [f"schedules.teacher_temp={const}"]
    cfg = apply_scaling_rules(_load(*opts), 8)
    assert cfg.optim.lr == 4 * math.sqrt(16 * 8 / 1024.0)  # the factor of schedules.lr.peak / end


def test_written_config_reloads_to_the_same_config(tmp_path):
    cfg = apply_scaling_rules(_load(V3_STUDENT, "optim.lr=0.0005", tmp_path=tmp_path), 4)
    path = write_config(cfg, tmp_path)
    again = apply_scaling_rules(_load(tmp_path=tmp_path, config_file=path), 4)
    assert OmegaConf.to_container(again) == OmegaConf.to_container(cfg)


def test_keys_read_by_no_released_code_are_accepted():
    opts = [
        "train.cell_augmentation=false",
        "student.patch_drop=0.0",
        "student.pos_embed_type=ropenew",
        "student.fp8_enabled=true",
        "hrft.enabled=false",
        "coding_rate_loss.use_cls_loss=false",
        "gram.loss_weight_schedule=null",
        "dino.head_norm_last_layer=false",
        "evaluation.config_files.low_freq=x.yaml",
    ]
    _load(*opts)


def test_unknown_keys_of_a_dinov3_config_name_its_defaults_and_suggest():
    with pytest.raises(ConfigKeyError, match=r"ssl_default_config_dinov3\.yaml.*\n.*'gram\.use_los'.*gram\.use_loss"):
        _load("gram.use_los=true")


def test_unimplemented_settings_are_listed_in_one_error():
    opts = [V3_STUDENT, "dino.koleo_loss_distributed=true", "optim.optimizer=sgd", "crops.rgb_mean=[0.5,0.5,0.5]"]
    with pytest.raises(UnimplementedConfigError) as info:
        _load(*opts)
    message = str(info.value)
    assert "3 DINOv3 setting(s) this trainer does not implement" in message
    for key in ("dino.koleo_loss_distributed=True", "optim.optimizer='sgd'", "crops.rgb_mean=[0.5, 0.5, 0.5]"):
        assert key in message
    assert isinstance(info.value, ValueError) and not isinstance(info.value, KeyError)


def test_the_defaults_hold_the_implemented_values():
    defaults = fresh_dinov3_default_config()
    for key, (values, _) in UNIMPLEMENTED.items():
        value = OmegaConf.select(defaults, key)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        assert value in values, key


def test_per_part_precision_given_by_a_layer_wins():
    fp32 = "{sharding_strategy: NO_SHARD, mixed_precision: {param_dtype: fp32, reduce_dtype: fp32, buffer_dtype: fp32}}"
    cfg = _load(V3_STUDENT, f"compute_precision.student.backbone={fp32}")
    assert cfg.compute_precision.student.backbone.mixed_precision.param_dtype == "fp32"
    assert cfg.compute_precision.student.backbone.sharding_strategy == "NO_SHARD"
    assert cfg.compute_precision.student.dino_head.mixed_precision.param_dtype == "bf16"  # from the one policy
