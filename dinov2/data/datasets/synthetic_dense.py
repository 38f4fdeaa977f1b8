"""A small dense-prediction scene set generated on first use: images with known class masks and depths.

Each scene is a receding ground plane (depth from ``far`` at the top row to ``near`` at the bottom row, a random
two-colour gradient, darker with distance) with 1 to 3 shapes in front of it. Each object class is one motif of
:data:`dinov2.data.datasets.synthetic.MOTIFS` in its own colour pair, at a random depth (nearer shapes are drawn
larger and brighter, and occlude farther ones). Targets: class 0 = background, classes 1..``num_classes`` =
shapes; depth in metres, exact per pixel. Files: ``root/{train,val}/{images,labels,depths}/<n>.png`` (labels
8-bit, depths 16-bit millimetres: ``DepthFolder``'s encoding) and ``root/synthetic_dense.json``. Generation is
deterministic (same arguments, same bytes) and atomic (written to a temporary folder, then renamed).

Dataset string: ``SyntheticDense:root=PATH[:split=TRAIN|VAL][:task=segmentation|depth][:num_classes=4]
[:images=64][:val_images=16][:size=160x120][:seed=0]``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dinov2.utils.io import generate_folder_once

from .dense import DenseDataset, match_pairs
from .synthetic import MOTIFS

logger = logging.getLogger("dinov2")

__all__ = ["SyntheticDense", "make_synthetic_dense_dataset", "render_scene", "DEPTH_SCALE"]

DEPTH_SCALE = 1000.0  # depth PNGs hold millimetres
_FAR, _NEAR = 8.0, 2.0  # ground-plane depth at the top and bottom rows (metres)
_MARKER = "synthetic_dense.json"
_CLASS_COLOURS = np.array(
    [[[220, 40, 40], [250, 200, 60]], [[40, 170, 60], [20, 60, 30]], [[40, 80, 220], [240, 240, 240]],
     [[235, 200, 40], [150, 60, 200]], [[150, 60, 200], [30, 190, 200]], [[30, 190, 200], [240, 120, 30]],
     [[240, 120, 30], [25, 25, 25]], [[240, 240, 240], [220, 40, 40]], [[25, 25, 25], [235, 200, 40]],
     [[130, 130, 130], [40, 80, 220]]],
    dtype=np.float32,
)  # fmt: skip


def _shade(depth: np.ndarray | float) -> np.ndarray | float:
    """Brightness factor: nearer is brighter (an appearance cue for depth)."""
    return np.clip(1.25 - 0.09 * np.asarray(depth), 0.45, 1.2)


def render_scene(rng: np.random.Generator, size: tuple[int, int], num_classes: int):
    """One scene: ``(RGB uint8 [H, W, 3], labels uint8 [H, W], depth float32 [H, W] in metres)``."""
    width, height = size
    rows = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]  # [H, 1]
    depth = np.broadcast_to(_FAR + (_NEAR - _FAR) * rows, (height, width)).astype(np.float32)
    top, bottom = rng.uniform(40, 215, size=3), rng.uniform(40, 215, size=3)
    image = (top + (bottom - top) * rows[..., None]) * _shade(depth)[..., None]  # [H, W, 3]
    labels = np.zeros((height, width), dtype=np.uint8)
    names = list(MOTIFS)[:num_classes]
    objects = [(int(rng.integers(1, num_classes + 1)), float(rng.uniform(1.0, 5.0))) for _ in range(rng.integers(1, 4))]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for cls, obj_depth in sorted(objects, key=lambda o: -o[1]):  # far first: nearer shapes occlude
        radius = min(height, width) * rng.uniform(0.5, 0.8) / obj_depth
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.15, 0.85) * width
        angle = rng.uniform(0, 2 * np.pi)
        x, y = (xx - cx) / radius, (yy - cy) / radius
        u, v = x * np.cos(angle) + y * np.sin(angle), y * np.cos(angle) - x * np.sin(angle)
        shape, second = MOTIFS[names[cls - 1]](u, v, np.sqrt(u * u + v * v))
        colours = _CLASS_COLOURS[cls - 1] * _shade(obj_depth)
        image[shape] = colours[0]
        if second is not None:
            image[shape & second] = colours[1]
        labels[shape], depth[shape] = cls, obj_depth
    image = image + rng.normal(0.0, 4.0, size=image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8), labels, depth


def _params(num_classes, images, val_images, size, seed) -> dict:
    return {"num_classes": int(num_classes), "images": int(images), "val_images": int(val_images),
            "size": [int(size[0]), int(size[1])], "seed": int(seed), "version": 1}  # fmt: skip


def _write_split(folder: Path, split: str, count: int, params: dict) -> None:
    for sub in ("images", "labels", "depths"):
        (folder / split / sub).mkdir(parents=True)
    for i in range(count):
        rng = np.random.default_rng([params["seed"], split == "val", i])
        image, labels, depth = render_scene(rng, tuple(params["size"]), params["num_classes"])
        Image.fromarray(image).save(folder / split / "images" / f"{i:05d}.png")
        Image.fromarray(labels).save(folder / split / "labels" / f"{i:05d}.png")
        millimetres = np.round(depth * DEPTH_SCALE).astype(np.uint16)
        Image.fromarray(millimetres).save(folder / split / "depths" / f"{i:05d}.png")


def make_synthetic_dense_dataset(
    root: str | os.PathLike,
    num_classes: int = 4,
    images: int = 64,
    val_images: int = 16,
    size: Sequence[int] = (160, 120),
    seed: int = 0,
) -> Path:
    """Write the scene set to ``root`` unless it is already there (same arguments); returns ``root``.

    ``size`` is (width, height). An existing ``root`` made with other arguments, or a non-empty folder that is
    not such a set, raises.
    """
    params = _params(num_classes, images, val_images, size, seed)
    if not 1 <= params["num_classes"] <= len(_CLASS_COLOURS):
        raise ValueError(f"SyntheticDense num_classes must be in [1, {len(_CLASS_COLOURS)}], got {num_classes}")
    if params["images"] < 1 or params["val_images"] < 1 or min(params["size"]) < 16:
        raise ValueError(f"SyntheticDense needs images >= 1, val_images >= 1 and size >= 16 pixels, got {params}")

    def write(staging: Path) -> None:
        _write_split(staging, "train", params["images"], params)
        _write_split(staging, "val", params["val_images"], params)

    return generate_folder_once(root, params, _MARKER, "SyntheticDense set", write)


class SyntheticDense(DenseDataset):
    """Split ``TRAIN`` / ``VAL`` of the scene set at ``root`` (generated there on first use); ``task`` picks the
    target: ``segmentation`` (``num_classes + 1`` classes, 0 = background) or ``depth`` (metres)."""

    def __init__(self, *, root: str, split: str = "TRAIN", task: str = "segmentation", num_classes: int = 4,
                 images: int = 64, val_images: int = 16, size: Sequence[int] = (160, 120), seed: int = 0,
                 **kwargs) -> None:  # fmt: skip
        split = str(getattr(split, "name", split)).upper()
        if split not in ("TRAIN", "VAL"):
            raise ValueError(f"SyntheticDense split must be TRAIN or VAL, got {split!r}")
        if task not in ("segmentation", "depth"):
            raise ValueError(f"SyntheticDense task must be segmentation or depth, got {task!r}")
        base = make_synthetic_dense_dataset(root, num_classes, images, val_images, size, seed)
        folder = base / split.lower()
        targets = folder / ("labels" if task == "segmentation" else "depths")
        pairs = match_pairs(folder / "images", targets, ".png", f"SyntheticDense({root})")
        super().__init__(root=str(base), pairs=pairs, kind=task, depth_scale=DEPTH_SCALE, **kwargs)
        self.split, self.num_classes = split, int(num_classes) + 1
