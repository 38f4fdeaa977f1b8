"""Any directory of images: class sub-folders (labelled) or a flat folder (unlabelled)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .extended import ExtendedVisionDataset

logger = logging.getLogger("dinov2")

__all__ = ["IMG_EXTENSIONS", "ImageFolder", "UNLABELED_TARGET", "find_images", "check_root"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
UNLABELED_TARGET = -1


def check_root(root: str | os.PathLike, what: str) -> Path:
    """``root`` as a Path; raises ``FileNotFoundError`` naming ``what`` when it is not a directory."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} root {str(root)!r} is not a directory; pass root=<folder with the images>")
    return path


def _is_image(name: str, extensions: Sequence[str]) -> bool:
    return name.lower().endswith(tuple(extensions)) and not name.startswith(".")


def find_images(directory: Path, extensions: Sequence[str], recursive: bool) -> list[Path]:
    """Image files under ``directory``, in torchvision ``ImageFolder`` order (folders sorted by path, then
    file names sorted); symlinks are followed when recursive."""
    if not recursive:
        names = sorted(e.name for e in os.scandir(directory) if e.is_file() and _is_image(e.name, extensions))
        return [directory / name for name in names]
    found = []
    for folder, _, files in sorted(os.walk(directory, followlinks=True)):
        found.extend(Path(folder) / name for name in sorted(files) if _is_image(name, extensions))
    return found


def scan_image_folder(root: Path, extensions: Sequence[str]) -> tuple[list[str], list[tuple[Path, int]]]:
    """``(class names, [(path, target)])``: classes are the sub-folders holding images (sorted), else
    the images directly in ``root`` with target ``UNLABELED_TARGET``."""
    class_dirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    classes, samples = [], []
    for name in class_dirs:
        files = find_images(root / name, extensions, recursive=True)
        if files:
            samples.extend((path, len(classes)) for path in files)
            classes.append(name)
    loose = find_images(root, extensions, recursive=False)
    if classes:
        if loose:
            logger.warning("ImageFolder %s: ignoring %d images outside the class sub-folders", root, len(loose))
        return classes, samples
    return [], [(path, UNLABELED_TARGET) for path in loose]


class ImageFolder(ExtendedVisionDataset):
    """Images under ``root``, in sorted path order.

    - ``root/<class>/**/<image>``: labelled; targets are class indices in sorted folder-name order
      (as ``torchvision.datasets.ImageFolder``), ``classes`` lists the folder names.
    - ``root/<image>`` only (no sub-folder holds images): unlabelled, every target is ``-1``.

    Files with ``extensions`` (case-insensitive; hidden files skipped) count as images. An unreadable
    image is skipped or raises depending on ``strict`` (see :class:`ExtendedVisionDataset`). A missing
    root or a folder without images raises at construction. Dataset string: ``ImageFolder:root=PATH``.
    """

    def __init__(self, *, root: str, extensions: Sequence[str] = IMG_EXTENSIONS, **options) -> None:
        """``options``: the dataset options of :class:`ExtendedVisionDataset` (transforms, strict...)."""
        path = check_root(root, type(self).__name__)
        super().__init__(str(path), **options)
        self.extensions = tuple(e.lower() for e in extensions)
        self.classes, samples = scan_image_folder(path, self.extensions)
        if not samples:
            raise ValueError(
                f"{type(self).__name__}: no images with extensions {', '.join(self.extensions)} in {str(path)!r} "
                "or its sub-folders; put images in root/<class>/ folders or directly in root"
            )
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.samples = [(str(p), t) for p, t in samples]
        self._targets = np.array([t for _, t in samples], dtype=np.int64)

    @property
    def is_labeled(self) -> bool:
        return bool(self.classes)

    def describe_sample(self, index: int) -> str:
        return self.samples[index][0]

    def get_image_data(self, index: int) -> bytes:
        with open(self.samples[index][0], "rb") as f:
            return f.read()

    def get_target(self, index: int) -> int:
        return int(self._targets[index])

    def get_targets(self) -> np.ndarray:
        return self._targets

    def __len__(self) -> int:
        return len(self.samples)
