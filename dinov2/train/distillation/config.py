"""Distillation settings: the teacher's config, checked against the student's.

``distillation.full_cfg_path`` names the teacher's *training* config (a packaged recipe such as
``configs/train/vitg14.yaml``, or the ``config.yaml`` of the teacher's run), merged onto the defaults like any
config. Its ``student.*`` section describes the teacher backbone, its ``dino.*`` / ``ibot.*`` sections the
teacher's heads. Everything that must agree between teacher and student is checked here, from the two configs
alone, before any model is built; each error names both values and the key to change.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dinov2.train.heads import heads_for
from dinov2.utils.config import (
    ConfigValueError,
    merge_onto_defaults,
    read_config_file,
    resolve_config_file,
    validate_config,
)

logger = logging.getLogger("dinov2")

__all__ = ["load_teacher_config"]


def load_teacher_config(cfg: DictConfig) -> DictConfig:
    """The teacher's training config (defaults <- ``distillation.full_cfg_path``), checked against ``cfg``.

    Raises :class:`ConfigValueError` listing every mismatch (patch size, prototype counts, missing teacher heads).
    """
    path = cfg.distillation.full_cfg_path
    if not path:
        raise ConfigValueError(
            "distillation.full_cfg_path is empty: set it to the teacher's training config (its student.* arch and "
            "patch size, its dino/ibot heads), e.g. configs/train/vitg14.yaml or <teacher run>/config.yaml"
        )
    try:
        teacher_cfg = _load(path)
    except (FileNotFoundError, ValueError, OmegaConfBaseException) as error:
        raise ConfigValueError(
            f"distillation.full_cfg_path={path!r} cannot be used as the teacher config: {error}"
        ) from error
    errors = _mismatches(cfg, teacher_cfg, path)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigValueError(f"the teacher ({path}) does not fit the student ({len(errors)} problem(s)):\n{lines}")
    warning = centring_warning(cfg, teacher_cfg)
    if warning:
        logger.warning(warning)
    if cfg.student.drop_path_rate > 0:
        logger.warning(
            "distillation with student.drop_path_rate=%s: the paper distils without stochastic depth "
            "(set student.drop_path_rate=0)",
            cfg.student.drop_path_rate,
        )
    return teacher_cfg


def centring_warning(cfg: DictConfig, teacher_cfg: DictConfig) -> str | None:
    """What to say when ``train.centering`` is not the one the teacher's targets call for, else None.

    Trained teacher heads (``distillation.teacher_heads: checkpoint``) call for the centring they were trained with
    (the teacher config's ``train.centering``): a head trained with softmax centring uses part of its prototypes,
    and Sinkhorn-Knopp, which gives every prototype the same mass in each batch, spreads each image's targets over
    all of them (README, Distillation: the CPU demo's targets go from 0.72 to 0.93 x ln K). Fresh heads call for
    DINOv3's Sinkhorn-Knopp (balanced targets from the first step).
    """
    centring = cfg.train.centering
    if cfg.distillation.teacher_heads == "fresh":
        if centring == "sinkhorn_knopp":
            return None
        return (
            f"distillation with fresh teacher heads and train.centering={centring}: the softmax centre starts at 0 "
            "and follows the frozen teacher's logits; DINOv3 uses sinkhorn_knopp (recommended)"
        )
    trained_with = teacher_cfg.train.centering
    if centring == trained_with:
        return None
    return (
        f"distillation with train.centering={centring}, but the teacher's heads were trained with "
        f"train.centering={trained_with} (its config): targets from another centring disagree with what its heads "
        f"learned (Sinkhorn-Knopp spreads a softmax-centred head's targets over every prototype); set "
        f"train.centering={trained_with}"
    )


def _load(path: str) -> DictConfig:
    """Defaults <- the teacher's config file, resolved and validated (keys checked like any config)."""
    layer = read_config_file(resolve_config_file(path))
    if OmegaConf.select(layer, "optim.lr") is not None:
        layer.optim.lr = 0.0  # a run's config.yaml holds its derived lr; irrelevant for a frozen teacher
    teacher_cfg = merge_onto_defaults(layer, source=f"distillation.full_cfg_path={path!r}")
    OmegaConf.resolve(teacher_cfg)
    validate_config(teacher_cfg)
    return teacher_cfg


def _mismatches(cfg: DictConfig, teacher_cfg: DictConfig, path: str) -> list[str]:
    errors = []
    student_patch, teacher_patch = cfg.student.patch_size, teacher_cfg.student.patch_size
    if student_patch != teacher_patch:
        errors.append(
            f"student.patch_size={student_patch} but the teacher's is {teacher_patch}: teacher and student must cut "
            f"the same patches (they share the iBOT positions); set student.patch_size={teacher_patch}"
        )
    teacher_heads = heads_for(teacher_cfg)
    heads = teacher_heads.names
    if not heads:
        errors.append(f"the teacher config {path} has no heads (dino.loss_weight and ibot.loss_weight are 0)")
        return errors
    student_k, teacher_k = cfg.dino.head_n_prototypes, teacher_cfg.dino.head_n_prototypes
    if student_k != teacher_k:
        errors.append(
            f"dino.head_n_prototypes={student_k} but the teacher's DINO head has {teacher_k} prototypes: the student "
            f"predicts the teacher's prototypes; set dino.head_n_prototypes={teacher_k}"
        )
    if cfg.ibot.loss_weight > 0:
        student_heads = heads_for(cfg)
        student_k, key = student_heads.ibot_prototypes, student_heads.ibot_prototypes_key
        teacher_k = teacher_heads.ibot_prototypes if "ibot_head" in heads else teacher_cfg.dino.head_n_prototypes
        if student_k != teacher_k:
            errors.append(
                f"{key}={student_k} (the student's iBOT prototypes) but the teacher's iBOT logits have {teacher_k} "
                f"prototypes: set {key}={teacher_k}"
            )
    return errors
