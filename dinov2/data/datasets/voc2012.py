"""Pascal VOC 2012 segmentation in the layout of the released mmseg configs (``VOCdevkit/VOC2012``).

``root/JPEGImages/<id>.jpg``, labels ``root/SegmentationClass/<id>.png`` (palette PNGs: 21 classes, 255 =
boundary, ignored) and the ids of ``root/ImageSets/Segmentation/{train,val}.txt``. The augmented training set
(``SegmentationClassAug/<id>.png`` with ``ImageSets/Segmentation/aug.txt``, made by mmseg's ``voc_aug.py`` from
SBD) is added to ``TRAIN`` when present (``aug=auto``, the default), always (``aug=true``: an error if absent)
or never (``aug=false``). Dataset string: ``VOC2012:root=PATH:split=TRAIN|VAL[:aug=auto|true|false]``.
"""

from __future__ import annotations

from pathlib import Path

from .dense import DenseDataset, format_paths
from .image_folder import check_root

__all__ = ["VOC2012"]


def _read_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"VOC2012 split file {str(path)!r} does not exist")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _pairs(root: Path, ids: list[str], label_dir: str) -> list[tuple[Path, Path]]:
    pairs = [(root / "JPEGImages" / f"{i}.jpg", root / label_dir / f"{i}.png") for i in ids]
    missing = [p for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"VOC2012: {len(missing)} listed file(s) do not exist: {format_paths(missing)}")
    return pairs


class VOC2012(DenseDataset):
    """VOC2012 split ``TRAIN`` (train.txt [+ aug.txt]) or ``VAL`` (val.txt); 21 classes + 255 ignore."""

    num_classes = 21

    def __init__(self, *, root: str, split: str = "TRAIN", aug: str | bool = "auto", **kwargs) -> None:
        split = str(getattr(split, "name", split)).upper()
        if split not in ("TRAIN", "VAL"):
            raise ValueError(f"VOC2012 split must be TRAIN or VAL, got {split!r}")
        aug = str(aug).lower()
        if aug not in ("auto", "true", "false"):
            raise ValueError(f"VOC2012 aug must be auto, true or false, got {aug!r}")
        base = check_root(root, "VOC2012")
        sets = base / "ImageSets" / "Segmentation"
        pairs = _pairs(base, _read_ids(sets / ("train.txt" if split == "TRAIN" else "val.txt")), "SegmentationClass")
        aug_list = sets / "aug.txt"
        if split == "TRAIN" and (aug == "true" or (aug == "auto" and aug_list.is_file())):
            pairs += _pairs(base, _read_ids(aug_list), "SegmentationClassAug")
        super().__init__(root=str(base), pairs=pairs, kind="segmentation", **kwargs)
        self.split = split
