"""PCA feature maps as in the DINOv2 paper's figure: foreground from the first component, then 3 components -> RGB.

1. The normalised patch tokens of every image are pooled and centred; their first principal component,
   thresholded, separates foreground from background. The paper does not give its threshold: here it is Otsu's
   (the cut that best splits the component's values in two groups), or a value given in units of the
   component's min-max range. The component's sign is chosen so that the image borders are mostly background.
2. A second PCA on the foreground patches only (again pooled over all images: one joint basis, so a colour
   means the same thing in every picture) gives 3 components, each min-max scaled to [0, 1] over all
   foreground patches: red, green, blue. Background patches are black.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from dinov2.features.tokens import token_stride
from dinov2.visualize.progress import block_progress

__all__ = [
    "PCAMaps",
    "patch_features",
    "principal_directions",
    "otsu_threshold",
    "foreground_pca",
    "write_pca_pictures",
]


@dataclass
class PCAMaps:
    """Per image: ``first`` component ``[h, w]`` (foreground positive), ``foreground`` ``[h, w]`` bool, ``rgb``
    ``[h, w, 3]`` uint8; ``threshold`` applied to ``first``."""

    first: list[Tensor]
    foreground: list[Tensor]
    rgb: list[np.ndarray]
    threshold: float


@torch.inference_mode()
def patch_features(model: nn.Module, images: Sequence[Tensor], patch_size: int | None = None) -> list[Tensor]:
    """Normalised patch tokens of each image ``[1, 3, H, W]`` as a grid ``[H / p, W / p, D]`` (float32, CPU), with
    a progress bar when it takes long. ``p``: ``patch_size``, default ``model.patch_size``."""
    p, grids = token_stride(model, patch_size), []
    with block_progress(model, len(images), "PCA features"):
        for image in images:
            tokens = model.forward_features(image)["x_norm_patchtokens"][0]  # [N, D]
            grid_h, grid_w = image.shape[-2] // p, image.shape[-1] // p
            if tokens.shape[0] != grid_h * grid_w:
                raise ValueError(
                    f"{tokens.shape[0]} patch tokens for a {tuple(image.shape[-2:])} px image do not form a grid of "
                    f"{p} px patches ({grid_h} x {grid_w}): pass the backbone's patch_size (pixels per token)"
                )
            grids.append(tokens.float().cpu().reshape(grid_h, grid_w, -1))
    return grids


def principal_directions(x: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Mean ``[D]`` and the first ``k`` principal directions ``[k, D]`` of rows ``x`` ``[P, D]`` (float64).

    Each direction's sign makes its largest-magnitude loading positive, so results do not depend on the SVD
    routine's sign convention.
    """
    x = x.double()
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    directions = vh[:k]
    signs = torch.sign(directions.gather(1, directions.abs().argmax(1, keepdim=True)))  # [k, 1]
    return mean, directions * torch.where(signs == 0, 1.0, signs)


