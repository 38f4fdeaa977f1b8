"""Write the manifest of a curated dataset (read by ``Curated:manifest=PATH``, :mod:`dinov2.data.datasets.curated`).

A manifest lists **parts** (source sets): a dataset string, an int64 index file into it and a weight (the
number of times each of its images appears per pass, see the ``Curated`` docstring). Index files are copied
next to the manifest (``parts/<name>.npy``) so that the manifest folder is self-contained, and every part
records the fingerprint of its dataset (size and a hash of sample descriptions) to detect a changed folder.
Relative paths in the parts' dataset strings are written absolute (from the working directory of the curation), so
the manifest opens the same files from any folder.
"""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dinov2.curation.files import save_npy, write_json
from dinov2.data.datasets.curated import MANIFEST_FORMAT, MANIFEST_VERSION, dataset_fingerprint, read_manifest

logger = logging.getLogger("dinov2")

__all__ = ["Part", "absolute_dataset_str", "write_manifest", "read_manifest"]


@dataclass
class Part:
    """One source set of a curated dataset: ``indices`` (int64) into the dataset ``dataset`` (a dataset string)."""

    name: str
    dataset: str
    indices: np.ndarray
    weight: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)  # provenance of the indices (step, folder, counts)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "part"


_PATH_KEYS = ("root", "extra", "manifest")  # dataset-string values that are file or folder paths


def absolute_dataset_str(dataset_str: str) -> str:
    """``dataset_str`` with its relative paths (``root``, ``extra``, ``manifest``) made absolute from the working
    directory, so that a manifest read from elsewhere (a training run in another folder) opens the same files."""
    name, *tokens = dataset_str.split(":")
    out = [name]
    for token in tokens:
        key, sep, value = token.partition("=")
        if sep and key in _PATH_KEYS and value and not Path(value).expanduser().is_absolute():
            value = str(Path(value).resolve())
        out.append(f"{key}{sep}{value}")
    return ":".join(out)


def write_manifest(path: str | Path, parts: list[Part], provenance: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (JSON) and ``parts/<name>.npy`` beside it; datasets are built once to fingerprint them."""
    from dinov2.data.dataset_strings import parse_dataset_str

    path = Path(path)
    if not parts:
        raise ValueError("a curated dataset needs at least one part (check the pipeline's weights and steps)")
    names = [p.name for p in parts]
    if len(set(names)) != len(names) or len({_file_name(n) for n in names}) != len(names):
        raise ValueError(f"part names must be distinct (also as file names), got {names}")
    fingerprints: dict[str, dict] = {}
    entries = []
    for part in parts:
        if part.weight < 0:
            raise ValueError(f"part {part.name!r} has weight {part.weight}; weights must be >= 0")
        dataset_str = absolute_dataset_str(part.dataset)
        if dataset_str not in fingerprints:
            cls, kwargs = parse_dataset_str(dataset_str)
            fingerprints[dataset_str] = dataset_fingerprint(cls(**kwargs))  # of the absolute paths the reader sees
        indices = np.asarray(part.indices, dtype=np.int64)
        count = fingerprints[dataset_str]["count"]
        if len(indices) and (indices.min() < 0 or indices.max() >= count):
            raise ValueError(f"part {part.name!r}: indices reach {indices.max()} but {part.dataset!r} has {count}")
        relative = Path("parts") / f"{_file_name(part.name)}.npy"
        save_npy(path.parent / relative, indices)
        entries.append(
            {
                "name": part.name,
                "dataset": dataset_str,
                "indices": relative.as_posix(),
                "count": len(indices),
                "weight": float(part.weight),
                "fingerprint": fingerprints[dataset_str],
                "info": part.info,
            }
        )
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "parts": entries,
        "provenance": {"created": created, **(provenance or {})},
    }
    write_json(path, manifest)
    total = sum(e["count"] * e["weight"] for e in entries)
    logger.info("manifest %s: %d parts, %.0f samples per pass", path, len(entries), total)
    return path
