"""Command-line flags that pick a dino.txt model and its tokenizer (shared by zero-shot and text segmentation)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dinov2.hub import dinotxt
from dinov2.models.weights import is_url
from dinov2.text import DinoTxt, Tokenizer, get_tokenizer

__all__ = ["RELEASED", "add_dinotxt_args", "dinotxt_from_args", "check_dinotxt_args"]

RELEASED = "dinov2_vitl14_reg4_dinotxt_tet1280d20h24l"


def add_dinotxt_args(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--backbone-weights``, ``--vision-head-weights``, ``--text-encoder-weights``,
    ``--no-pretrained``, ``--vocab-path``."""
    parser.add_argument(
        "--model",
        default=RELEASED,
        help=f"{RELEASED} (the released model, default) or a dino.txt file written by the dino.txt trainer",
    )
    parser.add_argument("--backbone-weights", help="local backbone file (default: the released backbone)")
    parser.add_argument("--vision-head-weights", help="local vision-head file of the released model")
    parser.add_argument("--text-encoder-weights", help="local text-encoder file of the released model")
    parser.add_argument(
        "--no-pretrained",
        dest="pretrained",
        action="store_false",
        help="download nothing: files not given locally stay randomly initialised",
    )
    parser.add_argument("--vocab-path", help="CLIP BPE vocabulary (default: the copy of an installed open_clip)")


def check_dinotxt_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit code 2) for local files that do not exist."""
    if args.model != RELEASED and not Path(args.model).expanduser().is_file():
        parser.error(f"--model {args.model!r}: neither {RELEASED} nor an existing dino.txt file")
    for flag in ("backbone_weights", "vision_head_weights", "text_encoder_weights", "vocab_path"):
        value = getattr(args, flag)
        if value and not is_url(value) and not Path(value).expanduser().exists():
            parser.error(f"--{flag.replace('_', '-')} {value!r} does not exist")
    if args.model != RELEASED and (args.vision_head_weights or args.text_encoder_weights):
        parser.error("--vision-head-weights / --text-encoder-weights are for the released model, not a dino.txt file")


def dinotxt_from_args(args: argparse.Namespace) -> tuple[DinoTxt, Tokenizer]:
    """The model (eval mode, CPU) and tokenizer the flags of :func:`add_dinotxt_args` name."""
    if args.model == RELEASED:
        model = dinotxt.dinov2_vitl14_reg4_dinotxt_tet1280d20h24l(
            pretrained=args.pretrained,
            backbone_weights=args.backbone_weights,
            vision_head_weights=args.vision_head_weights,
            text_encoder_weights=args.text_encoder_weights,
        )
    else:
        model = dinotxt.load_dinotxt(args.model, pretrained=args.pretrained, backbone_weights=args.backbone_weights)
    return model, get_tokenizer(args.vocab_path)
