"""The config loader: defaults <- file <- command line, strict keys, value checks, scaling rule, setup."""

from __future__ import annotations

import logging
import math
import os

import pytest
from omegaconf import OmegaConf

from dinov2.configs import CONFIG_DIR
from dinov2.utils.config import (
    ConfigKeyError,
    ConfigValueError,
    apply_scaling_rules_to_cfg,
    get_args_parser,
    load_cfg,
    resolve_config_file,
    setup,
    write_config,
)


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_precedence_defaults_file_command_line(tmp_path):
    config_file = _write(tmp_path / "c.yaml", "optim:\n  epochs: 7\n  warmup_epochs: 2\ntrain:\n  seed: 3\n")
    cfg = load_cfg(config_file, ["optim.epochs=9", "crops.global_crops_scale=[0.5,1.0]", "optim.base_lr=1e-3"])
    assert cfg.optim.epochs == 9  # command line beats file
    assert cfg.optim.warmup_epochs == 2 and cfg.train.seed == 3  # file beats defaults
    assert cfg.optim.layerwise_decay == 0.9  # untouched defaults stay
    assert list(cfg.crops.global_crops_scale) == [0.5, 1.0] and cfg.optim.base_lr == 0.001


def test_output_dir_is_absolute_and_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_cfg().train.output_dir == str(tmp_path)  # default "." made absolute
    assert load_cfg(opts=["train.output_dir=runs/a"]).train.output_dir == str(tmp_path / "runs" / "a")
    cfg = load_cfg(opts=["train.output_dir=runs/a"], output_dir="runs/b")
    assert cfg.train.output_dir == str(tmp_path / "runs" / "b")


def test_interpolations_are_resolved(tmp_path):
    cfg = load_cfg(opts=["train.dataset_path=Synthetic:root=${train.output_dir}/data"], output_dir=str(tmp_path))
    assert cfg.train.dataset_path == f"Synthetic:root={tmp_path}/data"
    with pytest.raises(ConfigValueError, match="interpolation"):
        load_cfg(opts=["train.dataset_path=${train.nope}"])


def test_unknown_file_key_names_file_key_and_suggestion(tmp_path):
    config_file = _write(tmp_path / "bad.yaml", "student:\n  patchsize: 14\noptm:\n  epochs: 3\n")
    with pytest.raises(ConfigKeyError) as info:
        load_cfg(config_file)
    message = str(info.value)
    assert "bad.yaml" in message and "2 invalid key(s)" in message
    assert "unknown key 'student.patchsize'; did you mean 'student.patch_size'" in message
    assert "unknown key 'optm'; did you mean 'optim'" in message


def test_empty_and_non_mapping_files(tmp_path):
    assert load_cfg(_write(tmp_path / "empty.yaml", "")).optim.epochs == 100
    with pytest.raises(ConfigKeyError, match="must hold a mapping"):
        load_cfg(_write(tmp_path / "list.yaml", "- a\n- b\n"))


def test_unknown_command_line_key_suggests_other_sections():
    with pytest.raises(
        ConfigKeyError, match=r"(?s)command-line overrides.*unknown key 'train\.lr'; did you mean 'optim\.lr'"
    ):
        load_cfg(opts=["train.lr=0.1"])
    with pytest.raises(ConfigKeyError, match="'student' is a section"):
        load_cfg(opts=["student=vit_small"])
    with pytest.raises(ConfigKeyError, match=r"unknown key 'train\.seed\.x'"):
        load_cfg(opts=["train.seed.x=1"])


def test_malformed_overrides():
    with pytest.raises(ConfigKeyError, match=r"path\.key=value.*\['optim\.epochs'\]"):
        load_cfg(opts=["optim.epochs"])


def test_bad_values_are_all_listed():
    opts = [
        "student.arch=vit_huge",
        "student.ffn_layer=swiglu64",
        "train.centering=sinkhorn",
        "compute_precision.student.backbone.mixed_precision.param_dtype=float16",
        "compute_precision.teacher.dino_head.sharding_strategy=HYBRID",
        "ibot.mask_ratio_min_max=[0.5,0.1]",
        "ibot.mask_sample_probability=1.5",
        "crops.local_crops_scale=[0.05,1.2]",
        "train.batch_size_per_gpu=0",
        "optim.epochs=2.5",
        "train.OFFICIAL_EPOCH_LENGTH=true",
        "student.patch_size=14",  # global 224 = 16 x 14 is fine, local 96 is not
        "optim.scaling_rule=linear",
    ]
    with pytest.raises(ConfigValueError) as info:
        load_cfg(opts=opts)
    message = str(info.value)
    expected = [
        "student.arch: got 'vit_huge', expected one of ['vit_base', 'vit_giant2', 'vit_large', 'vit_pico', "
        "'vit_small',",
        "student.ffn_layer: got 'swiglu64', expected one of ['mlp', 'swiglu', 'swiglufused', 'identity']",
        "train.centering: got 'sinkhorn', expected one of ['centering', 'sinkhorn_knopp']",
        "param_dtype: got 'float16', expected one of ['fp32', 'fp16', 'bf16']",
        "sharding_strategy: got 'HYBRID', expected one of ['SHARD_GRAD_OP', 'FULL_SHARD', 'NO_SHARD']",
        "ibot.mask_ratio_min_max: got [0.5, 0.1], expected a pair [min, max] with 0 <= min <= max <= 1",
        "ibot.mask_sample_probability: got 1.5, expected a number in [0.0, 1.0]",
        "crops.local_crops_scale: got [0.05, 1.2]",
        "train.batch_size_per_gpu: got 0, expected an integer >= 1",
        "optim.epochs: got 2.5, expected an integer >= 1",
        "train.OFFICIAL_EPOCH_LENGTH: got True, expected an integer >= 1",
        "crops.local_crops_size: got 96, expected a multiple of student.patch_size=14 (e.g. 84 or 98)",
        "optim.scaling_rule: got 'linear', expected one of ['sqrt_wrt_1024']",
    ]
    for line in expected:
        assert line in message
    assert f"{len(expected)} problem(s)" in message
    assert "global_crops_size" not in message


