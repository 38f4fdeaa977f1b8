"""Cosine schedules and the training schedules built from a config, against the released values (exact)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from dinov2.utils.config import apply_scaling_rules_to_cfg, load_cfg
from dinov2.utils.schedules import build_schedulers
from dinov2.utils.utils import CosineScheduler
from tests.conftest import load_reference

NAMES = ["lr", "wd", "momentum", "teacher_temp", "freeze_iters_example"]


@pytest.mark.parametrize("name", NAMES)
def test_cosine_scheduler_equals_reference(name):
    ref = load_reference("schedules.json")[name]
    scheduler = CosineScheduler(**ref["kwargs"])
    assert scheduler.schedule.dtype == np.float64
    assert len(scheduler.schedule) == ref["len"] == len(scheduler)
    assert scheduler.schedule.tolist() == ref["schedule"]  # bitwise equal
    for it, value in ref.get("getitem", {}).items():
        assert scheduler[int(it)] == value
    if "past_end_index" in ref:
        assert scheduler[ref["past_end_index"]] == ref["value_at_past_end_index"]


def test_last_layer_lr_equals_reference():
    ref = load_reference("schedules.json")["last_layer_lr"]
    scheduler = CosineScheduler(**ref["kwargs"])
    scheduler.schedule[: ref["freeze_last_layer_iters"]] = 0
    assert scheduler.schedule.tolist() == ref["schedule"]


def _reference_cfg(tmp_path):
    """A config whose schedules are the reference ones: 100 iterations of 5-iteration epochs, lr 0.002."""
    opts = [
        "train.OFFICIAL_EPOCH_LENGTH=5",
        "optim.epochs=20",
        "optim.warmup_epochs=2",
        "optim.base_lr=0.004",
        "train.batch_size_per_gpu=64",
        "teacher.warmup_teacher_temp_epochs=6",
        "optim.freeze_last_layer_epochs=1",
    ]
    cfg = load_cfg(opts=opts, output_dir=str(tmp_path))
    return apply_scaling_rules_to_cfg(cfg, world_size=4)  # 0.004 * sqrt(64 * 4 / 1024) = 0.002


def test_build_schedulers_equals_reference(tmp_path):
    ref = load_reference("schedules.json")
    schedules = build_schedulers(_reference_cfg(tmp_path))
    assert schedules._fields == ("lr", "wd", "momentum", "teacher_temp", "last_layer_lr")
    for name in schedules._fields:
        assert getattr(schedules, name).schedule.tolist() == ref[name]["schedule"], name
    lr, wd, momentum, teacher_temp, last_layer_lr = schedules  # released tuple order
    assert lr[150] == ref["lr"]["value_at_past_end_index"]
    assert teacher_temp[35] == 0.07 and momentum[10**6] == 1.0


def test_scheduler_rejects_impossible_lengths():
    with pytest.raises(ValueError, match="warmup_iters=20, total_iters=10"):
        CosineScheduler(1.0, 0.0, total_iters=10, warmup_iters=20)


def test_zero_length_teacher_warmup_is_constant():
    scheduler = CosineScheduler(0.07, 0.07, total_iters=0, warmup_iters=0, start_warmup_value=0.04)
    assert len(scheduler.schedule) == 0 and scheduler[0] == 0.07


def test_build_schedulers_reads_only_config_values():
    cfg = OmegaConf.create(
        {
            "train": {"OFFICIAL_EPOCH_LENGTH": 2},
            "optim": dict(
                epochs=3,
                lr=1.0,
                min_lr=0.0,
                warmup_epochs=1,
                weight_decay=0.1,
                weight_decay_end=0.1,
                freeze_last_layer_epochs=2,
            ),
            "teacher": dict(
                momentum_teacher=0.5,
                final_momentum_teacher=0.5,
                teacher_temp=0.2,
                warmup_teacher_temp=0.1,
                warmup_teacher_temp_epochs=1,
            ),
        }
    )
    s = build_schedulers(cfg)
    # warm-up linspace(0, 1, 2), then 0.5 * (1 + cos(pi * i / 4)) for i = 0..3 (the end value is never reached)
    cosine = [0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    np.testing.assert_allclose(s.lr.schedule, [0.0, 1.0, *cosine], rtol=0, atol=1e-15)
    assert s.last_layer_lr.schedule[:4].tolist() == [0.0] * 4
    assert s.last_layer_lr.schedule[4:].tolist() == s.lr.schedule[4:].tolist()
    assert s.teacher_temp.schedule.tolist() == [0.1, 0.2] and s.wd.schedule.tolist() == [0.1] * 6
