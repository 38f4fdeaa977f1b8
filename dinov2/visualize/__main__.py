"""``python -m dinov2.visualize {pca,attention} IMAGES... --model NAME [--weights W | --random-init] --output-dir D``.

``pca``: a joint PCA of the patch features of all images (foreground from the first component, 3 components
as RGB): ``<stem>_pca.png`` per image and ``pca_sheet.png`` (input, foreground, PCA per row).
``attention``: the class token's attention per head in the last block, registers (DINOv3: storage tokens)
separately, under ``<output-dir>/<stem>/`` and ``attention_sheet.png``; a backbone without attention (the DINOv3
ConvNeXt) is a usage error. ``--weights`` alone (no ``--model``) reads the architecture from the weights.
``text-seg``: open-vocabulary segmentation of a dino.txt model (:mod:`dinov2.visualize.text_seg`).
"""

from __future__ import annotations

import argparse
import logging
import sys

from dinov2.features.backbone_args import BACKBONE_NOTE, add_backbone_args, check_backbone_args, loaded_from_args
from dinov2.utils.cli import ArgumentParser, add_output_dir, check_writable_dir, usage_errors
from dinov2.visualize.images import check_images

logger = logging.getLogger("dinov2")


def get_args_parser() -> argparse.ArgumentParser:
    """``{pca,attention} IMAGES... --model NAME | --config-file F ... --output-dir D`` (no config overrides)."""
    parser = ArgumentParser(
        description="PCA feature maps and attention maps of a DINOv2 / DINOv3 backbone, as PNG files.",
        epilog=BACKBONE_NOTE,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("pca", "PCA feature maps"), ("attention", "last-block attention maps")):
        sub = commands.add_parser(name, help=text, description=text, epilog=BACKBONE_NOTE)
        sub.add_argument("images", nargs="+", help="image files (any format PIL reads)")
        add_backbone_args(sub)
        add_output_dir(sub, "folder for the PNG files", required=True)
        sub.add_argument("--resolution", type=int, default=448, help="shorter image side in px (then cropped to "
                         "multiples of the patch size)")  # fmt: skip
        if name == "pca":
            sub.add_argument("--threshold", type=float, default=None, help="foreground cut on the first component, "
                             "as a fraction of its range (default: Otsu's threshold)")  # fmt: skip
    from dinov2.visualize.text_seg_cli import add_text_seg_parser

    add_text_seg_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """``dinov2-visualize`` / ``python -m dinov2.visualize``: parse ``argv`` (default ``sys.argv``), write the
    pictures; returns the exit status."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.command != "text-seg":  # text-seg names a dino.txt model with its own flags
        check_backbone_args(parser, args)
    with usage_errors(parser, ValueError, flag="images"):  # before the output folder is made
        check_images(args.images)
    check_writable_dir(parser, args.output_dir, "--output-dir")  # before the backbone is built or downloaded
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "text-seg":
        from dinov2.visualize.text_seg_cli import run_text_seg

        return run_text_seg(parser, args)
    loaded = loaded_from_args(args)
    if args.command == "pca":
        from dinov2.visualize.pca import write_pca_pictures

        options = dict(threshold=args.threshold, patch_size=loaded.patch_size)
        written = write_pca_pictures(loaded.model, args.images, args.output_dir, args.resolution, **options)
    else:
        from dinov2.visualize.attention import has_attention, write_attention_pictures

        if not has_attention(loaded.model):
            parser.error(f"attention: the {loaded.family} backbone {loaded.arch} has no attention; use pca")
        written = write_attention_pictures(loaded.model, args.images, args.output_dir, args.resolution)
    sheet = next(path for name, path in written.items() if name.endswith("_sheet.png"))
    print(f"wrote {len(written)} files to {args.output_dir}; overview: {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