def test_value_checks_accept_edge_values():
    opts = ["crops.local_crops_number=0", "crops.local_crops_size=7", "optim.warmup_epochs=100", "optim.clip_grad=null"]
    cfg = load_cfg(opts=opts)  # local size unused without local crops; warm-up may last the whole run
    assert cfg.optim.clip_grad is None
    with pytest.raises(
        ConfigValueError, match=r"optim\.warmup_epochs: got 101, expected at most optim\.epochs \(100\)"
    ):
        load_cfg(opts=["optim.warmup_epochs=101"])


def test_scaling_rule():
    cfg = load_cfg(opts=["optim.base_lr=0.004", "train.batch_size_per_gpu=32"])
    assert apply_scaling_rules_to_cfg(cfg, world_size=8).optim.lr == 0.004 * math.sqrt(32 * 8 / 1024.0)
    assert cfg.optim.base_lr == 0.004  # the unscaled value is kept
    assert apply_scaling_rules_to_cfg(cfg).optim.lr == 0.004 * math.sqrt(32 / 1024.0)  # one process
    cfg.optim.scaling_rule = "linear_wrt_256"
    with pytest.raises(ConfigValueError, match="linear_wrt_256"):
        apply_scaling_rules_to_cfg(cfg)


def test_setting_lr_directly_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="dinov2"):
        load_cfg(opts=["optim.lr=0.1"])
    assert "set optim.base_lr instead" in caplog.text


def test_reloading_a_runs_config_does_not_warn_about_its_lr(tmp_path, caplog):
    """A written config.yaml holds the scaled optim.lr beside optim.base_lr: reading it back (eval, scripts) is no
    attempt to set the learning rate."""
    cfg = apply_scaling_rules_to_cfg(load_cfg(opts=["train.batch_size_per_gpu=32"], output_dir=str(tmp_path)))
    assert cfg.optim.lr > 0
    path = write_config(cfg, tmp_path)
    with caplog.at_level(logging.WARNING, logger="dinov2"):
        load_cfg(path)
    assert "set optim.base_lr instead" not in caplog.text


@pytest.mark.parametrize(
    "given, expected",
    [
        ("dinov2/configs/train/vitl16_short.yaml", "train/vitl16_short.yaml"),
        ("/somewhere/else/dinov2/configs/eval/vits14_pretrain.yaml", "eval/vits14_pretrain.yaml"),
        ("configs/train/vitg14.yaml", "train/vitg14.yaml"),
        ("train/vitl14", "train/vitl14.yaml"),
        ("ssl_default_config.yaml", "ssl_default_config.yaml"),
    ],
)
def test_released_paths_resolve_from_any_directory(tmp_path, monkeypatch, given, expected):
    monkeypatch.chdir(tmp_path)
    assert resolve_config_file(given) == CONFIG_DIR / expected


def test_existing_file_wins_over_packaged_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "dinov2" / "configs" / "train"
    local.mkdir(parents=True)
    _write(local / "vitl16_short.yaml", "optim:\n  epochs: 3\n")
    assert resolve_config_file("dinov2/configs/train/vitl16_short.yaml").resolve() == local / "vitl16_short.yaml"
    with pytest.raises(FileNotFoundError, match=r"'nope\.yaml' not found.*train/vitl14"):
        resolve_config_file("nope.yaml")


def test_parser_has_released_flags():
    parser = get_args_parser(add_help=False)
    args = parser.parse_args(
        ["--config-file", "f.yaml", "--no-resume", "--output_dir", "out", "optim.epochs=3", "train.seed=1"]
    )
    assert (args.config_file, args.no_resume, args.output_dir) == ("f.yaml", True, "out")
    assert args.opts == ["optim.epochs=3", "train.seed=1"] and not args.eval_only and args.eval == ""
    assert parser.parse_args(["--output-dir", "o", "--eval-only"]).output_dir == "o"


def test_setup_writes_resolved_config(tmp_path, restore_logging):
    out = tmp_path / "run"
    args = get_args_parser().parse_args(
        ["--config-file", "dinov2/configs/train/vitl14.yaml", "--output-dir", str(out), "train.batch_size_per_gpu=16"]
    )
    cfg = setup(args)
    assert args.output_dir == str(out) and cfg.train.output_dir == str(out)
    assert cfg.optim.lr == 2.0e-04 * math.sqrt(16 / 1024.0)
    written = OmegaConf.load(out / "config.yaml")
    assert written == cfg
    # the written config is itself a valid config file: reloading it gives the same values (lr rescaled again)
    again = apply_scaling_rules_to_cfg(load_cfg(str(out / "config.yaml")))
    assert again == cfg
    assert os.path.isfile(out / "logs" / "log.txt")
    assert "sqrt scaling learning rate" in (out / "logs" / "log.txt").read_text()
