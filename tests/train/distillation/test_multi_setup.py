"""Multi-student set-up on one process: students validated (ranges, divisibility, names), each student's config
merged as defaults <- student file <- base file <- command line, per-student folders; the launcher's flag."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf

from dinov2.run.train import train as train_launcher
from dinov2.train.distillation.multi_setup import (
    check_shared_settings,
    setup_multidistillation,
    student_config,
    wants_multidistillation,
)
from dinov2.train.train import get_args_parser
from dinov2.utils.config import ConfigValueError
from tests.train.distillation.tiny_distill import distill_opts, teacher_run
from tests.train.tiny import FP32_OPTS, TINY_OPTS


@pytest.fixture
def files(tmp_path):
    """A base config (teacher, one student on rank 0, global batch 3) and the student's own file."""
    teacher_config, export, _ = teacher_run(tmp_path)
    base = OmegaConf.from_dotlist([*TINY_OPTS, *FP32_OPTS, *distill_opts(teacher_config, export)])
    del base.student.arch
    base.MODEL = {"META_ARCHITECTURE": "MultiDistillationMetaArch"}
    base.multidistillation = {
        "enabled": True,
        "global_batch_size": 3,
        "students": [{"name": "small", "config_path": str(tmp_path / "small.yaml"), "ranks_range": [0, 1]}],
    }
    OmegaConf.save(base, tmp_path / "base.yaml")
    student = {"student": {"arch": "vit_test_t"}, "dino": {"koleo_loss_weight": 0.5, "head_n_prototypes": 64}}
    OmegaConf.save(OmegaConf.create(student), tmp_path / "small.yaml")
    return tmp_path


def _args(folder, *opts: str, flag: bool = True):
    argv = ["--config-file", str(folder / "base.yaml"), "--output-dir", str(folder / "out")]
    return get_args_parser().parse_args((["--multi-distillation"] if flag else []) + argv + list(opts))


def test_student_config_and_folder(files):
    cfg, subgroup = setup_multidistillation(_args(files, "dino.koleo_loss_weight=0.2"))
    assert subgroup.ranks == (0,) and subgroup.index == 0
    out = files / "out" / "small"
    assert cfg.train.output_dir == str(out) and (out / "config.yaml").is_file()
    assert cfg.student.arch == "vit_test_t"  # from the student file
    assert cfg.dino.koleo_loss_weight == 0.2  # command line > base > student file
    assert cfg.train.batch_size_per_gpu == 3  # ceil(global batch / processes): images each rank loads
    assert cfg.optim.lr == pytest.approx(cfg.optim.base_lr * (3 / 1024) ** 0.5)
    assert OmegaConf.load(out / "config.yaml").student.arch == "vit_test_t"


def test_base_file_wins_with_a_warning(files, caplog):
    base = OmegaConf.load(files / "base.yaml")
    base.dino.koleo_loss_weight = 0.3
    OmegaConf.save(base, files / "base.yaml")
    dinov2_logger = logging.getLogger("dinov2")
    dinov2_logger.addHandler(caplog.handler)
    try:
        cfg, _ = setup_multidistillation(_args(files))
    finally:
        dinov2_logger.removeHandler(caplog.handler)
    assert cfg.dino.koleo_loss_weight == 0.3
    warning = "dino.koleo_loss_weight=0.5 is overridden by the base config (0.3)"
    assert any(warning in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (["multidistillation.global_batch_size=0"], "global_batch_size=0 must be a positive multiple"),
        (["multidistillation.students=[]"], "multidistillation.students is empty"),
        (["multidistillation.students=[{name: a, config_path: x, ranks_range: [0, 2]}]"], r"cover the 1 processes"),
        (["multidistillation.enabled=false", "MODEL.META_ARCHITECTURE=SSLMetaArch"], "needs multidistillation.enabled"),
    ],
)
def test_bad_student_settings(files, opts, message):
    with pytest.raises(ValueError, match=message):
        setup_multidistillation(_args(files, *opts))


def test_config_alone_selects_multidistillation(files):
    assert wants_multidistillation(_args(files, flag=False))
    assert not wants_multidistillation(get_args_parser().parse_args(["--config-file", "train/demo_cpu"]))


def test_slurm_launcher_forwards_the_flag():
    parser = train_launcher.get_train_args_parser(add_help=False)
    assert parser.parse_args(["--multi-distillation", "--config-file", "b.yaml"]).multi_distillation


def test_bad_names_are_config_errors(files):
    base = OmegaConf.load(files / "base.yaml")
    base.multidistillation.students.append({"name": "small", "config_path": "x", "ranks_range": [1, 2]})
    OmegaConf.save(base, files / "base.yaml")
    with pytest.raises(ConfigValueError, match="names .* must differ"):
        setup_multidistillation(_args(files))


def test_students_must_share_teacher_data_and_iterations(files):
    args = _args(files)
    student = {"name": "small", "config_path": str(files / "small.yaml"), "ranks_range": [0, 1]}
    first = student_config(args, student, n_load=2)
    check_shared_settings({"a": first, "b": first.copy()})  # identical: fine
    other = first.copy()
    other.crops.local_crops_number, other.optim.epochs, other.ibot.loss_weight = 4, 3, 0.0
    expected = r"crops: .*\n  - optim.epochs: \{'a': 2, 'b': 3\}\n  - ibot.loss_weight"
    with pytest.raises(ConfigValueError, match=expected):
        check_shared_settings({"a": first, "b": other})
