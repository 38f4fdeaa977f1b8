"""The 12 datasets of the DINOv2 linear transfer suite (paper Table 8, the SimCLR protocol with CUB for Birdsnap):
splits, metrics, and where each is read from under one ``--data-root`` (torchvision's folder names, nothing is
downloaded).

| name | reader (``<data-root>/...``) | train / val / test | metric |
|---|---|---|---|
| food101 | ``Food101`` (food-101/) | train / - / test | top-1 |
| cifar10, cifar100 | ``CIFAR10`` / ``CIFAR100`` (cifar-*-python/) | train / - / test | top-1 |
| sun397 | partition 1 (SUN397/ + Training_01.txt, Testing_01.txt) | train / - / test | top-1 |
| cars | ``StanfordCars`` (stanford_cars/) | train / - / test | top-1 |
| aircraft | ``FGVCAircraft`` variants (fgvc-aircraft-2013b/) | train / val / test | mean per-class |
| voc2007 | VOCdevkit/VOC2007 ImageSets/Main | train / val / test | 11-point mAP |
| dtd | ``DTD`` partition 1 (dtd/) | train / val / test | top-1 |
| pets | ``OxfordIIITPet`` (oxford-iiit-pet/) | trainval / - / test | mean per-class |
| caltech101 | ``Caltech101`` (caltech101/), 30 per class (seeded) | train / - / rest | mean per-class |
| flowers | ``Flowers102`` (flowers-102/) | train / val / test | mean per-class |
| cub | CUB_200_2011/ | train / - / test | top-1 |

With a val split, C is chosen on it and the classifier refit on train + val (SimCLR); otherwise C is chosen on 10 %
of train (the released logistic-regression rule). Any other dataset: image folders (:func:`folder_splits`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from torch.utils.data import Dataset, Subset
from torchvision import datasets as tv

from dinov2.data import make_dataset
from dinov2.data.datasets.transfer import (
    RGBTransform,
    SampleList,
    cub200,
    per_class_split,
    sun397_partition,
    voc2007_classification,
)

__all__ = ["METRICS", "TransferSpec", "TRANSFER_DATASETS", "dataset_splits", "parse_folder_spec", "folder_splits"]

METRICS = ("top1", "mean_per_class", "map11")
CALTECH_PER_CLASS = 30


@dataclasses.dataclass(frozen=True)
class TransferSpec:
    """A dataset of the suite: its metric and ``splits(root, transform, seed) -> {"train", "val" (or None),
    "test"}`` datasets of ``(image, label)`` (VOC: label = row of ``dataset.multi_hot``)."""

    name: str
    metric: str
    splits: Callable[[str, Callable, int], dict[str, Dataset | None]]


def _tv(cls, train_kw: dict, test_kw: dict, val_kw: dict | None = None, **common):
    def splits(root, transform, seed):
        def make(kw):
            return cls(root, **common, **kw, transform=RGBTransform(transform), download=False)

        return {"train": make(train_kw), "val": make(val_kw) if val_kw else None, "test": make(test_kw)}

    return splits


def _files(reader):
    def splits(root, transform, seed):
        return {
            "train": SampleList(*reader(root, "train"), transform),
            "val": None,
            "test": SampleList(*reader(root, "test"), transform),
        }

    return splits


def _voc(root, transform, seed):
    def split(name):
        paths, multi_hot = voc2007_classification(root, name)
        return SampleList(paths, range(len(paths)), transform, multi_hot=multi_hot)

    return {"train": split("train"), "val": split("val"), "test": split("test")}


def _caltech(root, transform, seed):
    full = tv.Caltech101(root, target_type="category", transform=RGBTransform(transform), download=False)
    train, test = per_class_split(full.y, CALTECH_PER_CLASS, seed)
    return {"train": Subset(full, train), "val": None, "test": Subset(full, test)}


_SPLIT = ({"split": "train"}, {"split": "test"})
TRANSFER_DATASETS: dict[str, TransferSpec] = {
    spec.name: spec
    for spec in (
        TransferSpec("food101", "top1", _tv(tv.Food101, *_SPLIT)),
        TransferSpec("cifar10", "top1", _tv(tv.CIFAR10, {"train": True}, {"train": False})),
        TransferSpec("cifar100", "top1", _tv(tv.CIFAR100, {"train": True}, {"train": False})),
        TransferSpec("sun397", "top1", _files(sun397_partition)),
        TransferSpec("cars", "top1", _tv(tv.StanfordCars, *_SPLIT)),
        TransferSpec(
            "aircraft", "mean_per_class", _tv(tv.FGVCAircraft, *_SPLIT, {"split": "val"}, annotation_level="variant")
        ),
        TransferSpec("voc2007", "map11", _voc),
        TransferSpec("dtd", "top1", _tv(tv.DTD, *_SPLIT, {"split": "val"}, partition=1)),
        TransferSpec(
            "pets",
            "mean_per_class",
            _tv(tv.OxfordIIITPet, {"split": "trainval"}, {"split": "test"}, target_types="category"),
        ),
        TransferSpec("caltech101", "mean_per_class", _caltech),
        TransferSpec("flowers", "mean_per_class", _tv(tv.Flowers102, *_SPLIT, {"split": "val"})),
        TransferSpec("cub", "top1", _files(cub200)),
    )
}


def dataset_splits(name: str, root: str | os.PathLike, transform: Callable, seed: int = 0) -> dict:
    """The train / val / test datasets of suite dataset ``name`` under ``root`` (errors name the missing files)."""
    if name not in TRANSFER_DATASETS:
        raise ValueError(f"unknown transfer dataset {name!r}; choose from {', '.join(TRANSFER_DATASETS)}")
    try:
        return TRANSFER_DATASETS[name].splits(str(root), transform, seed)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted..."
        raise FileNotFoundError(
            f"{name} not found under --data-root {str(root)!r} (torchvision: {error}); this evaluation never downloads:"
            " put the dataset there in torchvision's folder layout (README, transfer evaluation)"
        ) from None


def parse_folder_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``NAME:train=DIR:test=DIR[:val=DIR][:metric=top1|mean_per_class]`` -> (name, metric, {role: folder})."""
    name, *items = spec.split(":")
    keys = dict(item.split("=", 1) for item in items if "=" in item)
    metric = keys.pop("metric", "top1")
    if (
        not name
        or set(keys) - {"train", "val", "test"}
        or not {"train", "test"} <= set(keys)
        or metric not in METRICS[:2]
    ):
        raise ValueError(f"--folder {spec!r}: expected NAME:train=DIR:test=DIR[:val=DIR][:metric=top1|mean_per_class]")
    return name, metric, keys


def folder_splits(folders: dict[str, str], transform: Callable) -> dict[str, Dataset | None]:
    """Image folders with class sub-folders (:func:`parse_folder_spec`) as train / val / test datasets."""
    return {
        role: make_dataset(dataset_str=f"ImageFolder:root={Path(folders[role])}", transform=transform)
        if role in folders
        else None
        for role in ("train", "val", "test")
    }
