"""Set-up of a multi-student distillation run: subgroups, one config and one output folder per student.

    torchrun --nproc-per-node 8 dinov2/train/train.py --multi-distillation --config-file base.yaml --output-dir D
    python dinov2/run/train/train.py --nodes 4 --multi-distillation --config-file base.yaml --output-dir D

The base config holds ``MODEL.META_ARCHITECTURE: MultiDistillationMetaArch``, ``multidistillation.*`` (enabled,
the global batch, the students) and ``distillation.*`` (the teacher). Like DINOv3:

- ``students[i].ranks_range`` is the half-open rank range ``[first, last)`` of student ``i``; together the ranges
  must cover the job's processes exactly, and ``global_batch_size`` must be divisible by each student's count;
- a rank's config is defaults <- its student's ``config_path`` <- the base file <- command line (**the base file
  wins**: a key set differently by both is reported with a warning);
- ``train.output_dir`` is ``<output_dir>/<name>`` (config.yaml, logs, checkpoints, exports per student);
- ``train.batch_size_per_gpu`` is the number of images each rank loads, ``ceil(global_batch_size / world)``;
  seeds are ``train.seed + rank``; ``optim.lr`` follows ``optim.scaling_rule`` for the global batch.

The ``--multi-distillation`` flag is DINOv3's; here ``multidistillation.enabled: true`` in the config is enough.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from dinov2.distributed.subgroups import ProcessSubgroup, check_rank_ranges, new_subgroups, scope, world_rank
from dinov2.distributed.subgroups import world_size as job_size
from dinov2.utils.config import (
    ConfigValueError,
    load_cfg,
    load_layers,
    merge_training_layers,
    read_config_file,
    resolve_config_file,
    validate_config,
    write_config,
)

logger = logging.getLogger("dinov2")

__all__ = ["run_multidistillation", "setup_multidistillation", "student_config", "wants_multidistillation"]


def wants_multidistillation(args: argparse.Namespace) -> bool:
    """True with ``--multi-distillation`` or when the config sets ``multidistillation.enabled``."""
    if getattr(args, "multi_distillation", False):
        return True
    if not getattr(args, "config_file", None):
        return False
    layers = OmegaConf.merge(*(layer for layer, _ in load_layers(args.config_file, args.opts)))
    return bool(OmegaConf.select(layers, "multidistillation.enabled", default=False))


def _students(base: DictConfig) -> tuple[list[dict[str, Any]], int]:
    """The validated students and global batch of a base config (errors name the key to change)."""
    md = base.multidistillation
    if not md.enabled:
        raise ConfigValueError("--multi-distillation needs multidistillation.enabled=true in the config")
    students = OmegaConf.to_container(md.students, resolve=True)
    if not students:
        raise ConfigValueError("multidistillation.students is empty: list {name, config_path, ranks_range} per student")
    names = [s["name"] for s in students]
    if len(set(names)) != len(names):
        raise ConfigValueError(f"multidistillation.students names {names} must differ (one output folder each)")
    key = "multidistillation.students.ranks_range"
    ranges = check_rank_ranges([s["ranks_range"] for s in students], job_size(), key)
    batch = md.global_batch_size
    for student, ranks in zip(students, ranges):
        if batch < 1 or batch % len(ranks):
            raise ConfigValueError(
                f"multidistillation.global_batch_size={batch} must be a positive multiple of the {len(ranks)} "
                f"processes of student {student['name']!r} (ranks_range {list(student['ranks_range'])})"
            )
    return students, batch


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def student_config(args: argparse.Namespace, student: dict[str, Any], n_load: int, warn: bool = True) -> DictConfig:
    """Defaults <- student file <- base file <- command line, with the student's output folder and load size
    (``warn``: report the keys the base file overrides)."""
    student_path = resolve_config_file(student["config_path"])
    student_file = read_config_file(student_path)
    base_layers = load_layers(args.config_file, getattr(args, "opts", None))
    cfg = merge_training_layers([(student_file, f"student config {str(student_path)!r}"), *base_layers])
    own, shared = _flat(OmegaConf.to_container(student_file)), _flat(OmegaConf.to_container(base_layers[0][0]))
    for key in sorted(set(own) & set(shared)) if warn else []:
        if own[key] != shared[key]:
            logger.warning("%s: %s=%r is overridden by the base config (%r)", student_path, key, own[key], shared[key])
    base_dir = Path(args.output_dir or cfg.train.output_dir).expanduser().resolve()
    cfg.train.output_dir = str(base_dir / student["name"])
    cfg.train.batch_size_per_gpu = n_load
    OmegaConf.resolve(cfg)
    validate_config(cfg)
    return cfg


# Settings every student must share: all processes run the teacher and the data pipeline together, for the same
# number of iterations (a student that stopped early, or skipped a teacher call, would leave the others waiting).
SHARED_KEYS = (
    "distillation",
    "crops",
    "ibot.mask_sample_probability",
    "ibot.mask_ratio_min_max",
    "train.dataset_path",
    "train.seed",
    "train.OFFICIAL_EPOCH_LENGTH",
    "optim.epochs",
    "compute_precision.teacher",
)


def check_shared_settings(configs: dict[str, DictConfig]) -> None:
    """Raise :class:`ConfigValueError` naming each key of :data:`SHARED_KEYS` (and the use of iBOT) on which the
    students' configs differ."""

    def plain(value: Any) -> Any:
        return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value

    errors = []
    for key in SHARED_KEYS:
        values = {name: plain(OmegaConf.select(cfg, key)) for name, cfg in configs.items()}
        if len({repr(v) for v in values.values()}) > 1:
            errors.append(f"{key}: {values}")
    ibot = {name: cfg.ibot.loss_weight > 0 for name, cfg in configs.items()}
    if len(set(ibot.values())) > 1:
        errors.append(f"ibot.loss_weight > 0 (iBOT on or off): {ibot}")
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigValueError(
            "the students of a multi-distillation run share the teacher, the data and the iterations; these settings "
            f"differ between their configs (set them in the base config):\n{lines}"
        )


