"""Initialising training from existing weights: ``student.pretrained_weights``, DINOv3's
``student.resume_from_teacher_chkpt`` and ``MODEL.WEIGHTS``.

- ``student.pretrained_weights``: any backbone source that :mod:`dinov2.models.weights` reads (a released hub
  backbone such as ``dinov2_vitl14_pretrain.pth``, a teacher export ``{"teacher": ...}``, a trainer checkpoint
  folder ``<output_dir>/model_<iteration>`` (its teacher backbone), any backbone state dict with the usual
  prefixes/chunking, or a URL). It initialises the student backbone and, through the copy, the backbone that
  follows the student by EMA (the teacher; in distillation the student EMA, the frozen teacher is untouched);
  heads start fresh. Unlike the release (``strict=False``, which silently ignores misnamed keys) every key must fit;
  only the position-embedding table may differ in size (training at 224 px from 518 px hub weights), and it is
  resized bicubically. A misfit raises :class:`~dinov2.models.weights.WeightsMismatchError` (a ``RuntimeError``)
  with the fit report and the config keys to change.
- ``MODEL.WEIGHTS``: a whole training state to start from when not resuming: one of our checkpoint folders
  (``<output_dir>/model_<iteration:07d>``; model weights only, no optimizer or iteration) or a ``.pth`` holding the
  meta-architecture's state dict (``{"model": ...}`` or bare). Keys and shapes must match exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from dinov2.models.weights import load_backbone_weights, read_checkpoint, resize_pos_embed

logger = logging.getLogger("dinov2")

__all__ = [
    "load_model_weights",
    "load_student_from_teacher_checkpoint",
    "load_student_pretrained_weights",
    "resize_pos_embed",
]


def load_student_pretrained_weights(model: nn.Module, path_or_url: str) -> None:
    """Load backbone weights into ``model.student.backbone`` and copy them to ``model.student_ema().backbone``.

    Call before sharding. Raises ``WeightsMismatchError`` (a ``RuntimeError``) listing the missing/unexpected keys
    and the config keys to check when the weights do not fit.
    """
    backbone = model.student.backbone
    what = f"the student backbone ({model.cfg.student.arch}, patch {model.cfg.student.patch_size})"
    load_backbone_weights(
        backbone,
        path_or_url,
        argument="student.pretrained_weights",
        what=what,
        setter="{key}={value}",
        resize_position_table=True,
    )
    model.student_ema().backbone.load_state_dict(backbone.state_dict(), strict=True)
    logger.info("initialised the student backbone and its EMA from %s", path_or_url)


# Loss state of a teacher file that is not a module's weights (DINOv3 skips them too).
_LOSS_CENTRES = ("dino_loss.center", "ibot_patch_loss.center")


def load_student_from_teacher_checkpoint(model: nn.Module, path_or_url: str) -> None:
    """DINOv3's ``student.resume_from_teacher_chkpt``: a teacher file (``{"teacher": {backbone.*, dino_head.*,
    ibot_head.*}}``, the export of an earlier stage, heads included) loaded strictly into ``model.student`` (loss
    centres skipped), then copied to ``model.student_ema()``. Call before sharding."""
    checkpoint = read_checkpoint(path_or_url, argument="student.resume_from_teacher_chkpt")
    state = checkpoint.get("teacher", checkpoint)
    state = {key: value for key, value in state.items() if key not in _LOSS_CENTRES}
    try:
        model.student.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RuntimeError(
            f"student.resume_from_teacher_chkpt={path_or_url} does not fit the student ({model.cfg.student.arch}, "
            f"heads {list(model.student.keys())}): {err}. It must be the teacher export of a run with the same "
            "student.*, dino.head_* and ibot.head_* settings; for backbone weights alone use student.pretrained_weights"
        ) from err
    model.student_ema().load_state_dict(model.student.state_dict(), strict=True)
    logger.info("initialised the student (backbone and heads) and its EMA from %s", path_or_url)


def load_model_weights(model: nn.Module, path: str) -> None:
    """Load a whole meta-architecture state (``MODEL.WEIGHTS``) into a possibly sharded ``model``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    source = Path(path).expanduser()
    if source.is_dir():
        from dinov2.train.checkpointing import Checkpointer

        Checkpointer(source.parent).load(source, {"model": model})
        logger.info("initialised the model from checkpoint %s", source)
        return
    checkpoint = read_checkpoint(path, argument="MODEL.WEIGHTS")
    state_dict = checkpoint.get("model", checkpoint)
    try:
        set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True, strict=True))
    except (RuntimeError, KeyError) as err:
        raise RuntimeError(
            f"MODEL.WEIGHTS={path} does not fit the model: {err}. It must hold the whole training state dict "
            "(student.*, teacher.*, loss centres); to start from backbone weights use student.pretrained_weights"
        ) from err
    logger.info("initialised the model from %s", path)