def otsu_threshold(values: Tensor, bins: int = 256) -> float:
    """The cut maximising the between-group variance of ``values`` (Otsu, 1979), on a histogram of ``bins`` bins.

    Cuts inside a gap of empty bins all score the same: the middle of the gap is returned.
    """
    values = values.double().flatten()
    low, high = values.min().item(), values.max().item()
    if high <= low:
        return low
    counts = torch.histc(values, bins=bins, min=low, max=high)
    centres = low + (torch.arange(bins, dtype=torch.float64) + 0.5) * (high - low) / bins
    weight_low = counts.cumsum(0)  # [bins]: samples at or below each cut
    weight_high = counts.sum() - weight_low
    sum_low = (counts * centres).cumsum(0)
    mean_low = sum_low / weight_low.clamp(min=1)
    mean_high = ((counts * centres).sum() - sum_low) / weight_high.clamp(min=1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    best = torch.nonzero(between >= between.max() * (1 - 1e-12)).flatten()  # empty bins tie: cut mid-gap
    cut = (best[0] + best[-1]).item() / 2
    return low + (cut + 1) * (high - low) / bins


def _border(grid_h: int, grid_w: int) -> Tensor:
    border = torch.ones(grid_h, grid_w, dtype=torch.bool)
    if grid_h > 2 and grid_w > 2:
        border[1:-1, 1:-1] = False
    return border


def foreground_pca(features: Sequence[Tensor], threshold: float | None = None) -> PCAMaps:
    """Foreground masks and RGB maps for patch grids ``[h_i, w_i, D]`` (one joint PCA over all of them).

    ``threshold``: a fraction of the first component's range: foreground is ``(first - low) / (high - low) >
    threshold``, compared on the normalised component so that 0 keeps all but the minimum and 1 keeps nothing, exactly
    (``None``: Otsu's threshold on the component itself).
    """
    if not features:
        raise ValueError("foreground_pca needs at least one image's patch features")
    flat = torch.cat([f.reshape(-1, f.shape[-1]) for f in features]).double()  # [P, D]
    sizes = [f.shape[0] * f.shape[1] for f in features]
    mean, direction = principal_directions(flat, 1)
    first = (flat - mean) @ direction[0]  # [P]
    border = torch.cat([_border(f.shape[0], f.shape[1]).flatten() for f in features])
    if first[border].mean() > first.mean():  # the borders should be background: flip the component
        first = -first
    low, high = first.min().item(), first.max().item()
    if threshold is None:
        cut = otsu_threshold(first)
        foreground = first > cut
    else:  # compare on [0, 1]: low + threshold * (high - low) can round below high and keep the maximum
        cut = low + threshold * (high - low)
        foreground = (first - low) / max(high - low, 1e-300) > threshold
    rgb = torch.zeros(flat.shape[0], 3, dtype=torch.float64)
    chosen = flat[foreground] if int(foreground.sum()) >= 3 else flat  # too few patches for 3 components: all
    fg_mean, fg_directions = principal_directions(chosen, 3)
    components = (flat - fg_mean) @ fg_directions.T  # [P, k <= 3]
    if foreground.any():
        lo, hi = components[foreground].amin(0), components[foreground].amax(0)
        rgb[:, : components.shape[1]] = ((components - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1)
    rgb[~foreground] = 0.0
    rgb = (rgb * 255).round().to(torch.uint8)
    maps = PCAMaps(first=[], foreground=[], rgb=[], threshold=cut)
    for f, part_first, part_fg, part_rgb in zip(
        features, first.split(sizes), foreground.split(sizes), rgb.split(sizes)
    ):
        grid = (f.shape[0], f.shape[1])
        maps.first.append(part_first.float().reshape(grid))
        maps.foreground.append(part_fg.reshape(grid))
        maps.rgb.append(part_rgb.reshape(*grid, 3).numpy())
    return maps


def write_pca_pictures(
    model: nn.Module,
    paths: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    resolution: int = 448,
    threshold: float | None = None,
    patch_size: int | None = None,
) -> dict[str, Path]:
    """PCA maps of the images at ``paths``: ``<stem>_pca.png`` each (input size) and ``pca_sheet.png``.

    The sheet has one row per image: the model's input, the foreground mask, the PCA colours. Returns the
    written files by name. ``patch_size``: pixels per patch token (default ``model.patch_size``; a DINOv3
    ConvNeXt needs 32, the stride of its last stage).
    """
    from dinov2.visualize.images import contact_sheet, grid_to_image, model_input, save_png

    output_dir, stride = Path(output_dir), token_stride(model, patch_size)
    heads = getattr(model, "num_heads", 1)  # for the attention-memory warning; a ConvNeXt has none
    inputs, pictures = zip(*(model_input(p, resolution, stride, heads) for p in paths))
    maps = foreground_pca(patch_features(model, inputs, stride), threshold)
    written, rows = {}, []
    for stem, picture, rgb, mask in zip(unique_stems(paths), pictures, maps.rgb, maps.foreground):
        pca_image = grid_to_image(rgb, stride)
        mask_image = grid_to_image(np.repeat(mask.numpy()[..., None] * np.uint8(255), 3, axis=-1), stride)
        written[f"{stem}_pca.png"] = save_png(pca_image, output_dir / f"{stem}_pca.png")
        rows.append([picture, mask_image, pca_image])
    written["pca_sheet.png"] = save_png(contact_sheet(rows), output_dir / "pca_sheet.png")
    return written


def unique_stems(paths: Sequence[str | os.PathLike]) -> list[str]:
    """File stems, with ``_2``, ``_3`` ... appended to repeats (``a/x.jpg`` and ``b/x.jpg``)."""
    seen: dict[str, int] = {}
    stems = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems
