"""A CPU demo of dino.txt training (``python -m dinov2.train.dinotxt_demo --output-dir D``): generated coloured shapes
with captions, ``configs/train/dinotxt_demo_cpu.yaml``, then zero-shot classification of held-out shapes.

Train set: ``<D>/data/train`` (a ``CaptionFolder``): 64 px images of a circle, square or triangle in red, green,
blue or yellow, of random size and place on a noisy grey background, each with 4 captions ("a red circle", "a photo
of a red circle", "a circle that is red", "red circle"). Val set: ``<D>/data/val/<colour> <shape>/`` (an
``ImageFolder``, 12 classes, chance 8.3 %), classified with the prompts "a photo of a {}." and "a {}.".
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from dinov2.train.dinotxt import do_train
from dinov2.train.dinotxt_config import load_dinotxt_config
from dinov2.utils.cli import ArgumentParser

__all__ = ["COLOURS", "SHAPES", "draw_shape", "write_shapes", "main"]

COLOURS = {"red": (210, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 210), "yellow": (230, 200, 40)}
SHAPES = ("circle", "square", "triangle")


def draw_shape(colour: str, shape: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One picture: ``shape`` in ``colour`` (a little jittered), random size and place, noisy grey background."""
    background = rng.integers(90, 170) + rng.integers(-12, 12, (size, size, 3))
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    extent = int(rng.integers(size * 0.45, size * 0.8))
    x0, y0 = (int(v) for v in rng.integers(0, size - extent, 2))
    fill = tuple(int(np.clip(c + rng.integers(-20, 20), 0, 255)) for c in COLOURS[colour])
    draw, box = ImageDraw.Draw(image), (x0, y0, x0 + extent, y0 + extent)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x0 + extent / 2, y0), (x0, y0 + extent), (x0 + extent, y0 + extent)], fill=fill)
    return image


def write_shapes(root: Path, per_class_train: int = 60, per_class_val: int = 15, seed: int = 0) -> dict[str, Path]:
    """Write the train (captions) and val (class folders) sets; returns their folders and the templates file."""
    rng = np.random.default_rng(seed)
    train, val = root / "train", root / "val"
    for colour in COLOURS:
        for shape in SHAPES:
            (val / f"{colour} {shape}").mkdir(parents=True, exist_ok=True)
            train.mkdir(parents=True, exist_ok=True)
            for i in range(per_class_train):
                stem = train / f"{colour}_{shape}_{i:03d}"
                draw_shape(colour, shape, rng).save(stem.with_suffix(".png"))
                captions = [f"a {colour} {shape}", f"a photo of a {colour} {shape}", f"a {shape} that is {colour}"]
                stem.with_suffix(".txt").write_text("\n".join([*captions, f"{colour} {shape}"]) + "\n")
            for i in range(per_class_val):
                draw_shape(colour, shape, rng).save(val / f"{colour} {shape}" / f"{i:03d}.png")
    templates = root / "templates.txt"
    templates.write_text("a photo of a {}.\na {}.\n")
    return {"train": train, "val": val, "templates": templates}


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(description="dino.txt CPU demo on generated coloured shapes")
    parser.add_argument("--output-dir", required=True, help="run folder (data, checkpoints, dinotxt.pth, results)")
    parser.add_argument("opts", nargs="*", default=[], help="key=value overrides of train/dinotxt_demo_cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    output_dir = Path(args.output_dir).expanduser().resolve()
    paths = write_shapes(output_dir / "data")
    opts = [
        f"data.dataset=CaptionFolder:root={paths['train']}",
        f"eval.dataset=ImageFolder:root={paths['val']}",
        f"eval.templates={paths['templates']}",
        *args.opts,
    ]
    cfg = load_dinotxt_config("train/dinotxt_demo_cpu", opts, str(output_dir))
    results = do_train(cfg)
    zeroshot = results["zeroshot"]
    print(
        f"zero-shot on {len(COLOURS) * len(SHAPES)} held-out classes: top-1 {zeroshot['top-1']:.1f} %, "
        f"top-5 {zeroshot['top-5']:.1f} % (chance {zeroshot['chance']:.1f} %); first / last loss "
        f"{results['losses'][0]:.3f} / {results['losses'][-1]:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
