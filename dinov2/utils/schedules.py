"""All per-iteration training schedules built from a config, exactly as the released ``train.py`` builds them."""

from __future__ import annotations

import logging
from typing import NamedTuple

from omegaconf import DictConfig

from dinov2.utils.utils import CosineScheduler

logger = logging.getLogger("dinov2")

__all__ = ["TrainingSchedules", "build_schedulers"]


class TrainingSchedules(NamedTuple):
    """The five schedules; unpacks in the released order ``lr, wd, momentum, teacher_temp, last_layer_lr``."""

    lr: CosineScheduler
    wd: CosineScheduler
    momentum: CosineScheduler
    teacher_temp: CosineScheduler
    last_layer_lr: CosineScheduler


def build_schedulers(cfg: DictConfig) -> TrainingSchedules:
    """Schedules over ``optim.epochs * train.OFFICIAL_EPOCH_LENGTH`` iterations (``optim.lr`` must be scaled).

    - lr: warm-up from 0 over ``optim.warmup_epochs``, then cosine from ``optim.lr`` to ``optim.min_lr``;
    - wd: cosine from ``optim.weight_decay`` to ``optim.weight_decay_end``;
    - momentum: cosine from ``teacher.momentum_teacher`` to ``teacher.final_momentum_teacher``;
    - teacher_temp: linear from ``teacher.warmup_teacher_temp`` to ``teacher.teacher_temp`` over
      ``teacher.warmup_teacher_temp_epochs``, then constant;
    - last_layer_lr: the lr schedule with its first ``optim.freeze_last_layer_epochs`` epochs set to 0 (not shifted).
    """
    epoch_length = cfg.train.OFFICIAL_EPOCH_LENGTH
    total_iters = cfg.optim.epochs * epoch_length
    lr = dict(
        base_value=cfg.optim.lr,
        final_value=cfg.optim.min_lr,
        total_iters=total_iters,
        warmup_iters=cfg.optim.warmup_epochs * epoch_length,
        start_warmup_value=0,
    )
    teacher_temp_iters = cfg.teacher.warmup_teacher_temp_epochs * epoch_length
    schedules = TrainingSchedules(
        lr=CosineScheduler(**lr),
        wd=CosineScheduler(cfg.optim.weight_decay, cfg.optim.weight_decay_end, total_iters),
        momentum=CosineScheduler(cfg.teacher.momentum_teacher, cfg.teacher.final_momentum_teacher, total_iters),
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
