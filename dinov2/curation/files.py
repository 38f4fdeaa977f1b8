"""On-disk formats of the curation steps: ``.npy`` arrays (never pickled), JSON records, step markers.

- Arrays are written with ``np.save(..., allow_pickle=False)`` through :func:`dinov2.utils.io.atomic_write`,
  so a reader sees the old file or the complete new one. They are read with ``allow_pickle=False`` too.
- A step writes its outputs first and its record ``<name>.json`` last: the record's presence means the step
  is complete. :func:`begin_step` returns True for a complete step run with the same parameters (skip it) and
  raises when the folder holds a step run with different ones (the fix: another output folder, or delete it).
- :func:`write_rows` fills one ``.npy`` from every rank's contiguous slice (each rank writes its rows into a
  memory-mapped file that rank 0 created), so no rank ever holds the whole array.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from dinov2.curation import parallel
from dinov2.utils.io import atomic_write, atomic_write_text, fsync_dir

logger = logging.getLogger("dinov2")

__all__ = [
    "save_npy",
    "load_npy",
    "load_indices",
    "write_json",
    "read_json",
    "begin_step",
    "mark_done",
    "write_rows",
]


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` to ``path`` atomically as a plain ``.npy`` (object arrays are refused)."""
    array = np.asarray(array)
    if array.dtype == object:
        raise TypeError(f"refusing to write an object array to {path}: curation outputs are plain numeric arrays")
    with atomic_write(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
    return Path(path)


def load_npy(path: str | os.PathLike, what: str, mmap: bool = True) -> np.ndarray:
    """Read a ``.npy`` (memory-mapped by default); ``what`` names it in errors (e.g. ``"--embeddings"``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {str(path)!r} does not exist")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as error:  # object arrays need pickle
        raise ValueError(f"{what}: cannot read {str(path)!r} without pickle ({error}); write a numeric .npy") from None


def load_indices(path: str | os.PathLike, what: str, upper: int | None = None, sorted_unique: bool = False):
    """A 1-D int64 index array from ``path``, checked to lie in ``[0, upper)`` (and sorted without repeats)."""
    array = load_npy(path, what, mmap=False)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what}: {str(path)!r} must hold a 1-D integer array, got {array.dtype} {array.shape}")
    array = array.astype(np.int64, copy=False)
    if array.size and (array.min() < 0 or (upper is not None and array.max() >= upper)):
        raise ValueError(
            f"{what}: {str(path)!r} holds indices in [{array.min()}, {array.max()}] outside [0, {upper}); "
            "was it made for another embedding file?"
        )
    if sorted_unique and array.size > 1 and not bool(np.all(np.diff(array) > 0)):
        raise ValueError(f"{what}: {str(path)!r} must be sorted without repeats (e.g. a dedup kept_indices.npy)")
    return array


def write_json(path: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {str(path)!r} does not exist")
    with open(path) as f:
        return json.load(f)


def _normalise(params: Mapping[str, Any]) -> dict:
    return json.loads(json.dumps(dict(params), sort_keys=True, default=str))


def begin_step(folder: str | os.PathLike, name: str, params: Mapping[str, Any]) -> bool:
    """Collective: True when ``folder/<name>.json`` records a complete run with ``params`` (skip the step).

    Otherwise records ``params`` as started (``.<name>.started.json``) and returns False. Raises when the folder
    holds a complete or started run with other parameters: mixing them would corrupt the outputs.
    """
    folder = Path(folder)
    wanted = _normalise(params)
    done, started = folder / f"{name}.json", folder / f".{name}.started.json"
    for path, state in ((done, "complete"), (started, "started")):
        if path.is_file():
            _check_same(read_json(path, name).get("params") or {}, wanted, folder, name, state)
    parallel.barrier()  # every rank has read the records before rank 0 may write one
    if done.is_file():
        logger.info("%s: complete in %s, skipped", name, folder)
        return True
    if parallel.is_main() and not started.is_file():
        write_json(started, {"params": wanted})
    return False


def _check_same(recorded: dict, wanted: dict, folder: Path, name: str, state: str) -> None:
    if recorded == wanted:
        return
    changed = sorted(k for k in set(wanted) | set(recorded) if recorded.get(k) != wanted.get(k))
    raise ValueError(
        f"{str(folder)!r} holds a {state} {name} step run with other parameters (differing: {', '.join(changed)}); "
        "use another output folder, or delete this one to recompute"
    )


def mark_done(folder: str | os.PathLike, name: str, params: Mapping[str, Any], **extra: Any) -> Path:
    """Record ``folder/<name>.json`` (write it after every output of the step; main process only)."""
    return write_json(Path(folder) / f"{name}.json", {"params": _normalise(params), **extra})


def write_rows(path: str | os.PathLike, local: np.ndarray, start: int, total: int) -> Path:
    """Collective: rows ``[start, start + len(local))`` of a ``[total, ...]`` ``.npy`` come from this rank.

    Rank 0 creates a temporary memory-mapped file, every rank writes its rows, rank 0 renames it to ``path``
    (atomic). The ranks' slices must cover ``[0, total)``. Needs a folder shared by all ranks.
    """
    path = Path(path)
    local = np.ascontiguousarray(local)
    tmp = path.with_name(f".{path.name}.partial")
    if parallel.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.lib.format.open_memmap(tmp, mode="w+", dtype=local.dtype, shape=(total, *local.shape[1:])).flush()
    parallel.barrier()
    if len(local):
        out = np.lib.format.open_memmap(tmp, mode="r+")
        out[start : start + len(local)] = local
        out.flush()
        del out
    parallel.barrier()
    if parallel.is_main():
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    parallel.barrier()
    return path
