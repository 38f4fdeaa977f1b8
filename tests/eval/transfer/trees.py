"""Fake on-disk trees of transfer datasets in the layouts torchvision and the dataset creators use (tiny images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dinov2.data.datasets.transfer import VOC_CLASSES


def _save(path: Path, seed: int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def make_dtd(root: Path) -> None:
    """dtd/dtd/images/<class>/<name>.jpg and labels/{train,val,test}1.txt."""
    base = root / "dtd" / "dtd"
    classes = ["banded", "dotted", "zigzagged"]
    lists = {"train": [], "val": [], "test": []}
    for c, name in enumerate(classes):
        for i in range(6):
            rel = f"{name}/{name}_{i:04d}.jpg"
            _save(base / "images" / rel, 10 * c + i)
            lists[("train", "val", "test")[i % 3]].append(rel)
    for split, rels in lists.items():
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(rels) + "\n")


def make_pets(root: Path) -> None:
    """oxford-iiit-pet/images/<Breed>_<i>.jpg and annotations/{trainval,test}.txt (id class species breed)."""
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True, exist_ok=True)
    lines = {"trainval": [], "test": []}
    for c, breed in enumerate(["Abyssinian", "beagle", "Bengal"]):
        for i in range(1, 5):
            _save(base / "images" / f"{breed}_{i}.jpg", 100 + 10 * c + i)
            lines["trainval" if i <= 2 else "test"].append(f"{breed}_{i} {c + 1} {1 + c % 2} 1")
    for split, rows in lines.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")


def make_sun397(root: Path) -> None:
    """SUN397/ClassName.txt, images under SUN397/<letter>/<class>/ (one two-level class) and partition 1 files."""
    base = root / "SUN397"
    classes = ["/a/abbey", "/a/apartment_building/outdoor", "/b/beach"]
    base.mkdir(parents=True, exist_ok=True)
    (base / "ClassName.txt").write_text("\n".join(classes) + "\n")
    train, test = [], []
    for c, name in enumerate(classes):
        for i in range(4):
            rel = f"{name}/sun_{c}{i}.jpg"
            _save(base / rel.lstrip("/"), 200 + 10 * c + i, mode="L" if i == 0 else "RGB")
            (train if i < 2 else test).append(rel)
    (base / "Training_01.txt").write_text("\n".join(train[::-1]) + "\n")
    (base / "Testing_01.txt").write_text("\n".join(test) + "\n")


def make_caltech101(root: Path) -> None:
    """caltech101/101_ObjectCategories/<category>/image_<i>.jpg with the BACKGROUND_Google folder."""
    base = root / "caltech101" / "101_ObjectCategories"
    for c, (name, n) in enumerate([("BACKGROUND_Google", 3), ("accordion", 5), ("airplanes", 4), ("anchor", 2)]):
        for i in range(1, n + 1):
            _save(base / name / f"image_{i:04d}.jpg", 300 + 10 * c + i, mode="L" if i == 1 else "RGB")


def make_voc2007(root: Path) -> dict[str, np.ndarray]:
    """VOCdevkit/VOC2007 JPEGImages and ImageSets/Main/{split}.txt + <class>_{split}.txt; returns the targets."""
    base = root / "VOCdevkit" / "VOC2007"
    main = base / "ImageSets" / "Main"
    main.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    targets = {}
    for s, split in enumerate(("train", "val", "test")):
        ids = [f"{s:02d}{i:04d}" for i in range(6)]
        for i, image_id in enumerate(ids):
            _save(base / "JPEGImages" / f"{image_id}.jpg", 400 + 10 * s + i)
        (main / f"{split}.txt").write_text("\n".join(ids) + "\n")
        flags = rng.choice([-1, -1, 0, 1], size=(len(ids), len(VOC_CLASSES)))
        for k, name in enumerate(VOC_CLASSES):
            rows = [f"{image_id} {flags[i, k]:2d}" for i, image_id in enumerate(ids)]
            (main / f"{name}_{split}.txt").write_text("\n".join(rows) + "\n")
        targets[split] = flags
    return targets


def make_cub(root: Path) -> list[tuple[str, int, bool]]:
    """CUB_200_2011 images.txt, image_class_labels.txt, train_test_split.txt; returns (file, label, is_train)."""
    base = root / "CUB_200_2011"
    rows = []
    for image_id in range(1, 9):
        label = 1 + (image_id % 3)
        rel = f"{label:03d}.Bird_{label}/Bird_{image_id}.jpg"
        _save(base / "images" / rel, 500 + image_id)
        rows.append((rel, label - 1, image_id % 2 == 1))
    (base / "images.txt").write_text("".join(f"{i + 1} {r[0]}\n" for i, r in enumerate(rows)))
    (base / "image_class_labels.txt").write_text("".join(f"{i + 1} {r[1] + 1}\n" for i, r in enumerate(rows)))
    (base / "train_test_split.txt").write_text("".join(f"{i + 1} {int(r[2])}\n" for i, r in enumerate(rows)))
    return rows
