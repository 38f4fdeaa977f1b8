"""Disk space for checkpoints: what a save needs, what is free, and a clear error when it does not fit.

A checkpoint that runs out of space used to die deep inside ``torch.save`` with ``RuntimeError: [enforce fail at
inline_container.cc:672] unexpected pos ...`` (PyTorch's zip writer after a short write) or an ``OSError`` ENOSPC
wrapped in DCP's ``CheckpointException``. :func:`is_disk_full` recognises those, and
:class:`CheckpointDiskFullError` says which folder, how many bytes were needed and free, and what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CheckpointDiskFullError",
    "is_disk_full",
    "no_room_message",
    "free_bytes",
    "folder_bytes",
    "state_bytes",
    "format_bytes",
]

# errno values meaning "no room": the disk is full or the user's quota (common on cluster file systems) is used up
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}
# what those errors look like once PyTorch or DCP turned them into text: the zip writer only sees a short write
_NO_ROOM_TEXT = ("No space left on device", "Disk quota exceeded", "unexpected pos", "file write failed")


class CheckpointDiskFullError(OSError):
    """A checkpoint did not fit on its disk. ``errno`` is ENOSPC; sizes are in bytes (``free`` None: unknown)."""

    def __init__(self, message: str, *, directory: str | os.PathLike, needed: int, free: int | None):
        super().__init__(errno.ENOSPC, message)
        self.directory, self.needed, self.free = Path(directory), needed, free

    def __reduce__(self):  # OSError pickles (errno, strerror) positionally, which this __init__ does not take
        return _rebuild, (self.strerror, str(self.directory), self.needed, self.free)

    def __str__(self) -> str:
        return self.strerror


def _rebuild(message: str, directory: str, needed: int, free: int | None) -> CheckpointDiskFullError:
    return CheckpointDiskFullError(message, directory=directory, needed=needed, free=free)


def format_bytes(n: int | None) -> str:
    """``1234567 -> '1234567 bytes (1.2 MiB)'``; None -> 'an unknown number of bytes'."""
    if n is None:
        return "an unknown number of bytes"
    value, unit = float(n), "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{n} bytes" if unit == "bytes" else f"{n} bytes ({value:.1f} {unit})"


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes an unprivileged user may still write on the file system holding ``path`` (or its nearest existing
    parent); None when the file system cannot tell. Quotas are not seen (a full quota fails at write time)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def folder_bytes(path: str | os.PathLike) -> int:
    """Total size of the files directly in ``path`` (a checkpoint folder is flat)."""
    return sum(entry.stat().st_size for entry in Path(path).iterdir() if entry.is_file())


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def state_bytes(state_dict: Any, *, main_process: bool) -> int:
    """Tensor bytes this process writes when DCP saves ``state_dict``: the local shard of every DTensor, and the
    plain (replicated) tensors on the main process only, since DCP writes each of those once."""
    from torch.distributed.tensor import DTensor

    total = 0
    for tensor in _tensors(state_dict):
        if isinstance(tensor, DTensor):
            total += tensor.to_local().nbytes
        elif main_process:
            total += tensor.nbytes
    return total


def is_disk_full(error: BaseException) -> bool:
    """True when ``error`` (or its cause/context, or a rank's failure inside a DCP ``CheckpointException``) is a
    write that found no room: ENOSPC or EDQUOT, or PyTorch's zip writer reporting a short write."""
    seen: set[int] = set()
    stack: list[Any] = [error]
    while stack:
        exc = stack.pop()
        if not isinstance(exc, BaseException) or id(exc) in seen:
            continue
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            return True
        if any(text in str(exc) for text in _NO_ROOM_TEXT):
            return True
        stack += [exc.__cause__, exc.__context__]
        failures = getattr(exc, "failures", None)  # DCP: {rank: (exception, traceback)}
        if isinstance(failures, dict):
            stack += [f[0] if isinstance(f, tuple) else f for f in failures.values()]
    return False


def no_room_message(
    checkpoint: str,
    directory: str | os.PathLike,
    *,
    needed: int,
    basis: str,
    free: int | None,
    previous: Path | None,
    keep: int,
    failed_write: tuple[int, str, str] | None = None,
) -> str:
    """The :class:`CheckpointDiskFullError` text: refused before writing (``failed_write`` None) or after a write on
    rank ``failed_write[0]`` failed with message ``[1]`` (its temporary folder ``[2]`` removed)."""
    estimate = f"{format_bytes(needed)}, estimated from {basis}"
    if failed_write is None:
        what = f"it needs about {estimate}, but only {format_bytes(free)} are free; nothing was written."
    else:
        rank, error, tmp = failed_write
        size = f"It needs about {estimate}, and the free space could not be measured."
        if free is not None:
            size = f"It needs more than the {format_bytes(free)} free before writing (estimate: {estimate})."
        detail = error.strip().splitlines()[-1][:300]
        what = f"writing ran out of space on rank {rank} ({detail}). {size} The partial folder {tmp} was removed."
    kept = "There is no previous checkpoint."
    if previous is not None:
        kept = f"The previous checkpoint {previous} is intact (a restart resumes from it)."
    fix = "Free space on that disk, or move --output-dir to a larger disk"
    if keep > 1:
        fix = (
            "Free space on that disk, move --output-dir to a larger disk, or lower checkpointing.max_to_keep "
            f"(now {keep}; while a checkpoint is written, {keep + 1} exist)"
        )
    return f"checkpoint {checkpoint} does not fit on the disk of {directory}: {what} {kept} {fix}."
