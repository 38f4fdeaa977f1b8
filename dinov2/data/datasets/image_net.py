"""ImageNet-1k in the released layout: images under ``root``, metadata ``.npy`` files under ``extra``.

Layout (``root``)::

    labels.txt                                   "class_id,class_name" per line
    train/<class_id>/<class_id>_<n>.JPEG
    val/<class_id>/ILSVRC2012_val_<8 digits>.JPEG
    test/ILSVRC2012_test_<8 digits>.JPEG

Metadata (``extra``), written once by ``ImageNet(split=..., root=..., extra=...).dump_extra()`` for
each split, with the released file names and dtypes (existing metadata folders work unchanged):
``entries-<SPLIT>.npy`` (structured: ``actual_index <u4``, ``class_index <u4``, ``class_id U``,
``class_name U``), ``class-ids-<SPLIT>.npy`` and ``class-names-<SPLIT>.npy`` (``U``, by class index;
not for TEST).
"""

from __future__ import annotations

import csv
import logging
import os
from enum import Enum
from pathlib import Path

import numpy as np

from .extended import ExtendedVisionDataset
from .extra_metadata import ExtraMetadata
from .image_folder import check_root, find_images

logger = logging.getLogger("dinov2")

__all__ = ["ImageNet"]

_LABELS_FILE = "labels.txt"
_EXTENSIONS = (".jpeg", ".jpg")


class _Split(Enum):
    TRAIN = "train"
    VAL = "val"
    TEST = "test"

    @property
    def length(self) -> int:
        """Number of images of the split in the full ImageNet-1k (informative; lengths come from ``extra``)."""
        return {_Split.TRAIN: 1_281_167, _Split.VAL: 50_000, _Split.TEST: 100_000}[self]

    def get_dirname(self, class_id: str | None = None) -> str:
        return self.value if class_id is None else os.path.join(self.value, class_id)

    def get_image_relpath(self, actual_index: int, class_id: str | None = None) -> str:
        if self == _Split.TRAIN:
            basename = f"{class_id}_{actual_index}"
        else:
            basename = f"ILSVRC2012_{self.value}_{actual_index:08d}"
        return os.path.join(self.get_dirname(class_id), basename + ".JPEG")

    def parse_image_relpath(self, image_relpath: str) -> tuple[str, int]:
        """``(class_id, actual_index)`` from ``<split>/<class_id>/<name>_<index>.JPEG``."""
        dirname, filename = os.path.split(image_relpath)
        stem = os.path.splitext(filename)[0]
        try:
            return os.path.basename(dirname), int(stem.split("_")[-1])
        except ValueError:
            raise ValueError(
                f"ImageNet {self.name}: cannot read the image number from {image_relpath!r}; expected "
                f"{self.get_image_relpath(1, 'n01440764')!r}-style names"
            ) from None


def _parse_split(split) -> _Split:
    if isinstance(split, _Split):
        return split
    try:
        return _Split[str(split).upper()]
    except KeyError:
        raise ValueError(f"ImageNet split must be one of {', '.join(_Split.__members__)}, got {split!r}") from None


