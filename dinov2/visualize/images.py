"""Pictures in and out: model inputs from image files, patch maps to RGB, PNG files and contact sheets (PIL only).

:func:`model_input` is what the picture commands give the model: the image read, resized and cropped to the patch
grid, and checked (:func:`check_input_size`): a warning when its token count makes attention slow and large, a
note when a small image is enlarged far beyond its own pixels.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dinov2.data.transforms import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

logger = logging.getLogger("dinov2")

__all__ = [
    "LARGE_INPUT_TOKENS",
    "UPSCALE_NOTE_FACTOR",
    "load_image",
    "check_images",
    "to_model_input",
    "check_input_size",
    "model_input",
    "heatmap",
    "grid_to_image",
    "save_png",
    "contact_sheet",
]

# Patch tokens per image above which a warning is logged: attention time and memory grow with tokens squared.
# 16384 = 128 x 128 patches, about 1800 px square with 14 px patches (the released models saw 37 x 37 at 518 px).
LARGE_INPUT_TOKENS = 16_384
# An image enlarged more than this per side is reported: its maps show the interpolation rather than the picture.
UPSCALE_NOTE_FACTOR = 4.0

# A dark-to-bright ramp (black, violet, red, orange, pale yellow): monotonic in lightness, readable in grey.
_RAMP = np.array([[0, 0, 4], [72, 20, 110], [170, 50, 110], [245, 120, 60], [252, 250, 180]], dtype=np.float64)


def load_image(path: str | os.PathLike) -> Image.Image:
    """An RGB image from a file, with an error naming the file when it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def check_images(paths: Sequence[str | os.PathLike]) -> None:
    """Refuse, naming the file, a path that is missing or that no image reader recognises (headers only: cheap, so
    commands check every image before a backbone is built or downloaded)."""
    for path in paths:
        try:
            with Image.open(path):
                pass
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read image {path}: {err}") from err


def to_model_input(image: Image.Image, resolution: int, patch_size: int) -> tuple[torch.Tensor, Image.Image]:
    """Resize the shorter side to ``resolution`` (bicubic), centre-crop both sides to multiples of ``patch_size``.

    Returns the normalised input ``[1, 3, H, W]`` (ImageNet mean / std) and the cropped RGB picture it shows.
    """
    if resolution < patch_size:
        raise ValueError(f"--resolution {resolution} is smaller than one {patch_size} px patch")
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(patch_size, round(width * scale)), max(patch_size, round(height * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    crop_w, crop_h = size[0] - size[0] % patch_size, size[1] - size[1] % patch_size
    left, top = (size[0] - crop_w) // 2, (size[1] - crop_h) // 2
    image = image.crop((left, top, left + crop_w, top + crop_h))
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)  # [3, H, W]
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_DEFAULT_STD)[:, None, None]
    return ((pixels - mean) / std).unsqueeze(0), image


def check_input_size(
    name: str | os.PathLike,
    original: tuple[int, int],
    size: tuple[int, int],
    patch_size: int,
    num_heads: int,
    resolution: int,
) -> None:
    """Log a warning when an image of ``original`` (width, height) px, given to the model at ``size`` px, has more
    than :data:`LARGE_INPUT_TOKENS` patch tokens (with the attention memory of one block and the flag that lowers
    it), or was enlarged more than :data:`UPSCALE_NOTE_FACTOR` times per side (naming both sizes)."""
    grid_w, grid_h = size[0] // patch_size, size[1] // patch_size
    tokens = grid_w * grid_h
    if tokens > LARGE_INPUT_TOKENS:
        gib = num_heads * tokens**2 * 4 / 2**30  # one float32 attention matrix per head
        logger.warning(
            f"{name}: {size[0]}x{size[1]} px input = {grid_w}x{grid_h} = {tokens:,} patch tokens per image (above "
            f"{LARGE_INPUT_TOKENS:,}): time grows with tokens squared, and one block's attention needs up to "
            f"{num_heads} heads x {tokens:,}^2 x 4 bytes = {gib:,.1f} GiB; lower --resolution (now {resolution}) "
            "to reduce both"
        )
    scale = min(size) / min(original)
    if scale > UPSCALE_NOTE_FACTOR:
        logger.warning(
            f"{name}: a {original[0]}x{original[1]} px image, upscaled {scale:.0f}x to {size[0]}x{size[1]} px "
            f"({grid_w}x{grid_h} patches of {patch_size} px): its maps show the interpolation more than the image"
        )


def model_input(
    path: str | os.PathLike, resolution: int, patch_size: int, num_heads: int
) -> tuple[torch.Tensor, Image.Image]:
    """:func:`load_image`, :func:`to_model_input` and :func:`check_input_size`: the input ``[1, 3, H, W]`` of the
    image at ``path`` and the picture it shows."""
    image = load_image(path)
    pixels, picture = to_model_input(image, resolution, patch_size)
    check_input_size(path, image.size, picture.size, patch_size, num_heads, resolution)
    return pixels, picture


def heatmap(values: torch.Tensor) -> np.ndarray:
    """``[h, w]`` values -> ``[h, w, 3]`` uint8 colours, min-max scaled (a constant map is dark)."""
    values = values.detach().double().cpu().numpy()
    span = values.max() - values.min()
    scaled = (values - values.min()) / span if span > 0 else np.zeros_like(values)
    position = scaled * (len(_RAMP) - 1)
    low = np.clip(np.floor(position).astype(int), 0, len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return np.round(_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def grid_to_image(rgb: np.ndarray, patch_size: int) -> Image.Image:
    """``[h, w, 3]`` uint8 per-patch colours -> an image of ``h * patch_size x w * patch_size`` pixels (blocks)."""
    height, width = rgb.shape[:2]
    return Image.fromarray(rgb).resize((width * patch_size, height * patch_size), Image.Resampling.NEAREST)


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def contact_sheet(rows: Sequence[Sequence[Image.Image]], gap: int = 4) -> Image.Image:
    """Images side by side (one row per sequence), each cell as large as the largest image; white gaps."""
    cell_w = max(image.width for row in rows for image in row)
    cell_h = max(image.height for row in rows for image in row)
    columns = max(len(row) for row in rows)
    sheet = Image.new(
        "RGB", (columns * cell_w + (columns + 1) * gap, len(rows) * cell_h + (len(rows) + 1) * gap), "white"
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            sheet.paste(image.convert("RGB"), (gap + c * (cell_w + gap), gap + r * (cell_h + gap)))
    return sheet
