"""The ``text-seg`` subcommand of ``python -m dinov2.visualize``: flags and run (pictures: :mod:`.text_seg`)."""

from __future__ import annotations

import argparse

from dinov2.hub.dinotxt import add_dinotxt_args, check_dinotxt_args, dinotxt_from_args
from dinov2.text.zeroshot import read_templates
from dinov2.utils.cli import add_output_dir, usage_errors

__all__ = ["add_text_seg_parser", "run_text_seg"]

_HELP = "open-vocabulary segmentation maps of a dino.txt model"


def add_text_seg_parser(commands) -> argparse.ArgumentParser:
    """``text-seg IMAGES... --classes a,b,c [dino.txt model flags] --output-dir D``."""
    sub = commands.add_parser("text-seg", help=_HELP, description=_HELP)
    sub.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    sub.add_argument("--classes", required=True, help="comma-separated class names, e.g. cat,dog,grass,sky")
    sub.add_argument(
        "--templates",
        help="prompt templates with '{}', one a line (default: 'a photo of a {}.'; "
        "'imagenet' for the 80 ImageNet templates)",
    )
    sub.add_argument("--resolution", type=int, default=448, help="shorter image side in px")
    sub.add_argument("--window", type=int, default=None, help="sliding windows of this size (px), half overlapping")
    add_dinotxt_args(sub)
    add_output_dir(sub, "folder for the PNG files", required=True)
    return sub


def _templates(value: str | None) -> list[str]:
    if value is None:
        return ["a photo of a {}."]
    return read_templates(None if value == "imagenet" else value)


def run_text_seg(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Check the flags (usage errors, exit code 2), build the model, write the pictures."""
    from dinov2.visualize.text_seg import parse_classes, write_text_seg_pictures

    check_dinotxt_args(parser, args)
    with usage_errors(parser, ValueError, FileNotFoundError):
        class_names, templates = parse_classes(args.classes), _templates(args.templates)
    model, tokenizer = dinotxt_from_args(args)
    written = write_text_seg_pictures(
        model,
        tokenizer,
        args.images,
        class_names,
        args.output_dir,
        templates=templates,
        resolution=args.resolution,
        window=args.window,
    )
    print(f"wrote {len(written)} files to {args.output_dir}; overview: {written['text_seg_sheet.png']}")
    return 0
