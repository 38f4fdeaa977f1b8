"""All per-iteration training schedules built from a config, exactly as the released ``train.py`` builds them.

Two forms, as in DINOv3's release: the DINOv2 form (``optim.*`` / ``teacher.*`` keys, :class:`CosineScheduler`)
and, when the config has a ``schedules`` section, DINOv3's "schedules v2": each of ``schedules.{lr, weight_decay,
momentum, teacher_temp}`` is ``{start, peak, end, warmup_epochs[, cosine_epochs]}`` turned into an array by
:func:`linear_warmup_cosine_decay` (``schedules.lr`` also has ``freeze_last_layer_epochs``). The same form gives
``dino.local_loss_weight_schedule`` and ``gram.loss_weight_schedule`` (:func:`schedule_from_spec`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
from omegaconf import DictConfig, OmegaConf

from dinov2.utils.utils import CosineScheduler

logger = logging.getLogger("dinov2")

__all__ = [
    "ArraySchedule",
    "TrainingSchedules",
    "build_schedulers",
    "linear_warmup_cosine_decay",
    "local_loss_weight_schedule",
    "schedule_from_spec",
]


class ArraySchedule:
    """A per-iteration value held in a float64 array of the run's length (DINOv3's schedules v2).

    Unlike :class:`CosineScheduler`, an iteration past the end is an error (as released), not the final value.
    """

    def __init__(self, schedule: np.ndarray, name: str = "schedule"):
        self.schedule = schedule
        self.name = name

    def __len__(self) -> int:
        return len(self.schedule)

    def __getitem__(self, it: int) -> float:
        if not 0 <= it < len(self.schedule):
            raise IndexError(
                f"{self.name} has {len(self.schedule)} iterations (optim.epochs * train.OFFICIAL_EPOCH_LENGTH), "
                f"iteration {it} is past its end: raise optim.epochs"
            )
        return self.schedule[it]


class TrainingSchedules(NamedTuple):
    """The five schedules; unpacks in the released order ``lr, wd, momentum, teacher_temp, last_layer_lr``."""

    lr: CosineScheduler | ArraySchedule
    wd: CosineScheduler | ArraySchedule
    momentum: CosineScheduler | ArraySchedule
    teacher_temp: CosineScheduler | ArraySchedule
    last_layer_lr: CosineScheduler | ArraySchedule


def linear_warmup_cosine_decay(
    start: float,
    peak: float,
    end: float,
    warmup_iterations: int,
    total_iterations: int,
    cosine_iterations: int | None = None,
) -> np.ndarray:
    """DINOv3's schedule: ``linspace(start, peak, warmup_iterations)`` without its end point, a half cosine from
    ``peak`` to ``end`` over ``cosine_iterations`` (default: the rest; with ``peak < end`` it ramps up), then
    ``end`` until ``total_iterations``. Float64, length ``total_iterations``."""
    if cosine_iterations is None:
        cosine_iterations = total_iterations - warmup_iterations
    remaining = total_iterations - cosine_iterations - warmup_iterations
    if min(warmup_iterations, cosine_iterations, remaining) < 0:
        raise ValueError(
            f"a schedule of {total_iterations} iterations cannot hold {warmup_iterations} warm-up and "
            f"{cosine_iterations} cosine iterations: lower warmup_epochs / cosine_epochs or raise optim.epochs"
        )
    linear = np.linspace(start, peak, warmup_iterations, endpoint=False)
    # The operation order follows the release for bitwise equality.
    cosine = (np.cos(np.linspace(0, np.pi, cosine_iterations)) + 1) / 2
    cosine = (peak - end) * cosine + end
    constant = np.full((remaining,), fill_value=end)
    return np.concatenate([linear, cosine, constant])


def _epochs(spec: Mapping[str, Any], key: str) -> int | None:
    value = spec.get(key)
    return None if value is None else int(value)


def schedule_from_spec(
    spec: Mapping[str, Any], epoch_length: int, total_iterations: int, scale: float = 1.0, name: str = "schedule"
) -> ArraySchedule:
    """The :class:`ArraySchedule` of ``{start, peak, end, warmup_epochs[, cosine_epochs]}`` (epochs of
    ``epoch_length`` iterations); ``scale`` multiplies ``peak`` and ``end`` (the learning-rate scaling rule)."""
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    cosine_epochs = _epochs(spec, "cosine_epochs")
    values = linear_warmup_cosine_decay(
        start=spec["start"],
        peak=spec["peak"] * scale,
        end=spec["end"] * scale,
        warmup_iterations=epoch_length * int(spec["warmup_epochs"]),
        total_iterations=total_iterations,
        cosine_iterations=None if cosine_epochs is None else epoch_length * cosine_epochs,
    )
    return ArraySchedule(values, name)


def _has_v2(cfg: DictConfig) -> bool:
    return OmegaConf.select(cfg, "schedules") is not None


def _build_v2(cfg: DictConfig) -> TrainingSchedules:
    """DINOv3's schedules v2. ``optim.lr`` holds the scaling rule's factor here (``4 * sqrt(batch / 1024)``, set
    by :func:`dinov2.config.apply_scaling_rules`): it multiplies the lr ``peak`` and ``end``, as released."""
    epoch_length = cfg.train.OFFICIAL_EPOCH_LENGTH
    total = epoch_length * cfg.optim.epochs
    specs = cfg.schedules

    def build(key: str, scale: float = 1.0) -> ArraySchedule:
        return schedule_from_spec(specs[key], epoch_length, total, scale, name=f"schedules.{key}")

    lr = build("lr", cfg.optim.lr)
    last_layer_lr = ArraySchedule(lr.schedule.copy(), "schedules.lr (last layer)")
    last_layer_lr.schedule[: epoch_length * int(specs.lr.freeze_last_layer_epochs)] = 0
    logger.info("Schedules v2 ready (lr peak/end scaled by %s)", cfg.optim.lr)
    return TrainingSchedules(
        lr=lr,
        wd=build("weight_decay"),
        momentum=build("momentum"),
        teacher_temp=build("teacher_temp"),
        last_layer_lr=last_layer_lr,
    )


def build_schedulers(cfg: DictConfig) -> TrainingSchedules:
    """Schedules over ``optim.epochs * train.OFFICIAL_EPOCH_LENGTH`` iterations (``optim.lr`` must be scaled).

    With a ``schedules`` section: DINOv3's schedules v2 (see the module docstring). Otherwise:

    - lr: warm-up from 0 over ``optim.warmup_epochs``, then cosine from ``optim.lr`` to ``optim.min_lr``;
    - wd: cosine from ``optim.weight_decay`` to ``optim.weight_decay_end``;
    - momentum: cosine from ``teacher.momentum_teacher`` to ``teacher.final_momentum_teacher``;
    - teacher_temp: linear from ``teacher.warmup_teacher_temp`` to ``teacher.teacher_temp`` over
      ``teacher.warmup_teacher_temp_epochs``, then constant;
    - last_layer_lr: the lr schedule with its first ``optim.freeze_last_layer_epochs`` epochs set to 0 (not shifted).

    ``optim.schedule_trunc_extra`` (DINOv3's key; 0 when absent) truncates the lr, wd and momentum cosines.
    """
    if _has_v2(cfg):
        return _build_v2(cfg)
    epoch_length = cfg.train.OFFICIAL_EPOCH_LENGTH
    total_iters = cfg.optim.epochs * epoch_length
    trunc_extra = OmegaConf.select(cfg, "optim.schedule_trunc_extra", default=None) or 0.0
    lr = dict(
        base_value=cfg.optim.lr,
        final_value=cfg.optim.min_lr,
        total_iters=total_iters,
        warmup_iters=cfg.optim.warmup_epochs * epoch_length,
        start_warmup_value=0,
        trunc_extra=trunc_extra,
    )
    teacher_temp_iters = cfg.teacher.warmup_teacher_temp_epochs * epoch_length
    schedules = TrainingSchedules(
        lr=CosineScheduler(**lr),
        wd=CosineScheduler(cfg.optim.weight_decay, cfg.optim.weight_decay_end, total_iters, trunc_extra=trunc_extra),
        momentum=CosineScheduler(
            cfg.teacher.momentum_teacher, cfg.teacher.final_momentum_teacher, total_iters, trunc_extra=trunc_extra
        ),
        teacher_temp=CosineScheduler(
            base_value=cfg.teacher.teacher_temp,
            final_value=cfg.teacher.teacher_temp,
            total_iters=teacher_temp_iters,
            warmup_iters=teacher_temp_iters,
            start_warmup_value=cfg.teacher.warmup_teacher_temp,
        ),
        last_layer_lr=CosineScheduler(**lr),
    )
    # The released code zeroes the start of the lr schedule rather than using CosineScheduler(freeze_iters=...),
    # which would shift warm-up and cosine; we keep its values.
    schedules.last_layer_lr.schedule[: cfg.optim.freeze_last_layer_epochs * epoch_length] = 0
    logger.info("Schedulers ready.")
    return schedules


def local_loss_weight_schedule(cfg: DictConfig) -> ArraySchedule | None:
    """The weight of the local-crop DINO term per iteration (``dino.local_loss_weight_schedule``) when
    ``dino.reweight_dino_local_loss`` (DINOv3's key) is true, else None."""
    if not OmegaConf.select(cfg, "dino.reweight_dino_local_loss", default=False):
        return None
    epoch_length = cfg.train.OFFICIAL_EPOCH_LENGTH
    total = epoch_length * cfg.optim.epochs
    spec = cfg.dino.local_loss_weight_schedule
    return schedule_from_spec(spec, epoch_length, total, name="dino.local_loss_weight_schedule")
