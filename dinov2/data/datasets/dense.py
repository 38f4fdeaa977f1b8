"""Dense-prediction datasets: (image, per-pixel target) pairs from files, and generic folders of them.

A sample is ``(image, target)``: an RGB ``PIL.Image`` and an ``np.ndarray [H, W]`` of the same size, class
indices (``int64``; 255 = ignore) for segmentation or depth in metres (``float32``; 0 = no measurement) for
depth, before the joint ``transforms`` (``dinov2.data.dense_transforms``). Pairs are matched when the dataset
is built; an image without a target, a target without an image, or an image and target of different sizes is
an error naming the files.

Dataset strings::

    SegmentationFolder:root=PATH[:images=images][:labels=labels][:reduce_zero_label=false][:strict=false]
    DepthFolder:root=PATH[:images=images][:depths=depths][:depth_scale=1000][:strict=false]

``root/<images>/**/<name>.<jpg|png|...>`` pairs with ``root/<labels>/**/<name>.png`` (same relative path and
stem); labels are 8-bit (grey or palette) or 16-bit PNGs of class indices; depths are 16-bit PNGs of
``depth * depth_scale`` (1000: millimetres, NYU's encoding).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .extended import ExtendedVisionDataset
from .image_folder import IMG_EXTENSIONS, check_root, find_images

__all__ = [
    "IGNORE_INDEX",
    "DenseDataset",
    "DepthFolder",
    "SegmentationFolder",
    "format_paths",
    "match_pairs",
    "read_depth_map",
    "read_label_map",
    "reduce_zero_label",
]

IGNORE_INDEX = 255
_LISTED = 5


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Class indices ``[H, W]`` int64 from a label PNG (palette / grey 8-bit: the index; 16-bit: the value)."""
    with Image.open(path) as image:
        if image.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
            raise ValueError(
                f"label map {path} has image mode {image.mode}; expected class indices in a palette (P), "
                "grey (L) or 16-bit PNG"
            )
        return np.asarray(image).astype(np.int64)


def read_depth_map(path: str | os.PathLike, depth_scale: float) -> np.ndarray:
    """Depth ``[H, W]`` float32 = stored value / ``depth_scale`` (0 stays 0: no measurement)."""
    with Image.open(path) as image:
        if image.mode not in ("I", "I;16", "I;16B", "I;16L", "L", "F"):
            raise ValueError(f"depth map {path} has image mode {image.mode}; expected a 16-bit PNG")
        return np.asarray(image).astype(np.float32) / np.float32(depth_scale)


