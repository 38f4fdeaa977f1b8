"""Reading the frozen teacher's weights (``distillation.checkpoint_path``): every file read of distillation is here.

Accepted sources, all read with ``weights_only=True`` and brought to one layout (``backbone.*``, ``dino_head.*``,
``ibot_head.*``; blocks flat, ``blocks.<i>.*``):

- a teacher export, ``{"teacher": {backbone.*, dino_head.*, ibot_head.*}}`` (``eval/<it>/teacher_checkpoint.pth``
  of our runs and of the release);
- a whole training state, ``{"model": {student.*, teacher.*, ...}}`` (its ``teacher.*`` part);
- one of our checkpoint folders (``<output_dir>/model_<it>``, torch.distributed.checkpoint): only its
  ``teacher.*`` tensors are read;
- a backbone-only file (released hub weights such as ``dinov2_vitg14_pretrain.pth``; no heads);
- any of these with chunked blocks (``blocks.<chunk>.<i>.*``), ``module.`` / ``_orig_mod.`` prefixes;
- a backbone in the peers' formats: a Hugging Face model folder, a ``.safetensors`` file, timm or ``transformers``
  key names (read and converted by :mod:`dinov2.models.formats`; backbone only, so ``teacher_heads: fresh``).

Loss centres (``dino_loss.center``, ``ibot_patch_loss.center``) are never read: the teacher targets use this run's
centring. ``.pth`` files are memory-mapped, so inspecting their keys costs nothing and ranks share the pages.
:func:`teacher_fingerprint` identifies the file's content (size and CRC32) so that a resumed run can refuse a
teacher that changed.
"""

from __future__ import annotations

import os
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch

from dinov2.models import formats
from dinov2.models.convert import chunked_to_flat, strip_prefix

__all__ = ["IGNORE", "PARTS", "read_teacher_shapes", "read_teacher_weights", "teacher_fingerprint"]

IGNORE = "ignore"  # DINOv3's value for a random teacher (tests)
PARTS = ("backbone.", "dino_head.", "ibot_head.")
_WRAPPERS = ("teacher", "model", "state_dict")
_PREFIXES = ("module.", "_orig_mod.")
_MARKER = "COMPLETE"  # written last into our checkpoint folders (dinov2/train/checkpointing.py)


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


def normalise_keys(state_dict: Mapping[str, object]) -> dict[str, object]:
    """Any accepted layout -> ``{backbone.*, dino_head.*, ibot_head.*}`` with flat block names (values untouched)."""
    for name in _WRAPPERS:
        if name in state_dict and isinstance(state_dict[name], Mapping):
            state_dict = state_dict[name]
            break
    for prefix in _PREFIXES:
        state_dict = strip_prefix(state_dict, prefix)
    if any(key.startswith("teacher.") for key in state_dict):  # a whole training state: its teacher
        state_dict = strip_prefix(state_dict, "teacher.", keep_others=False)
    elif any(key.startswith(("student.", "model_ema.")) for key in state_dict):
        raise ValueError(
            "the weights hold a training state without teacher.* tensors (a distillation run's checkpoint?): "
            "use the run's eval/training_<it>/teacher_checkpoint.pth export as the teacher"
        )
    if not any(key.startswith(PARTS) for key in state_dict):  # a bare backbone (hub file)
        state_dict = {f"backbone.{key}": value for key, value in state_dict.items()}
    return chunked_to_flat(state_dict)


def _load_file(path: Path) -> dict:
    """``torch.load`` memory-mapped (lazy) when the file allows it, else read in full; weights only."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:  # files written with torch.save(_use_new_zipfile_serialization=False)
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _dcp_metadata(path: Path) -> dict[str, object]:
    from torch.distributed.checkpoint import FileSystemReader

    return FileSystemReader(str(path)).read_metadata().state_dict_metadata


def _dcp_teacher_entries(path: Path) -> dict[str, tuple[str, object]]:
    """Normalised key -> (DCP key, its tensor metadata) for the model tensors of a checkpoint folder."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    entries = {}
    for dcp_key, meta in _dcp_metadata(path).items():
        if dcp_key.startswith("model.") and isinstance(meta, TensorStorageMetadata):
            entries[dcp_key[len("model.") :]] = (dcp_key, meta)
    normalised = normalise_keys({key: key for key in entries})  # values: the un-normalised model key
    return {new_key: entries[old_key] for new_key, old_key in normalised.items()}


def _read_file(local: Path) -> dict[str, torch.Tensor]:
    """A file (or a Hugging Face / timm model folder) in the normalised layout; the peers' backbone names are
    converted (:mod:`dinov2.models.formats`)."""
    if formats.is_model_folder(local) or local.suffix == ".safetensors":
        raw = formats.read_weights(local)
    else:
        raw = _load_file(local)
    if formats.detect_format(raw) != "dinov2":
        return {f"backbone.{key}": value for key, value in formats.load_backbone_state_dict(raw).items()}
    return normalise_keys(raw)


def read_teacher_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Normalised key -> shape of the teacher weights at ``path``, without reading tensor data."""
    local = _local_path(path)
    if local.is_dir() and not formats.is_model_folder(local):
        return {key: tuple(meta.size) for key, (_, meta) in _dcp_teacher_entries(local).items()}
    return {key: tuple(value.shape) for key, value in _read_file(local).items()}


def read_teacher_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The normalised teacher state dict at ``path`` (CPU tensors; memory-mapped for ``.pth`` files)."""
    local = _local_path(path)
    if not local.is_dir() or formats.is_model_folder(local):
        return _read_file(local)
    from torch.distributed.checkpoint import load as dcp_load

    entries = _dcp_teacher_entries(local)
    buffers = {
        dcp_key[len("model.") :]: torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
        for dcp_key, meta in entries.values()
    }
    with warnings.catch_warnings():  # DCP warns when it loads without a process group
        warnings.filterwarnings("ignore", message=".*(single process|distributed is disabled|uninitialized).*")
        dcp_load({"model": buffers}, checkpoint_id=str(local), no_dist=True)  # every rank reads on its own
    return {key: buffers[dcp_key[len("model.") :]] for key, (dcp_key, _) in entries.items()}


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def teacher_fingerprint(path: str | os.PathLike) -> dict[str, object]:
    """``{"path", "size", "crc32"}`` of the teacher's content (``{"path": "ignore"}`` for a random teacher).

    A file: its size and CRC32. One of our checkpoint folders: its completion marker, which lists the size and
    CRC32 of every file of the checkpoint. Another folder: the sizes and CRC32s of all its files.
    """
    if str(path) == IGNORE:
        return {"path": IGNORE, "size": 0, "crc32": 0}
    local = _local_path(path)
    if local.is_file():
        files = [local]
    elif (local / _MARKER).is_file():
        files = [local / _MARKER]
    else:
        files = sorted(p for p in local.rglob("*") if p.is_file())
    crc = 0
    for file in files:
        crc = zlib.crc32(f"{file.relative_to(local) if file != local else ''}:{_crc32(file)}".encode(), crc)
    return {"path": str(local.resolve()), "size": sum(f.stat().st_size for f in files), "crc32": crc}
