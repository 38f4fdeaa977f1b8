"""A small labelled image set generated on the fly (real JPEG files) for demos, benchmarks and tests.

Each class is a motif (disc, square, triangle, cross, ring, striped square, target, checkerboard,
dotted disc, star) drawn one or two times per image with random position, size, rotation and colours
over a random two-colour gradient background, plus pixel noise. By default colours are drawn from one palette
shared by all classes, so classes differ by shape and texture, not by mean colour. With ``class_colours``
each class draws its motif in two colours of its own (backgrounds stay random), an easier task that a small
model learns in minutes on a CPU (the demo's). Generation is deterministic: the same arguments give the same
bytes.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dinov2.utils.io import generate_folder_once

from .image_folder import ImageFolder

logger = logging.getLogger("dinov2")

__all__ = ["MOTIFS", "Synthetic", "make_synthetic_dataset", "render_image"]

_PALETTE = np.array(
    [
        [220, 40, 40], [40, 170, 60], [40, 80, 220], [235, 200, 40], [150, 60, 200],
        [30, 190, 200], [240, 120, 30], [240, 240, 240], [25, 25, 25], [130, 130, 130],
    ],
    dtype=np.float32,
)  # fmt: skip
_MARKER = "synthetic.json"
_NOISE_MARGIN = 64


def _disc(u, v, r):
    return r <= 1.0, None


def _square(u, v, r):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.85, None


def _triangle(u, v, r):
    return (v >= -0.5) & (v <= 1.0 - np.sqrt(3.0) * np.abs(u)), None


def _cross(u, v, r):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.28) & (av <= 1.0)) | ((av <= 0.28) & (au <= 1.0)), None


def _ring(u, v, r):
    return (r >= 0.6) & (r <= 1.0), None


def _stripes(u, v, r):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.9, np.floor(u * 3.5) % 2 == 0


def _target(u, v, r):
    return r <= 1.0, np.floor(r * 4.0) % 2 == 0


def _checker(u, v, r):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.9, (np.floor(u * 2.5) + np.floor(v * 2.5)) % 2 == 0


def _dots(u, v, r):
    du, dv = u * 3.0 - np.round(u * 3.0), v * 3.0 - np.round(v * 3.0)
    return r <= 1.0, du * du + dv * dv <= 0.12


def _star(u, v, r):
    lobes = (1.0 + np.cos(5.0 * np.arctan2(v, u))) * 0.5
    return r <= 0.45 + 0.55 * lobes * lobes, None


# name -> function(u, v, r) -> (shape mask, second-colour mask or None); u, v in units of the radius
MOTIFS: dict[str, Callable] = {
    "disc": _disc,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "ring": _ring,
    "stripes": _stripes,
    "target": _target,
    "checker": _checker,
    "dots": _dots,
    "star": _star,
}


def _colour(rng: np.random.Generator, index: int) -> np.ndarray:
    return np.clip(_PALETTE[index] + rng.uniform(-25, 25, size=3), 0, 255).astype(np.float32)


def _draw_motif(canvas: np.ndarray, motif: Callable, rng: np.random.Generator, colours: np.ndarray) -> None:
    """Draw one motif in place on ``canvas`` ``[3, H, W]`` float32 at a random place, size and angle."""
    _, height, width = canvas.shape
    radius = rng.uniform(0.2, 0.38) * min(height, width)
    cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    angle = rng.uniform(0, 2 * np.pi)
    top, bottom = int(max(cy - radius, 0)), int(min(cy + radius + 1, height))
    left, right = int(max(cx - radius, 0)), int(min(cx + radius + 1, width))
    y = (np.arange(top, bottom, dtype=np.float32)[:, None] - cy) / radius  # [h, 1]
    x = (np.arange(left, right, dtype=np.float32)[None, :] - cx) / radius  # [1, w]
    cos, sin = np.cos(angle), np.sin(angle)
    u, v = x * cos + y * sin, y * cos - x * sin  # [h, w] rotated coordinates
    shape, second = motif(u, v, np.sqrt(u * u + v * v))
    for channel in range(3):
        region = canvas[channel, top:bottom, left:right]
        region[shape] = colours[0, channel]
        if second is not None:
            region[shape & second] = colours[1, channel]


def render_image(
    motif: Callable,
    rng: np.random.Generator,
    size: tuple[int, int],
    noise: np.ndarray,
    motif_colours: tuple[int, int] | None = None,
) -> Image.Image:
    """One RGB image of ``motif``; ``size`` is (width, height); ``noise`` a larger ``[3, h, w]`` float32 field.

    ``motif_colours``: palette indices of the motif's two colours (default: random, like the background's).
    """
    width, height = size
    order = rng.permutation(len(_PALETTE))
    if motif_colours is not None:  # the motif's colours first, the background from the other ones
        order = np.concatenate([[c for c in order if c not in motif_colours][:2], motif_colours])
    background = np.stack([_colour(rng, order[0]), _colour(rng, order[1])])  # [2, 3]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.arange(width, dtype=np.float32)[None, :] * np.cos(angle) + np.arange(height, dtype=np.float32)[
        :, None
    ] * np.sin(angle)
    ramp -= ramp.min()
    ramp *= 1.0 / max(float(ramp.max()), 1.0)  # [H, W] in [0, 1]
    canvas = ramp[None] * (background[1] - background[0])[:, None, None]  # [3, H, W] float32
    canvas += background[0][:, None, None]
    for _ in range(int(rng.integers(1, 3))):
        _draw_motif(canvas, motif, rng, np.stack([_colour(rng, order[2]), _colour(rng, order[3])]))
    oy, ox = rng.integers(0, _NOISE_MARGIN, size=2)
    canvas += noise[:, oy : oy + height, ox : ox + width]
    np.clip(canvas, 0, 255, out=canvas)
    return Image.merge("RGB", [Image.fromarray(channel) for channel in canvas.astype(np.uint8)])


def _params(num_classes, images_per_class, val_images_per_class, size, seed, class_colours=False) -> dict:
    params = {
        "num_classes": int(num_classes),
        "images_per_class": int(images_per_class),
        "val_images_per_class": int(val_images_per_class),
        "size": [int(size[0]), int(size[1])],
        "seed": int(seed),
        "version": 1,
    }
    if class_colours:
        params["class_colours"] = True
    return params


def class_colour_indices(class_index: int) -> tuple[int, int]:
    """Palette indices of a class's two motif colours with ``class_colours``: distinct pairs for 10 classes."""
    return class_index % len(_PALETTE), (class_index + 3) % len(_PALETTE)


