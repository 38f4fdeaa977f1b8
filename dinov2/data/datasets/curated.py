"""A curated dataset: images picked from other datasets, as listed by a manifest (``Curated:manifest=PATH``).

The manifest (written by ``python -m dinov2.curation run``, format ``dinov2-curated`` version 1) is a JSON file::

    {"format": "dinov2-curated", "version": 1,
     "parts": [{"name": "retrieved/imagenet", "dataset": "ImageFolder:root=/data/pool",
                "indices": "parts/retrieved-imagenet.npy", "count": 40000, "weight": 1.0,
                "fingerprint": {"count": 1000000, "sha256": "..."}}, ...],
     "provenance": {...}}

Each **part** (a source set) names a dataset string and an int64 ``.npy`` of sample indices into that dataset
(relative to the manifest's folder, or absolute; repeats allowed). Parts may share a dataset (built once).

**Weights per source set.** ``weight`` (>= 0, default 1) is the number of times each image of the part appears
per pass over the curated dataset: the part contributes ``floor(w) * count`` samples (``floor(w)`` copies of its
list) plus ``round((w - floor(w)) * count)`` samples of its list drawn without replacement (seeded by the
dataset string's ``seed``). Any sampler then draws a part in proportion to ``weight * count``; ``weight: 0``
leaves a part out. The same rule holds with every sampler, one process or many.

``fingerprint`` (the dataset's size and a hash of the descriptions, e.g. file paths, of its first and last 16
samples, taken when the manifest was written) is checked when the dataset is built (``verify=false`` skips it),
so a folder that changed since curation is reported instead of silently training on other images. Targets are
those of each source dataset (class ids of different parts are not unified; SSL training ignores them).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

logger = logging.getLogger("dinov2")

__all__ = ["MANIFEST_FORMAT", "MANIFEST_VERSION", "Curated", "dataset_fingerprint", "read_manifest"]

MANIFEST_FORMAT = "dinov2-curated"
MANIFEST_VERSION = 1
_FINGERPRINT_SAMPLES = 16


def dataset_fingerprint(dataset) -> dict[str, Any]:
    """``{"count", "sha256"}`` of a dataset: its size and a hash of its first and last 16 sample descriptions."""
    count = len(dataset)
    describe = getattr(dataset, "describe_sample", None)
    digest = hashlib.sha256(str(count).encode())
    if describe is not None:
        n = _FINGERPRINT_SAMPLES
        picked = sorted(set(range(min(count, n))) | set(range(max(0, count - n), count)))
        for index in picked:
            digest.update(b"\0" + str(describe(index)).encode("utf-8", "surrogateescape"))
    return {"count": count, "sha256": digest.hexdigest()}


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest at ``path``, checked for format, version and part keys."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"Curated manifest {str(path)!r} does not exist; pass manifest=<curation output folder>/manifest.json"
        )
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(
            f"{str(path)!r} is not a {MANIFEST_FORMAT} manifest of version {MANIFEST_VERSION} (got format "
            f"{manifest.get('format')!r}, version {manifest.get('version')!r})"
        )
    parts = manifest.get("parts")
    if not parts:
        raise ValueError(f"Curated manifest {str(path)!r} lists no parts")
    for part in parts:
        missing = {"name", "dataset", "indices"} - set(part)
        if missing:
            raise ValueError(f"Curated manifest {str(path)!r}: part {part.get('name', '?')!r} lacks {sorted(missing)}")
        weight = part.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"Curated manifest {str(path)!r}: part {part['name']!r} has weight {weight!r}; use >= 0")
    return manifest


class _Part:
    """One source set: its dataset, sample indices and repeat layout (whole copies, then a drawn remainder)."""

    def __init__(self, spec: dict, dataset, folder: Path, seed: int, position: int):
        self.name, self.dataset = spec["name"], dataset
        path = Path(spec["indices"]) if os.path.isabs(spec["indices"]) else folder / spec["indices"]
        if not path.is_file():
            raise FileNotFoundError(f"Curated part {self.name!r}: indices file {str(path)!r} does not exist")
        self.indices = np.load(path, mmap_mode="r", allow_pickle=False)
        if self.indices.ndim != 1 or not np.issubdtype(self.indices.dtype, np.integer):
            raise ValueError(f"Curated part {self.name!r}: {path} must hold 1-D integers, got {self.indices.dtype}")
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(dataset)):
            raise ValueError(
                f"Curated part {self.name!r}: {path} holds indices up to {self.indices.max()} but {spec['dataset']!r} "
                f"has {len(dataset)} samples; was the manifest made for another dataset?"
            )
        count, weight = len(self.indices), float(spec.get("weight", 1.0))
        self.copies = int(math.floor(weight))
        extra = int(round((weight - self.copies) * count))
        rng = np.random.default_rng([seed, position])
        self.extra = np.sort(rng.choice(count, size=extra, replace=False)) if extra else np.zeros(0, dtype=np.int64)
        self.length = self.copies * count + extra

    def source_index(self, j: int) -> int:
        count = len(self.indices)
        if j < self.copies * count:
            return int(self.indices[j % count])
        return int(self.indices[self.extra[j - self.copies * count]])


class Curated(Dataset):
    """The samples listed by a curation manifest (see the module docstring); ``(image, target)`` like the sources.

    Dataset string: ``Curated:manifest=PATH[:verify=BOOL][:seed=INT][:strict=BOOL]``. ``parse_source`` turns a
    source's dataset string into ``(class, kwargs)``: the dataset-string table hands in its parser (``make_dataset``
    does this), since the table lists this class and so cannot be imported from here.
    """

    def __init__(
        self,
        *,
        manifest: str,
        transforms: Callable | None = None,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        verify: bool = True,
        seed: int = 0,
        strict: bool | None = None,
        parse_source: Callable[[str], tuple[Callable, dict[str, Any]]],
    ) -> None:
        self.manifest_path = Path(manifest).expanduser()
        self.manifest = read_manifest(self.manifest_path)
        self.transforms, self.transform, self.target_transform = transforms, transform, target_transform
        sources: dict[str, Any] = {}
        self.parts: list[_Part] = []
        for position, spec in enumerate(self.manifest["parts"]):
            dataset_str = spec["dataset"]
            if dataset_str not in sources:
                cls, kwargs = parse_source(dataset_str)
                if cls is Curated:
                    raise ValueError(f"Curated part {spec['name']!r}: a manifest cannot list another Curated dataset")
                if strict is not None:
                    kwargs["strict"] = strict
                sources[dataset_str] = cls(**kwargs)
                if verify and "fingerprint" in spec:
                    self._verify(spec, sources[dataset_str])
            self.parts.append(_Part(spec, sources[dataset_str], self.manifest_path.parent, seed, position))
        self.offsets = np.concatenate([[0], np.cumsum([p.length for p in self.parts])]).astype(np.int64)
        logger.info("Curated %s: %s", self.manifest_path, ", ".join(f"{p.name} {p.length}" for p in self.parts))

    def _verify(self, spec: dict, dataset) -> None:
        found = dataset_fingerprint(dataset)
        if found != spec["fingerprint"]:
            raise ValueError(
                f"Curated part {spec['name']!r}: dataset {spec['dataset']!r} changed since curation (fingerprint "
                f"{found} != {spec['fingerprint']} in {self.manifest_path}): restore it, re-run the curation, or "
                "add :verify=false to the dataset string to use it anyway"
            )

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int) -> tuple[_Part, int]:
        """(part, index in its source dataset) of curated sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a Curated dataset of {len(self)} samples")
        position = int(np.searchsorted(self.offsets, index, side="right")) - 1
        part = self.parts[position]
        return part, part.source_index(index - int(self.offsets[position]))

    def describe_sample(self, index: int) -> str:
        part, source_index = self.locate(index)
        describe = getattr(part.dataset, "describe_sample", None)
        return f"{part.name}: " + (describe(source_index) if describe else f"sample {source_index}")

    def __getitem__(self, index: int):
        part, source_index = self.locate(index)
        image, target = part.dataset[source_index]
        if self.transforms is not None:
            return self.transforms(image, target)
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target
