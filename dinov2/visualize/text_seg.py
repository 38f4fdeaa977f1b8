"""``python -m dinov2.visualize text-seg IMAGES... --classes cat,dog,grass --output-dir D``: open-vocabulary
segmentation pictures of a dino.txt model.

Per image: ``<stem>_text_seg.png`` (the argmax class colours over the picture), ``<stem>_<class>.png`` (the
similarity map of each class, min-max scaled) and one row of ``text_seg_sheet.png`` (input, segmentation, maps);
``text_seg_legend.txt`` lists the colour of each class. Class text embeddings: the local half, averaged over the
prompt templates (:func:`dinov2.text.zeroshot.zeroshot_weights`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from dinov2.heads.segmentation.classes import voc_palette
from dinov2.heads.segmentation.render import overlay_segmentation
from dinov2.text.segmentation import segmentation_scores
from dinov2.text.zeroshot import zeroshot_weights
from dinov2.visualize.images import contact_sheet, heatmap, model_input, save_png
from dinov2.visualize.pca import unique_stems

__all__ = ["write_text_seg_pictures", "parse_classes"]


def parse_classes(text: str) -> list[str]:
    """``"cat, dog,grass"`` -> ``["cat", "dog", "grass"]`` (at least two names)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if len(names) < 2:
        raise ValueError(f"--classes {text!r}: give at least two comma-separated class names (e.g. cat,dog,grass)")
    return names


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "class"


@torch.no_grad()
def write_text_seg_pictures(
    model: nn.Module,
    tokenizer,
    paths: Sequence[str | os.PathLike],
    class_names: Sequence[str],
    output_dir: str | os.PathLike,
    *,
    templates: Sequence[str] = ("a photo of a {}.",),
    resolution: int = 448,
    window: int | None = None,
) -> dict[str, Path]:
    """Segmentation pictures of the images at ``paths`` for ``class_names``; returns the written files by name."""
    output_dir = Path(output_dir)
    backbone = model.visual_model.backbone
    weights = zeroshot_weights(model, tokenizer, list(class_names), list(templates), part="local")  # [D/2, C]
    palette = voc_palette(len(class_names) + 1)[1:]  # VOC colours, skipping black (index 0)
    written, rows = {}, []
    for stem, path in zip(unique_stems(paths), paths):
        pixels, picture = model_input(path, resolution, backbone.patch_size, backbone.num_heads)
        scores = segmentation_scores(model, pixels, weights, window=window)[0]  # [C, H, W]
        overlay = overlay_segmentation(picture, scores.argmax(0), palette)
        written[f"{stem}_text_seg.png"] = save_png(overlay, output_dir / f"{stem}_text_seg.png")
        maps = []
        for name, values in zip(class_names, scores):
            image = Image.fromarray(heatmap(values))
            maps.append(image)
            written[f"{stem}_{_safe(name)}.png"] = save_png(image, output_dir / f"{stem}_{_safe(name)}.png")
        rows.append([picture, overlay, *maps])
    written["text_seg_sheet.png"] = save_png(contact_sheet(rows), output_dir / "text_seg_sheet.png")
    legend = "".join(f"{name}\t#{r:02x}{g:02x}{b:02x}\n" for name, (r, g, b) in zip(class_names, palette))
    (output_dir / "text_seg_legend.txt").write_text("class\tcolour (sheet columns after the segmentation)\n" + legend)
    written["text_seg_legend.txt"] = output_dir / "text_seg_legend.txt"
    return written