class ImageNet(ExtraMetadata, ExtendedVisionDataset):
    """ImageNet-1k split ``split`` (``ImageNet.Split.TRAIN`` / ``VAL`` / ``TEST`` or their names).

    Targets are class indices (int), ``None`` for TEST. Lengths come from the metadata, so any subset
    laid out the same way works (the release asserts the full split sizes). A missing ``root`` raises
    at construction; missing metadata raises at first use with the command that creates it.
    """

    Split = _Split
    Target = int

    def __init__(self, *, split: _Split | str, root: str, extra: str, **options) -> None:
        """``options``: the dataset options of :class:`ExtendedVisionDataset` (transforms, strict...)."""
        path = check_root(root, "ImageNet")
        super().__init__(str(path), **options)
        self._split = _parse_split(split)
        self._set_extra_root(extra, self._entries_path, f"ImageNet {self._split.name}")

    @property
    def split(self) -> _Split:
        return self._split

    # ------------------------------------------------------------------------------ metadata

    @property
    def _entries_path(self) -> str:
        return f"entries-{self._split.name}.npy"

    @property
    def _class_ids_path(self) -> str:
        return f"class-ids-{self._split.name}.npy"

    @property
    def _class_names_path(self) -> str:
        return f"class-names-{self._split.name}.npy"

    def _dump_extra_call(self) -> str:
        split = f"ImageNet.Split.{self._split.name}"
        return f"ImageNet(split={split}, root={self.root!r}, extra={self._extra_root!r}).dump_extra()"

    def _class_metadata(self, extra_path: str, what: str) -> np.ndarray:
        """Class metadata (``what``: class ids / names), which TEST has not."""
        if self._split == _Split.TEST:
            raise ValueError(f"ImageNet TEST has no {what}")
        return self._cached_extra(extra_path)

    def _get_entries(self) -> np.ndarray:
        return self._cached_extra(self._entries_path)

    def _get_class_ids(self) -> np.ndarray:
        return self._class_metadata(self._class_ids_path, "class ids")

    def _get_class_names(self) -> np.ndarray:
        return self._class_metadata(self._class_names_path, "class names")

    # ------------------------------------------------------------------------------- samples

    def find_class_id(self, class_index: int) -> str:
        return str(self._get_class_ids()[class_index])

    def find_class_name(self, class_index: int) -> str:
        return str(self._get_class_names()[class_index])

    def _image_relpath(self, index: int) -> str:
        entry = self._get_entries()[index]
        return self._split.get_image_relpath(int(entry["actual_index"]), self.get_class_id(index))

    def describe_sample(self, index: int) -> str:
        return os.path.join(self.root, self._image_relpath(index))

    def get_image_data(self, index: int) -> bytes:
        with open(os.path.join(self.root, self._image_relpath(index)), mode="rb") as f:
            return f.read()

    def get_target(self, index: int) -> int | None:
        return None if self._split == _Split.TEST else int(self._get_entries()[index]["class_index"])

    def get_targets(self) -> np.ndarray | None:
        return None if self._split == _Split.TEST else self._get_entries()["class_index"]

    def get_class_id(self, index: int) -> str | None:
        return None if self._split == _Split.TEST else str(self._get_entries()[index]["class_id"])

    def get_class_name(self, index: int) -> str | None:
        return None if self._split == _Split.TEST else str(self._get_entries()[index]["class_name"])

    def __len__(self) -> int:
        return len(self._get_entries())

    # -------------------------------------------------------------------------- dump_extra

    def _load_labels(self) -> dict[str, str]:
        path = os.path.join(self.root, _LABELS_FILE)
        try:
            with open(path, newline="") as f:
                rows = [row for row in csv.reader(f) if row]
        except OSError as error:
            raise FileNotFoundError(
                f"cannot read ImageNet labels file {path!r} (lines 'class_id,class_name')"
            ) from error
        return {row[0].strip(): ",".join(row[1:]).strip() for row in rows}

    def _scan_split(self) -> list[tuple[int, int, str, str]]:
        """``(actual_index, class_index, class_id, class_name)`` for every image of the split directory."""
        split_dir = check_root(os.path.join(self.root, self._split.get_dirname()), f"ImageNet {self._split.name}")
        if self._split == _Split.TEST:
            files = find_images(split_dir, _EXTENSIONS, recursive=False)
            return [(self._split.parse_image_relpath(f.name)[1], 2**32 - 1, "", "") for f in files]
        labels = self._load_labels()
        class_ids = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
        missing = [c for c in class_ids if c not in labels]
        if missing:
            raise ValueError(f"classes {missing[:5]} of {split_dir} are not in {_LABELS_FILE}")
        rows = []
        for class_index, class_id in enumerate(class_ids):
            for file in find_images(split_dir / class_id, _EXTENSIONS, recursive=True):
                relpath = os.path.relpath(file, self.root)
                rows.append((self._split.parse_image_relpath(relpath)[1], class_index, class_id, labels[class_id]))
        return rows

    def _dump_entries(self) -> None:
        rows = self._scan_split()
        if not rows:
            raise ValueError(f"ImageNet {self._split.name}: no .JPEG images under {self.root}/{self._split.value}")
        id_length = max(len(r[2]) for r in rows)
        name_length = max(len(r[3]) for r in rows)
        dtype = np.dtype(
            [
                ("actual_index", "<u4"),
                ("class_index", "<u4"),
                ("class_id", f"U{id_length}"),
                ("class_name", f"U{name_length}"),
            ]
        )
        logger.info("saving %d entries to %s", len(rows), self._get_extra_full_path(self._entries_path))
        self._save_extra(np.array(rows, dtype=dtype), self._entries_path)

    def _dump_class_ids_and_names(self) -> None:
        if self._split == _Split.TEST:
            return
        entries = self._load_extra(self._entries_path)
        class_count = int(entries["class_index"].max()) + 1
        ids = np.empty(class_count, dtype=f"U{max(len(str(c)) for c in entries['class_id'])}")
        names = np.empty(class_count, dtype=f"U{max(len(str(c)) for c in entries['class_name'])}")
        ids[entries["class_index"]] = entries["class_id"]
        names[entries["class_index"]] = entries["class_name"]
        self._save_extra(ids, self._class_ids_path)
        self._save_extra(names, self._class_names_path)

    def dump_extra(self) -> None:
        """Scan ``root/<split>`` (and ``labels.txt``) and write this split's metadata files into ``extra``."""
        self._dump_entries()
        self._dump_class_ids_and_names()


def dump_extra_all_splits(root: str | Path, extra: str | Path) -> None:
    """Write the metadata of every split directory present under ``root`` (convenience)."""
    for split in _Split:
        if os.path.isdir(os.path.join(root, split.value)):
            ImageNet(split=split, root=str(root), extra=str(extra)).dump_extra()