def setup_multidistillation(args: argparse.Namespace) -> tuple[DictConfig, ProcessSubgroup]:
    """Subgroups (collective), this rank's student config, its logging, seeds, lr and ``config.yaml``.

    Sets ``args.output_dir`` to the student's folder. Call on every rank after the process group exists.
    """
    from dinov2.logging import setup_logging
    from dinov2.utils.utils import fix_random_seeds

    base = load_cfg(args.config_file, getattr(args, "opts", None), getattr(args, "output_dir", None) or None)
    students, global_batch = _students(base)
    n_load = math.ceil(global_batch / job_size())
    configs = {s["name"]: student_config(args, s, n_load, warn=False) for s in students}
    check_shared_settings(configs)  # on every process, before any collective
    subgroup = new_subgroups([s["ranks_range"] for s in students])
    student = students[subgroup.index]
    cfg = student_config(args, student, n_load)
    args.output_dir = cfg.train.output_dir
    os.makedirs(args.output_dir, exist_ok=True)
    cfg.optim.lr = cfg.optim.base_lr * math.sqrt(global_batch / 1024.0)  # sqrt_wrt_1024 on the global batch
    with scope(subgroup.group):  # logs and config.yaml per student, written by the student's first rank
        setup_logging(output=args.output_dir, level=logging.INFO)
        fix_random_seeds(cfg.train.seed + world_rank())
        logger.info(
            "multi-distillation: student %r (%s) on ranks %s of %d, global batch %d, lr %s",
            student["name"],
            cfg.student.arch,
            list(subgroup.ranks),
            job_size(),
            global_batch,
            cfg.optim.lr,
        )
        if subgroup.rank == 0:
            write_config(cfg, args.output_dir)
    return cfg, subgroup


def run_multidistillation(args: argparse.Namespace, run: Callable[[DictConfig, argparse.Namespace], Any]) -> Any:
    """Set up this rank's student, then ``run(cfg, args)`` with the helpers of ``dinov2.distributed`` scoped to
    the student's subgroup (checkpoints, exports, metrics, Sinkhorn-Knopp and loss averaging per student)."""
    cfg, subgroup = setup_multidistillation(args)
    with scope(subgroup.group):
        return run(cfg, args)