def reduce_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg ``reduce_zero_label``: 0 -> 255 (ignored), every other class -1."""
    reduced = label - 1
    reduced[label == 0] = IGNORE_INDEX
    reduced[label == IGNORE_INDEX] = IGNORE_INDEX
    return reduced


def format_paths(paths: Sequence[Path | str]) -> str:
    """The first few paths, comma-separated, with the total count when there are more."""
    shown = ", ".join(str(p) for p in list(paths)[:_LISTED])
    return shown + (f" ... ({len(paths)} in all)" if len(paths) > _LISTED else "")


def match_pairs(
    image_dir: Path, target_dir: Path, target_suffix: str = ".png", what: str = "dataset"
) -> list[tuple[Path, Path]]:
    """``[(image, target)]`` in sorted image order: the target of ``image_dir/a/b.jpg`` is
    ``target_dir/a/b<target_suffix>``. Raises naming the images without target and targets without image."""
    for folder, kind in ((image_dir, "image"), (target_dir, "target")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what}: {kind} folder {str(folder)!r} does not exist")
    images = find_images(image_dir, IMG_EXTENSIONS, recursive=True)
    if not images:
        raise FileNotFoundError(f"{what}: no images in {str(image_dir)!r}")
    targets = {p.relative_to(target_dir).with_suffix("") for p in target_dir.rglob(f"*{target_suffix}")}
    pairs, missing = [], []
    for image in images:
        stem = image.relative_to(image_dir).with_suffix("")
        if stem in targets:
            pairs.append((image, target_dir / stem.with_suffix(target_suffix)))
            targets.discard(stem)
        else:
            missing.append(image)
    if missing or targets:
        lines = [f"{what}: images and targets do not pair up (matched by relative path without extension)"]
        if missing:
            expected = [target_dir / p.relative_to(image_dir).with_suffix(target_suffix) for p in missing]
            lines.append(
                f"  {len(missing)} image(s) without target, e.g. {format_paths(missing)}; "
                f"expected {format_paths(expected)}"
            )
        if targets:
            orphans = sorted(target_dir / t.with_suffix(target_suffix) for t in targets)
            lines.append(f"  {len(orphans)} target(s) without image: {format_paths(orphans)}")
        raise ValueError("\n".join(lines))
    return pairs


class DenseDataset(ExtendedVisionDataset):
    """``(image, target)`` pairs from ``(image path, target path)`` files; ``kind`` is ``segmentation`` or
    ``depth``. ``transforms(image, target)`` is applied jointly."""

    def __init__(
        self,
        *,
        root: str,
        pairs: Sequence[tuple[Path, Path]],
        kind: str,
        reduce_zero_label: bool = False,
        depth_scale: float = 1000.0,
        **options,
    ) -> None:
        """``options``: the dataset options of :class:`ExtendedVisionDataset` (transforms, strict...)."""
        if kind not in ("segmentation", "depth"):
            raise ValueError(f"kind must be 'segmentation' or 'depth', got {kind!r}")
        super().__init__(root, **options)
        self.pairs = [(Path(i), Path(t)) for i, t in pairs]
        self.kind, self.reduce_zero_label, self.depth_scale = kind, bool(reduce_zero_label), float(depth_scale)

    def __len__(self) -> int:
        return len(self.pairs)

    def get_image_data(self, index: int) -> bytes:
        return self.pairs[index][0].read_bytes()

    def describe_sample(self, index: int) -> str:
        return str(self.pairs[index][0])

    def get_target(self, index: int) -> np.ndarray:
        path = self.pairs[index][1]
        if self.kind == "depth":
            return read_depth_map(path, self.depth_scale)
        label = read_label_map(path)
        return reduce_zero_label(label) if self.reduce_zero_label else label

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        used, image = self._load_readable(index % len(self))
        target = self.get_target(used)
        if target.shape != (image.height, image.width):
            image_path, target_path = self.pairs[used]
            raise ValueError(
                f"image {image_path} is {image.width}x{image.height} but its target {target_path} is "
                f"{target.shape[1]}x{target.shape[0]} (width x height): they must have the same size"
            )
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


class SegmentationFolder(DenseDataset):
    """Images and label PNGs in two folders of ``root`` (see the module docstring)."""

    def __init__(self, *, root: str, images: str = "images", labels: str = "labels", reduce_zero_label: bool = False,
                 **kwargs) -> None:  # fmt: skip
        base = check_root(root, "SegmentationFolder")
        pairs = match_pairs(base / images, base / labels, ".png", f"SegmentationFolder({root})")
        super().__init__(root=str(base), pairs=pairs, kind="segmentation", reduce_zero_label=reduce_zero_label,
                         **kwargs)  # fmt: skip


class DepthFolder(DenseDataset):
    """Images and 16-bit depth PNGs (``value / depth_scale`` metres) in two folders of ``root``."""

    def __init__(self, *, root: str, images: str = "images", depths: str = "depths", depth_scale: float = 1000.0,
                 **kwargs) -> None:  # fmt: skip
        base = check_root(root, "DepthFolder")
        pairs = match_pairs(base / images, base / depths, ".png", f"DepthFolder({root})")
        super().__init__(root=str(base), pairs=pairs, kind="depth", depth_scale=depth_scale, **kwargs)
