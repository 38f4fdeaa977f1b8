"""Readers of the fine-grained transfer datasets where torchvision's classes fall short (all read from disk, no
download): SUN397's official partitions, PASCAL VOC 2007 multi-label classification, CUB-200-2011, and Caltech-101's
30-images-per-class split; plus :class:`SampleList`, a dataset of (image file, target) pairs.

Every image is converted to RGB before the transform (Caltech-101 and SUN397 hold grayscale images).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = [
    "VOC_CLASSES",
    "SampleList",
    "RGBTransform",
    "sun397_partition",
    "voc2007_classification",
    "cub200",
    "per_class_split",
]

VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


class RGBTransform:
    """``transform(image.convert("RGB"))`` (identity conversion for RGB images)."""

    def __init__(self, transform: Callable | None):
        self.transform = transform

    def __call__(self, image: Image.Image):
        image = image.convert("RGB")
        return self.transform(image) if self.transform is not None else image


class SampleList(Dataset):
    """``(transform(RGB image), target)`` for the files ``paths`` and their ``targets`` (ints); ``multi_hot``
    [N, K] (optional) keeps multi-label targets beside them."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike],
        targets: Sequence[int],
        transform: Callable | None = None,
        multi_hot: np.ndarray | None = None,
    ):
        if len(paths) != len(targets):
            raise ValueError(f"{len(paths)} image files but {len(targets)} targets")
        self.paths, self.targets = [Path(p) for p in paths], [int(t) for t in targets]
        self.transform, self.multi_hot = RGBTransform(transform), multi_hot

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with Image.open(self.paths[index]) as image:
            return self.transform(image), self.targets[index]


def _lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {str(path)!r} not found; put the dataset's split files there")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def sun397_partition(root: str | os.PathLike, split: str, partition: int = 1) -> tuple[list[Path], list[int]]:
    """SUN397 partition ``partition`` (``Training_01.txt`` / ``Testing_01.txt`` in ``<root>/SUN397`` or its
    ``Partitions/`` folder): image files and labels in torchvision ``SUN397``'s class order (``ClassName.txt``)."""
    data = Path(root) / "SUN397"
    classes = [name[3:] for name in _lines(data / "ClassName.txt", "SUN397 classes")]  # "/a/abbey" -> "abbey"
    index = {name: i for i, name in enumerate(classes)}
    name = f"{'Training' if split == 'train' else 'Testing'}_{partition:02d}.txt"
    listing = data / name if (data / name).is_file() else data / "Partitions" / name
    paths, labels = [], []
    for line in _lines(listing, f"SUN397 partition {partition}"):
        parts = line.strip("/").split("/")  # a/abbey/sun_xxx.jpg, or a/apartment_building/outdoor/sun_xxx.jpg
        paths.append(data.joinpath(*parts))
        labels.append(index["/".join(parts[1:-1])])
    return paths, labels


def voc2007_classification(root: str | os.PathLike, split: str) -> tuple[list[Path], np.ndarray]:
    """VOC 2007 ``split`` (train, val, trainval, test) of ``<root>/VOCdevkit/VOC2007``: image files and targets
    [N, 20] int8 from ``ImageSets/Main/<class>_<split>.txt`` (1 present, 0 difficult, -1 absent)."""
    base = Path(root) / "VOCdevkit" / "VOC2007"
    ids = _lines(base / "ImageSets" / "Main" / f"{split}.txt", f"VOC2007 {split}")
    row = {image_id: i for i, image_id in enumerate(ids)}
    targets = np.full((len(ids), len(VOC_CLASSES)), -1, dtype=np.int8)
    for k, name in enumerate(VOC_CLASSES):
        for line in _lines(base / "ImageSets" / "Main" / f"{name}_{split}.txt", f"VOC2007 {name} {split}"):
            image_id, flag = line.split()
            targets[row[image_id], k] = int(flag)
    return [base / "JPEGImages" / f"{image_id}.jpg" for image_id in ids], targets


def cub200(root: str | os.PathLike, split: str) -> tuple[list[Path], list[int]]:
    """CUB-200-2011 (``<root>/CUB_200_2011``: ``images.txt``, ``image_class_labels.txt``,
    ``train_test_split.txt``): image files and labels (0-based) of ``split`` (train or test)."""
    base = Path(root) / "CUB_200_2011"
    files = dict(line.split(maxsplit=1) for line in _lines(base / "images.txt", "CUB images"))
    labels = dict(line.split() for line in _lines(base / "image_class_labels.txt", "CUB labels"))
    is_train = dict(line.split() for line in _lines(base / "train_test_split.txt", "CUB split"))
    wanted = "1" if split == "train" else "0"
    ids = sorted((image_id for image_id, flag in is_train.items() if flag == wanted), key=int)
    return [base / "images" / files[i] for i in ids], [int(labels[i]) - 1 for i in ids]


def per_class_split(labels: Sequence[int], per_class: int, seed: int) -> tuple[list[int], list[int]]:
    """``per_class`` random indices of each class (all of a smaller class) for training, the rest for testing
    (Caltech-101's protocol); reproducible from ``seed``. Returns sorted (train, test) indices."""
    labels = torch.as_tensor(list(labels))
    generator = torch.Generator().manual_seed(seed)
    train = []
    for label in torch.unique(labels).tolist():
        members = torch.nonzero(labels == label)[:, 0]
        train += members[torch.randperm(len(members), generator=generator)[:per_class]].tolist()
    chosen = set(train)
    return sorted(train), [i for i in range(len(labels)) if i not in chosen]
