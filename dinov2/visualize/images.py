"""Pictures in and out: model inputs from image files, patch maps to RGB, PNG files and contact sheets (PIL only)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dinov2.data.transforms import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

__all__ = ["load_image", "to_model_input", "heatmap", "grid_to_image", "save_png", "contact_sheet"]

# A dark-to-bright ramp (black, violet, red, orange, pale yellow): monotonic in lightness, readable in grey.
_RAMP = np.array([[0, 0, 4], [72, 20, 110], [170, 50, 110], [245, 120, 60], [252, 250, 180]], dtype=np.float64)


def load_image(path: str | os.PathLike) -> Image.Image:
    """An RGB image from a file, with an error naming the file when it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
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
