"""DINOv3's schedules: the v2 form ``{start, peak, end, warmup_epochs[, cosine_epochs]}`` against the release's
semantics (research sheet dinov3.md §7-§9) and ``optim.schedule_trunc_extra``, each against an independent formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf

import dinov2.utils.config  # noqa: F401  (registers the checks)
from dinov2.config import apply_scaling_rules, load_cfg
from dinov2.utils.schedules import (
    ArraySchedule,
    build_schedulers,
    linear_warmup_cosine_decay,
    local_loss_weight_schedule,
    schedule_from_spec,
)
from dinov2.utils.utils import CosineScheduler


def _half_cosine(peak: float, end: float, n: int) -> np.ndarray:
    """peak -> end over n points, both ends included: end + (peak - end) * (1 + cos(pi * i / (n - 1))) / 2."""
    i = np.arange(n)
    return end + (peak - end) * (1 + np.cos(np.pi * i / (n - 1))) / 2


def test_high_resolution_lr_ramps_up_over_10k_iterations_then_stays():
    # dinov3_vit7b16_high_res_adapt.yaml: start 0, peak 0, end 1.25e-5, warmup 0, cosine 10 epochs of 1000, 30 epochs
    lr = linear_warmup_cosine_decay(0, 0, 1.25e-5, 0, 30_000, 10_000)
    assert lr.dtype == np.float64 and len(lr) == 30_000
    assert lr[0] == 0 and lr[9_999] == 1.25e-5 and (lr[10_000:] == 1.25e-5).all()
    np.testing.assert_allclose(lr[:10_000], _half_cosine(0, 1.25e-5, 10_000), rtol=1e-12, atol=1e-20)
    assert (np.diff(lr[:10_000]) >= 0).all()  # peak < end: the cosine ramps up


def test_gram_weight_of_stage_two():
    # gram.loss_weight_schedule of dinov3_vit7b16_gram_anchor.yaml: 0 for 1000 epochs, cosine to 2.0 over 1 epoch
    spec = {"start": 0, "peak": 0, "end": 2.0, "warmup_epochs": 1000, "cosine_epochs": 1}
    weight = schedule_from_spec(spec, epoch_length=1000, total_iterations=1_200_000)
    assert (weight.schedule[:1_000_000] == 0).all()
    assert weight[1_000_999] == 2.0 and (weight.schedule[1_000_999:] == 2.0).all()
    np.testing.assert_allclose(weight.schedule[1_000_000:1_001_000], _half_cosine(0, 2.0, 1000), rtol=1e-12)


def test_warmup_excludes_its_end_point_and_cosine_fills_the_rest():
    values = linear_warmup_cosine_decay(1.0, 3.0, 0.5, warmup_iterations=4, total_iterations=10)
    np.testing.assert_array_equal(values[:4], [1.0, 1.5, 2.0, 2.5])  # linspace without the end point
    np.testing.assert_allclose(values[4:], _half_cosine(3.0, 0.5, 6), rtol=1e-15)


def test_a_schedule_longer_than_the_run_is_an_error():
    with pytest.raises(ValueError, match="warmup_epochs / cosine_epochs"):
        linear_warmup_cosine_decay(0, 1, 1, warmup_iterations=8, total_iterations=10, cosine_iterations=4)


def test_past_the_end_is_an_error_not_the_final_value():
    schedule = ArraySchedule(np.zeros(3), "schedules.lr")
    assert schedule[2] == 0
    with pytest.raises(IndexError, match="schedules.lr has 3 iterations"):
        schedule[3]


@pytest.mark.parametrize("trunc_extra", [0.25, 1.0])
def test_schedule_trunc_extra_cuts_the_cosine_and_rescales_it(trunc_extra):
    base, final, warmup, total = 2.0, 0.1, 3, 20
    scheduler = CosineScheduler(base, final, total, warmup_iters=warmup, trunc_extra=trunc_extra)
    n = total - warmup
    angles = np.linspace(0, np.pi, int((1 + trunc_extra) * n))[:n]
    shape = (np.cos(angles) + 1) / 2
    expected = final + (base - final) * (shape - shape[-1]) / (1 - shape[-1])
    np.testing.assert_allclose(scheduler.schedule[warmup:], expected, rtol=1e-14)
    assert scheduler.schedule[warmup] == base and scheduler.schedule[-1] == final
    assert len(scheduler) == total


def _tiny_v2(*opts: str):
    spec = "{start: 0, peak: 1.0e-3, end: 1.0e-4, warmup_epochs: 2, freeze_last_layer_epochs: 1}"
    const = "{start: 0.04, peak: 0.04, end: 0.04, warmup_epochs: 0}"
    temp = "{start: 0.04, peak: 0.07, end: 0.07, warmup_epochs: 2}"
    opts = [
        "student.pos_embed_type=rope",
        "train.OFFICIAL_EPOCH_LENGTH=5",
        "optim.epochs=6",
        "train.batch_size_per_gpu=32",
        f"schedules.lr={spec}",
        f"schedules.weight_decay={const}",
        "schedules.momentum={start: 0.994, peak: 0.994, end: 1.0, warmup_epochs: 0}",
        f"schedules.teacher_temp={temp}",
        *opts,
    ]
    return apply_scaling_rules(load_cfg(opts=opts, output_dir="/tmp/unused"), world_size=2)


def test_schedules_v2_from_a_config():
    cfg = _tiny_v2()
    lr, wd, momentum, teacher_temp, last_layer_lr = build_schedulers(cfg)
    scale = 4 * math.sqrt(32 * 2 / 1024.0)  # DINOv3's sqrt_wrt_1024 factor, applied to peak and end only
    np.testing.assert_array_equal(lr.schedule, linear_warmup_cosine_decay(0, 1e-3 * scale, 1e-4 * scale, 10, 30))
    assert (wd.schedule == 0.04).all() and momentum.schedule[0] == 0.994 and momentum.schedule[-1] == 1.0
    np.testing.assert_array_equal(teacher_temp.schedule[:10], np.linspace(0.04, 0.07, 10, endpoint=False))
    assert (last_layer_lr.schedule[:5] == 0).all()
    np.testing.assert_array_equal(last_layer_lr.schedule[5:], lr.schedule[5:])


def test_local_loss_weight_only_when_reweighting():
    assert local_loss_weight_schedule(_tiny_v2()) is None
    cfg = OmegaConf.create(
        {
            "train": {"OFFICIAL_EPOCH_LENGTH": 1000},
            "optim": {"epochs": 1200},
            "dino": {
                "reweight_dino_local_loss": True,
                "local_loss_weight_schedule": {
                    "start": 1,
                    "peak": 1,
                    "end": 0.5,
                    "warmup_epochs": 1000,
                    "cosine_epochs": 1,
                },
            },
        }
    )
    weight = local_loss_weight_schedule(cfg)  # gram_anchor's: 1 until 1M, then a cosine to 0.5 over 1k iterations
    assert weight[999_999] == 1 and weight[1_000_999] == 0.5 and weight[1_199_999] == 0.5
