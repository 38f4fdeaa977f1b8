"""The frozen teacher's weights (``distillation.checkpoint_path``), read by :mod:`dinov2.models.weights`.

Any source that module reads, brought to one layout (``backbone.*``, ``dino_head.*``, ``ibot_head.*``; blocks flat):
a teacher export ``{"teacher": {backbone.*, dino_head.*, ibot_head.*}}`` (``eval/<it>/teacher_checkpoint.pth``), a
whole training state or one of our checkpoint folders (their ``teacher.*`` part), a backbone-only file (a released
hub file; no heads), the peers' formats (Hugging Face folder, ``.safetensors``, timm; backbone only, so
``teacher_heads: fresh``), with chunked blocks and ``module.`` / ``_orig_mod.`` prefixes. Loss centres are never
read: the teacher targets use this run's centring.

A start checks the shapes, then loads the tensors, then takes the fingerprint: the file is opened once (the shapes
read leaves it open for the load, see :mod:`dinov2.models.weights`) and hashed once. Unlike the other weight
arguments, a URL is refused: a resumed run checks that the teacher has not changed, which needs a local file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from dinov2.models import weights

__all__ = ["IGNORE", "PARTS", "read_teacher_shapes", "read_teacher_weights", "teacher_fingerprint"]

IGNORE = "ignore"  # DINOv3's value for a random teacher (tests)
PARTS = weights.PARTS
_ARGUMENT = "distillation.checkpoint_path"


def _local_path(path: str | os.PathLike) -> Path:
    if "://" in str(path):
        raise ValueError(
            f"distillation.checkpoint_path={path!s} is a URL: download the file and pass its local path (a resumed "
            "run checks that the teacher file has not changed, which needs a file it can read)"
        )
    local = Path(path).expanduser()
    if not local.exists():
        raise FileNotFoundError(f"distillation.checkpoint_path={path!s} does not exist")
    return local


def read_teacher_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Normalised key -> shape of the teacher weights at ``path``, without reading tensor data."""
    return weights.read_shapes(_local_path(path), argument=_ARGUMENT)


def read_teacher_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The normalised teacher state dict at ``path`` (CPU tensors; memory-mapped for ``.pth`` files)."""
    return weights.read_parts(_local_path(path), argument=_ARGUMENT)


def teacher_fingerprint(path: str | os.PathLike) -> dict[str, object]:
    """``{"path", "size", "crc32"}`` of the teacher's content (:func:`dinov2.models.weights.fingerprint`);
    ``{"path": "ignore"}`` for a random teacher."""
    if str(path) == IGNORE:
        return {"path": IGNORE, "size": 0, "crc32": 0}
    return weights.fingerprint(_local_path(path), argument=_ARGUMENT)
