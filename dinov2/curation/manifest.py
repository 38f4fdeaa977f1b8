"""Write the manifest of a curated dataset (read by ``Curated:manifest=PATH``, :mod:`dinov2.data.datasets.curated`).

A manifest lists **parts** (source sets): a dataset string, an int64 index file into it and a weight (the
number of times each of its images appears per pass, see the ``Curated`` docstring). Index files are copied
next to the manifest (``parts/<name>.npy``) so that the manifest folder is self-contained, and every part
records the fingerprint of its dataset (size and a hash of sample descriptions) to detect a changed folder.
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

__all__ = ["Part", "write_manifest", "read_manifest"]


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
        if part.dataset not in fingerprints:
            cls, kwargs = parse_dataset_str(part.dataset)
            dataset = cls(**kwargs)
            fingerprints[part.dataset] = dataset_fingerprint(dataset)
        indices = np.asarray(part.indices, dtype=np.int64)
        count = fingerprints[part.dataset]["count"]
        if len(indices) and (indices.min() < 0 or indices.max() >= count):
            raise ValueError(f"part {part.name!r}: indices reach {indices.max()} but {part.dataset!r} has {count}")
        relative = Path("parts") / f"{_file_name(part.name)}.npy"
        save_npy(path.parent / relative, indices)
        entries.append(
            {
                "name": part.name,
                "dataset": part.dataset,
                "indices": relative.as_posix(),
                "count": len(indices),
                "weight": float(part.weight),
                "fingerprint": fingerprints[part.dataset],
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
