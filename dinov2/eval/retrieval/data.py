"""Revisited Oxford / Paris on disk: the ground truth (released pickle, or the JSON it converts to) and the images.

Layout (as the protocol's download script leaves it)::

    <data-root>/roxford5k/jpg/<name>.jpg        database and query images (names without extension in the lists)
    <data-root>/roxford5k/gnd_roxford5k.pkl     {"imlist": [...], "qimlist": [...], "gnd": [{"easy", "hard",
                                                 "junk", "bbx"}, ...]}; indices 0-based into imlist
    <data-root>/rparis6k/...                    the same for rparis6k

The pickle is read by :mod:`dinov2.utils.safe_pickle` (plain data only, never ``pickle.load``);
:func:`convert_ground_truth` writes it once as JSON (``gnd_<dataset>.json``, preferred when present).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from dinov2.utils import safe_pickle
from dinov2.utils.io import write_json

__all__ = ["DATASETS", "GroundTruth", "ground_truth_path", "read_ground_truth", "convert_ground_truth", "ImageList"]

DATASETS = ("roxford5k", "rparis6k")
IMAGE_EXTENSION = ".jpg"


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    """Database names ``imlist``, query names ``qimlist`` and per query ``easy`` / ``hard`` / ``junk`` (0-based
    database indices) and ``bbx`` ([x1, y1, x2, y2] in the query image, or None)."""

    imlist: list[str]
    qimlist: list[str]
    gnd: list[dict]

    def to_json(self) -> dict:
        return {"imlist": self.imlist, "qimlist": self.qimlist, "gnd": self.gnd}


def _int_list(value, what: str, n_database: int) -> list[int]:
    indices = np.asarray(value if value is not None else [], dtype=np.int64).reshape(-1)
    if len(indices) and (indices.min() < 0 or indices.max() >= n_database):
        raise ValueError(f"{what} has indices outside [0, {n_database}): {indices.min()}..{indices.max()}")
    return indices.tolist()


def _parse(raw, source: str) -> GroundTruth:
    if not isinstance(raw, dict) or not {"imlist", "qimlist", "gnd"} <= set(raw):
        keys = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise ValueError(f"ground truth {source!r} must hold 'imlist', 'qimlist' and 'gnd', got {keys}")
    imlist, qimlist = [str(n) for n in raw["imlist"]], [str(n) for n in raw["qimlist"]]
    if len(raw["gnd"]) != len(qimlist):
        raise ValueError(f"ground truth {source!r}: {len(raw['gnd'])} gnd entries for {len(qimlist)} queries")
    gnd = []
    for q, entry in enumerate(raw["gnd"]):
        where = f"{source} gnd[{q}]"
        parsed = {key: _int_list(entry.get(key), f"{where}[{key!r}]", len(imlist)) for key in ("easy", "hard", "junk")}
        box = entry.get("bbx")
        parsed["bbx"] = None if box is None else [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
        if parsed["bbx"] is not None and len(parsed["bbx"]) != 4:
            raise ValueError(f"{where}['bbx'] must be [x1, y1, x2, y2], got {parsed['bbx']}")
        gnd.append(parsed)
    return GroundTruth(imlist, qimlist, gnd)


def ground_truth_path(data_root: str | os.PathLike, dataset: str) -> Path:
    """``<data-root>/<dataset>/gnd_<dataset>.json`` when converted, else the released ``.pkl``."""
    folder = Path(data_root) / dataset
    converted = folder / f"gnd_{dataset}.json"
    return converted if converted.is_file() else folder / f"gnd_{dataset}.pkl"


def read_ground_truth(path: str | os.PathLike) -> GroundTruth:
    """The ground truth of a released ``gnd_<dataset>.pkl`` (restricted unpickler) or of its JSON conversion."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ground truth {str(path)!r} not found; download gnd_<dataset>.pkl of the revisited protocol into "
            "<data-root>/<dataset>/ (or pass --ground-truth)"
        )
    if path.suffix == ".json":
        try:
            raw = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(
                f"ground truth {str(path)!r} is not valid JSON ({error}); convert the released .pkl again"
            ) from None
    elif path.suffix == ".pkl":
        raw = safe_pickle.load(path)
    else:
        raise ValueError(f"ground truth {str(path)!r}: expected a .pkl (released) or .json (converted) file")
    return _parse(raw, str(path))


def convert_ground_truth(source: str | os.PathLike, target: str | os.PathLike) -> GroundTruth:
    """Read a released ground-truth pickle (safely) and write it as JSON to ``target``; returns it."""
    ground_truth = read_ground_truth(source)
    write_json(target, ground_truth.to_json())
    return ground_truth


class ImageList(Dataset):
    """Images ``<folder>/<name>.jpg`` of ``names`` as ``(transform(image), None)``; ``boxes`` (one
    [x1, y1, x2, y2] or None per image) crop them first, as the protocol prescribes for its queries."""

    def __init__(
        self,
        folder: str | os.PathLike,
        names: Sequence[str],
        transform: Callable,
        boxes: Sequence[Sequence[float] | None] | None = None,
    ):
        self.paths = [Path(folder) / f"{name}{IMAGE_EXTENSION}" for name in names]
        self.boxes = list(boxes) if boxes is not None else [None] * len(self.paths)
        self.transform = transform
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(self.paths)} images are missing, e.g. {missing[:3]}; extract the image "
                f"archives of the dataset flat into {str(folder)!r}"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with Image.open(self.paths[index]) as image:
            image = image.convert("RGB")
        if self.boxes[index] is not None:
            image = image.crop(tuple(self.boxes[index]))  # Pillow rounds fractional coordinates
        return self.transform(image), None
