"""Atomic file writes: a reader sees the old file or the complete new one, never a partial write (JSON results too:
:func:`write_json` with :func:`to_jsonable`).

Every writer in the library that replaces a file (teacher exports, linear-probe checkpoints, results JSON,
markers) goes through :func:`atomic_write`: the data goes to a temporary file in the same folder, is flushed
and fsynced, then renamed over the target (``os.replace`` is atomic on POSIX file systems); on any error the
temporary file is removed and the previous file is untouched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from enum import Enum
from pathlib import Path
from typing import IO, Any

import torch

from dinov2.utils.signals import stop_signals_deferred

__all__ = [
    "atomic_path",
    "atomic_write",
    "atomic_torch_save",
    "atomic_write_text",
    "current_umask",
    "file_crc32",
    "fsync_dir",
    "generate_folder_once",
    "to_jsonable",
    "write_json",
]


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (best effort: some file systems cannot open folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """``with atomic_write(path) as f: f.write(...)``: write to a temporary sibling, then rename over ``path``."""
    with atomic_path(path) as tmp, tmp.open(mode) as f:
        yield f


def current_umask() -> int:
    """The process's file-mode creation mask (read without changing it for longer than the call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_path(path) as tmp: writer(tmp)``: for writers that need a file name (safetensors, numpy memmaps);
    ``tmp`` is renamed over ``path`` once the block succeeds, and removed if it fails. The file gets the mode a plain
    ``open`` would give it (``0o666`` less the umask), not the private ``0o600`` of a temporary file.

    The cluster's stop signals wait until the file is in place (:func:`~dinov2.utils.signals.stop_signals_deferred`):
    a preemption during a teacher export or a probe's checkpoint then requeues the job after the write, not in it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with stop_signals_deferred():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~current_umask())
        try:
            yield Path(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)


def file_crc32(path: str | os.PathLike) -> int:
    """CRC32 of a file's bytes, read in 16 MiB chunks (checkpoint checksums, "this weights file changed")."""
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically (tensors and plain containers only, loadable with weights_only)."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str | Callable[[IO[str]], None]) -> Path:
    """Write ``text`` (or call ``text(f)`` to write it) to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        if callable(text):
            text(f)
        else:
            f.write(text)
    return Path(path)


def to_jsonable(value: Any) -> Any:
    """Convert tensors (0-dim -> number, n-dim -> nested lists), enums, tuples and mappings to JSON types.

    NaN and infinities become ``None`` so the output is strict JSON.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return to_jsonable(value.item() if value.ndim == 0 else value.tolist())
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return to_jsonable(value.item())
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` (converted with :func:`to_jsonable`) as indented JSON, atomically (temp file + rename)."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


def generate_folder_once(
    root: str | os.PathLike, params: dict, marker: str, what: str, write: Callable[[Path], None]
) -> Path:
    """Make the folder ``root`` with ``write(staging_folder)`` unless it is already there, made with ``params``.

    ``write`` fills a temporary sibling folder, which gets the JSON marker file ``marker`` (``params``) and is then
    renamed to ``root``: processes racing to generate the same folder never see a half-written one (the losers'
    rename fails and they use the winner's). A folder made with other ``params``, or a non-empty folder without the
    marker, raises naming ``what``.
    """
    root = Path(root).expanduser()
    marker_path = root / marker
    if marker_path.is_file():
        existing = json.loads(marker_path.read_text())
        if existing != params:
            raise ValueError(
                f"{what} at {str(root)!r} was made with {existing}, not {params}; "
                "use another root or delete that folder"
            )
        return root
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{str(root)!r} exists and is not a {what}; choose an empty or new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    os.chmod(staging, 0o777 & ~current_umask())  # as a plain mkdir would make it, not mkdtemp's private 0o700
    try:
        write(staging)
        (staging / marker).write_text(json.dumps(params))
        if root.exists():
            root.rmdir()  # empty (checked above)
        os.rename(staging, root)
        logging.getLogger("dinov2").info("wrote %s (%s) to %s", what, params, root)
    except OSError:
        if not marker_path.is_file():  # not another process's completed folder
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