def _write_split(root: Path, split: str, count: int, params: dict, noise: np.ndarray) -> None:
    names = list(MOTIFS)[: params["num_classes"]]
    for class_index, name in enumerate(names):
        folder = root / split / f"{class_index:02d}_{name}"
        folder.mkdir(parents=True)
        for i in range(count):
            rng = np.random.default_rng([params["seed"], split == "val", class_index, i])
            buffer = io.BytesIO()
            colours = class_colour_indices(class_index) if params.get("class_colours") else None
            image = render_image(MOTIFS[name], rng, tuple(params["size"]), noise, colours)
            image.save(buffer, format="JPEG", quality=90)
            (folder / f"{name}_{i:05d}.jpg").write_bytes(buffer.getvalue())


def make_synthetic_dataset(
    root: str | os.PathLike,
    num_classes: int = 10,
    images_per_class: int = 100,
    size: Sequence[int] = (500, 375),
    seed: int = 0,
    val_images_per_class: int = 20,
    class_colours: bool = False,
) -> Path:
    """Write ``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg`` unless ``root`` already holds them.

    ``size`` is (width, height) in pixels. Up to 10 classes (one per motif). An existing ``root`` made
    with other arguments raises (choose another root or delete it). Generation goes to a temporary
    folder renamed into place, so concurrent processes never see a half-written dataset.
    """
    params = _params(num_classes, images_per_class, val_images_per_class, size, seed, class_colours)
    if not 1 <= params["num_classes"] <= len(MOTIFS):
        raise ValueError(f"synthetic dataset num_classes must be in [1, {len(MOTIFS)}], got {num_classes}")
    if params["images_per_class"] < 1 or params["val_images_per_class"] < 0 or min(params["size"]) < 16:
        raise ValueError(f"synthetic dataset needs images_per_class >= 1 and size >= 16 pixels, got {params}")

    def write(staging: Path) -> None:
        width, height = params["size"]
        noise_rng = np.random.default_rng([params["seed"], 12345])
        noise = noise_rng.integers(-12, 13, size=(3, height + _NOISE_MARGIN, width + _NOISE_MARGIN)).astype(np.float32)
        _write_split(staging, "train", params["images_per_class"], params, noise)
        _write_split(staging, "val", params["val_images_per_class"], params, noise)

    return generate_folder_once(root, params, _MARKER, "synthetic dataset", write)


class Synthetic(ImageFolder):
    """Split ``TRAIN`` or ``VAL`` of the synthetic dataset at ``root``, generated there on first use.

    Dataset string: ``Synthetic:root=PATH[:split=VAL][:num_classes=10][:images_per_class=100]
    [:val_images_per_class=20][:seed=0][:size=500x375][:class_colours=false]``. Targets are class indices.
    """

    def __init__(
        self,
        *,
        root: str,
        split: str = "TRAIN",
        num_classes: int = 10,
        images_per_class: int = 100,
        val_images_per_class: int = 20,
        seed: int = 0,
        size: Sequence[int] = (500, 375),
        class_colours: bool = False,
        **options,
    ) -> None:
        """``options``: the dataset options of :class:`ExtendedVisionDataset` (transforms, strict...)."""
        split = str(getattr(split, "name", split)).upper()
        if split not in ("TRAIN", "VAL"):
            raise ValueError(f"Synthetic split must be TRAIN or VAL, got {split!r}")
        base = make_synthetic_dataset(
            root, num_classes, images_per_class, size, seed, val_images_per_class, class_colours
        )
        super().__init__(root=str(base / split.lower()), **options)
        self.split = split
