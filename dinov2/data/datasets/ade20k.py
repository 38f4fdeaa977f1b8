"""ADE20K (SceneParsing ``ADEChallengeData2016``) in the layout of the released mmseg configs.

``root/images/{training,validation}/ADE_*.jpg`` with ``root/annotations/{training,validation}/ADE_*.png``;
labels 1..150 become classes 0..149 and label 0 ("other") is ignored (``reduce_zero_label``, as released).
Dataset string: ``ADE20K:root=PATH:split=TRAIN|VAL[:strict=false]``.
"""

from __future__ import annotations

from .dense import DenseDataset, match_pairs
from .image_folder import check_root

__all__ = ["ADE20K"]

_SPLIT_DIRS = {"TRAIN": "training", "VAL": "validation"}


class ADE20K(DenseDataset):
    """ADE20K split ``TRAIN`` (20,210 images) or ``VAL`` (2,000 images); targets: 150 classes + 255 ignore."""

    num_classes = 150

    def __init__(self, *, root: str, split: str = "TRAIN", **kwargs) -> None:
        split = str(getattr(split, "name", split)).upper()
        if split not in _SPLIT_DIRS:
            raise ValueError(f"ADE20K split must be one of {sorted(_SPLIT_DIRS)}, got {split!r}")
        base = check_root(root, "ADE20K")
        folder = _SPLIT_DIRS[split]
        pairs = match_pairs(base / "images" / folder, base / "annotations" / folder, ".png", f"ADE20K({root}, {split})")
        super().__init__(root=str(base), pairs=pairs, kind="segmentation", reduce_zero_label=True, **kwargs)
        self.split = split
