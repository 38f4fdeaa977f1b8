"""Initialising training from existing weights: ``student.pretrained_weights`` and ``MODEL.WEIGHTS``.

- ``student.pretrained_weights``: a backbone file or URL (a released hub backbone such as
  ``dinov2_vitl14_pretrain.pth``, a teacher export ``{"teacher": ...}``, or any backbone state dict with the usual
  prefixes/chunking). It initialises the student backbone and, through the copy, the backbone that follows the
  student by EMA (the teacher; in distillation the student EMA, the frozen teacher is untouched); heads start
  fresh. Unlike the release (``strict=False``, which silently ignores misnamed keys) every key must fit;
  only the position-embedding table may differ in size (training at 224 px from 518 px hub weights), and it is
  resized bicubically.
- ``MODEL.WEIGHTS``: a whole training state to start from when not resuming: one of our checkpoint folders
  (``<output_dir>/model_<iteration:07d>``; model weights only, no optimizer or iteration) or a ``.pth`` holding the
  meta-architecture's state dict (``{"model": ...}`` or bare). Keys and shapes must match exactly.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dinov2.hub.utils import fetch_state_dict
from dinov2.models.convert import flat_to_chunked, to_backbone_state_dict

logger = logging.getLogger("dinov2")


def _source(path_or_url: str) -> str | Path:
    return path_or_url if "://" in path_or_url else Path(path_or_url).expanduser()


def resize_pos_embed(pos_embed: torch.Tensor, num_positions: int) -> torch.Tensor:
    """Resize a ``[1, 1 + M*M, D]`` position table to ``[1, num_positions, D]`` (square grids, cls kept)."""
    old_grid, new_grid = math.isqrt(pos_embed.shape[1] - 1), math.isqrt(num_positions - 1)
    if old_grid**2 != pos_embed.shape[1] - 1 or new_grid**2 != num_positions - 1:
        raise ValueError(f"cannot resize pos_embed of {pos_embed.shape[1]} positions to {num_positions}: not square")
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    grid = patch_pos.float().reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2)  # [1, D, M, M]
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim).to(pos_embed.dtype)
    return torch.cat((cls_pos, patch_pos), dim=1)


def load_student_pretrained_weights(model: nn.Module, path_or_url: str, block_chunks: int | None = None) -> None:
    """Load backbone weights into ``model.student.backbone`` and copy them to ``model.student_ema().backbone``.

    Call before sharding. Raises ``RuntimeError`` naming the missing/unexpected keys when the file does not fit.
    """
    backbone = model.student.backbone
    state_dict = to_backbone_state_dict(fetch_state_dict(_source(path_or_url)))
    chunks = block_chunks if block_chunks is not None else model.cfg.student.block_chunks
    state_dict = flat_to_chunked(state_dict, depth=backbone.n_blocks, block_chunks=chunks)
    expected = backbone.state_dict()
    pos = state_dict.get("pos_embed")
    if pos is not None and pos.shape != expected["pos_embed"].shape:
        logger.info("resizing pretrained pos_embed from %s to %s", tuple(pos.shape), tuple(expected["pos_embed"].shape))
        state_dict["pos_embed"] = resize_pos_embed(pos, expected["pos_embed"].shape[1])
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [k for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        raise RuntimeError(
            f"student.pretrained_weights={path_or_url} does not fit the student backbone "
            f"({model.cfg.student.arch}, patch {model.cfg.student.patch_size}): missing keys {missing[:8]}, "
            f"unexpected keys {unexpected[:8]}, shape mismatches {mismatched[:8]}. Check student.arch, "
            "student.patch_size, student.num_register_tokens and student.ffn_layer against the file."
        )
    backbone.load_state_dict(state_dict, strict=True)
    model.student_ema().backbone.load_state_dict(backbone.state_dict(), strict=True)
    logger.info("initialised the student backbone and its EMA from %s", path_or_url)


def load_model_weights(model: nn.Module, path: str) -> None:
    """Load a whole meta-architecture state (``MODEL.WEIGHTS``) into a possibly sharded ``model``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    source = Path(path).expanduser()
    if source.is_dir():
        from dinov2.train.checkpointing import Checkpointer

        Checkpointer(source.parent).load(source, {"model": model})
        logger.info("initialised the model from checkpoint %s", source)
        return
    checkpoint = fetch_state_dict(_source(path))
    state_dict = checkpoint.get("model", checkpoint)
    try:
        set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True, strict=True))
    except (RuntimeError, KeyError) as err:
        raise RuntimeError(
            f"MODEL.WEIGHTS={path} does not fit the model: {err}. It must hold the whole training state dict "
            "(student.*, teacher.*, loss centres); to start from backbone weights use student.pretrained_weights"
        ) from err
    logger.info("initialised the model from %s", path)
