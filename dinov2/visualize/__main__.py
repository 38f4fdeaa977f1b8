"""``python -m dinov2.visualize {pca,attention} IMAGES... --model NAME [--weights W | --random-init] --output-dir D``.

``pca``: a joint PCA of the patch features of all images (foreground from the first component, 3 components
as RGB): ``<stem>_pca.png`` per image and ``pca_sheet.png`` (input, foreground, PCA per row).
``attention``: the class token's attention per head in the last block, registers separately, under
``<output-dir>/<stem>/`` and ``attention_sheet.png``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dinov2.visualize.backbone import add_backbone_args, backbone_from_args

logger = logging.getLogger("dinov2")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dinov2.visualize",
        description="PCA feature maps and attention maps of a DINOv2 backbone, as PNG files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("pca", "PCA feature maps"), ("attention", "last-block attention maps")):
        sub = commands.add_parser(name, help=text, description=text, formatter_class=parser.formatter_class)
        sub.add_argument("images", nargs="+", help="image files (any format PIL reads)")
        add_backbone_args(sub)
        sub.add_argument("--output-dir", "--output_dir", required=True, help="folder for the PNG files")
        sub.add_argument("--resolution", type=int, default=448, help="shorter image side in px (then cropped to "
                         "multiples of the patch size)")  # fmt: skip
        if name == "pca":
            sub.add_argument("--threshold", type=float, default=None, help="foreground cut on the first component, "
                             "as a fraction of its range (default: Otsu's threshold)")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model = backbone_from_args(args)
    if args.command == "pca":
        from dinov2.visualize.pca import write_pca_pictures

        written = write_pca_pictures(model, args.images, args.output_dir, args.resolution, args.threshold)
    else:
        from dinov2.visualize.attention import write_attention_pictures

        written = write_attention_pictures(model, args.images, args.output_dir, args.resolution)
    sheet = next(path for name, path in written.items() if name.endswith("_sheet.png"))
    print(f"wrote {len(written)} files to {args.output_dir}; overview: {sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
