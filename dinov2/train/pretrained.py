"""Initialising training from existing weights: ``student.pretrained_weights``, DINOv3's
``student.resume_from_teacher_chkpt`` and ``MODEL.WEIGHTS``.

- ``student.pretrained_weights``: any backbone source that :mod:`dinov2.models.weights` reads (a released hub
  backbone such as ``dinov2_vitl14_pretrain.pth``, a teacher export ``{"teacher": ...}``, a trainer checkpoint
  folder ``<output_dir>/model_<iteration>`` (its teacher backbone), any backbone state dict with the usual
  prefixes/chunking, or a URL), or a **hub name** through the backbone door (``dinov2_vits14_reg``: its released
  weights, downloaded; ``dinov3_vits16:/path/to/file.pth``: the hub architecture with a local file, DINOv3's
  weights being gated). It initialises the student backbone and, through the copy, the backbone that follows the
  student by EMA (the teacher; in distillation the student EMA, the frozen teacher is untouched). Heads start
  fresh, or from ``adapt.pretrained_heads`` (a ``{"teacher": {backbone, dino_head, ibot_head}}`` export: its heads
  go to the student heads and their EMA). Registers / storage tokens load like any other tensor; a RoPE backbone
  (DINOv3) has no position table. Unlike the release (``strict=False``, which silently ignores misnamed keys)
  every key must fit; only the position-embedding table may differ in size (training at 224 px from 518 px hub
  weights), and it is resized bicubically. A misfit raises :class:`~dinov2.models.weights.WeightsMismatchError`
  (a ``RuntimeError``) with the fit report and the config keys to change.
- ``MODEL.WEIGHTS``: a whole training state to start from when not resuming: one of our checkpoint folders
  (``<output_dir>/model_<iteration:07d>``; model weights only, no optimizer or iteration) or a ``.pth`` holding the
  meta-architecture's state dict (``{"model": ...}`` or bare). Keys and shapes must match exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from torch import nn

from dinov2.features import load_backbone
from dinov2.hub import catalog
from dinov2.models.weights import load_backbone_weights, read_checkpoint, read_parts, resize_pos_embed

logger = logging.getLogger("dinov2")

__all__ = [
    "check_hub_arch",
    "hub_source",
    "load_pretrained_heads",
    "load_student_pretrained_weights",
    "load_student_from_teacher_checkpoint",
    "load_model_weights",
    "resize_pos_embed",
]

_HINT_KEYS = ("patch_size", "num_register_tokens", "n_storage_tokens")


def hub_source(value: str) -> tuple[str, str | None] | None:
    """``(hub name, local weights file or None)`` when ``value`` is ``<hub name>`` or ``<hub name>:<file>``, else
    None (a path or URL)."""
    name, _, file = str(value).partition(":")
    if name not in catalog.BACKBONES or (file and file.startswith("//")):
        return None
    return name, (file or None)


def check_hub_arch(name: str, student) -> None:
    """Raise ``ValueError`` naming the ``student.*`` keys to set when hub backbone ``name`` is another arch."""
    entry = catalog.get_backbone(name)
    wanted = {"arch": entry.arch, **{key: entry.kwargs[key] for key in _HINT_KEYS if key in entry.kwargs}}
    wrong = {key: value for key, value in wanted.items() if key in student and student[key] != value}
    if wrong:
        keys = " ".join(f"student.{key}={value}" for key, value in wanted.items())
        have = ", ".join(f"student.{key}={student[key]}" for key in wrong)
        raise ValueError(
            f"student.pretrained_weights={name} is a {entry.arch} backbone but the config has {have}: "
            f"pass {keys} (or another hub name)"
        )


def _hub_state_dict(name: str, file: str | None) -> dict:
    """The hub backbone ``name``'s state dict: its released weights, or ``file`` read into its architecture."""

    try:
        loaded = load_backbone(name, weights=file, device="cpu")
    except ValueError as error:
        if file is None and catalog.get_backbone(name).family.startswith("dinov3"):
            raise ValueError(
                f"student.pretrained_weights={name}: {error}. Pass the downloaded file with the name: "
                f"student.pretrained_weights={name}:/path/to/file.pth"
            ) from error
        raise
    return dict(loaded.model.state_dict())


def load_student_pretrained_weights(model: nn.Module, path_or_url: str) -> None:
    """Load backbone weights into ``model.student.backbone`` and copy them to ``model.student_ema().backbone``.

    Call before sharding. Raises ``WeightsMismatchError`` (a ``RuntimeError``) listing the missing/unexpected keys
    and the config keys to check when the weights do not fit.
    """
    backbone = model.student.backbone
    source = path_or_url
    hub = hub_source(path_or_url)
    if hub is not None:
        check_hub_arch(hub[0], model.cfg.student)
        source = _hub_state_dict(*hub)
    what = f"the student backbone ({model.cfg.student.arch}, patch {model.cfg.student.patch_size})"
    load_backbone_weights(
        backbone,
        source,
        argument="student.pretrained_weights",
        what=what,
        setter="{key}={value}",
        resize_position_table=True,
    )
    model.student_ema().backbone.load_state_dict(backbone.state_dict(), strict=True)
    logger.info("initialised the student backbone and its EMA from %s", path_or_url)


def load_pretrained_heads(model: nn.Module, path: str) -> None:
    """Load the DINO / iBOT heads of a training export (``adapt.pretrained_heads``) into the student heads
    (strictly) and copy them to the EMA heads. Raises ``ValueError`` when the file holds no heads or not the ones
    the config builds, ``RuntimeError`` when their shapes differ from the config's."""
    parts = read_parts(path, argument="adapt.pretrained_heads")
    for name, head in model.student.items():
        if name == "backbone":
            continue
        prefix = f"{name}."
        state_dict = {key[len(prefix) :]: value for key, value in parts.items() if key.startswith(prefix)}
        if not state_dict:
            held = sorted({key.split(".")[0] for key in parts})
            raise ValueError(
                f"adapt.pretrained_heads={path} holds no {name} (it holds: {held}); pass a training export "
                '{"teacher": {backbone, dino_head, ibot_head}} (eval/<tag>_<it>/teacher_checkpoint.pth), or '
                "leave adapt.pretrained_heads empty for fresh heads"
            )
        try:
            head.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            raise RuntimeError(
                f"adapt.pretrained_heads={path}: its {name} does not fit the config's ({error}); set the "
                "dino.* / ibot.* head sizes (head_n_prototypes, head_hidden_dim, head_bottleneck_dim, head_nlayers) "
                "to the file's"
            ) from error
        model.student_ema()[name].load_state_dict(head.state_dict(), strict=True)
    logger.info("initialised the student heads and their EMA from %s", path)


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
