"""Zero-shot classification with a dino.txt model (``python -m dinov2.eval.zeroshot``, or
``dinov2/run/eval/zeroshot.py`` on SLURM)::

    python -m dinov2.eval.zeroshot --val-dataset ImageFolder:root=/data/val --output-dir out/zeroshot \\
        [--class-names classes.txt] [--templates templates.txt] [--model dinov2_vitl14_reg4_dinotxt_tet1280d20h24l]

Class weights: the 80 ImageNet prompt templates (or ``--templates``, one a line with ``{}``) filled with each class
name (``--class-names``, one a line in label order; default the dataset's folder names), embedded, averaged
(:func:`dinov2.text.zeroshot.zeroshot_weights`). Scores: 100 x cosine(image, class). Results: top-1 / top-5 (%) in
``results_eval_zeroshot.json`` (lines) and ``results_eval_zeroshot_detailed.json``. One process.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

import torch
from torch import nn

from dinov2.data.dataset_strings import parse_dataset_str
from dinov2.eval.common import (
    add_eval_transform_args,
    finish_eval_run,
    make_eval_dataset,
    make_eval_transform,
    run_protocol_cli,
)
from dinov2.features import eval_device
from dinov2.hub.dinotxt import add_dinotxt_args, check_dinotxt_args, dinotxt_from_args
from dinov2.text.zeroshot import predict_topk, read_class_names, read_templates, topk_accuracy, zeroshot_weights
from dinov2.utils.cli import ArgumentParser, usage_errors

logger = logging.getLogger("dinov2")

__all__ = ["get_args_parser", "check_args", "eval_zeroshot_with_model", "main", "cli_main"]

DESCRIPTION = "dino.txt zero-shot classification"
RESIZE_RATIO = 256 / 224  # the released notebook: resize 256, centre crop 224


def get_args_parser(
    description: str | None = None, parents: list[argparse.ArgumentParser] | None = None, add_help: bool = True
) -> argparse.ArgumentParser:
    """Model flags (:func:`~dinov2.hub.dinotxt.add_dinotxt_args`), ``--val-dataset``,
    ``--class-names``, ``--templates``, ``--batch-size``, ``--output-dir`` and the eval transform flags."""
    parser = ArgumentParser(description=description, parents=parents or [], add_help=add_help)
    add_dinotxt_args(parser)
    parser.add_argument("--val-dataset", dest="val_dataset_str", default="ImageNet:split=VAL", help="dataset string")
    parser.add_argument("--class-names", help="class names, one a line in label order (default: folder names)")
    parser.add_argument("--templates", help="prompt templates with '{}', one a line (default: 80 ImageNet ones)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per batch")
    parser.add_argument("--output-dir", default=None, help="where the result files go (none when unset)")
    add_eval_transform_args(parser, num_workers=4, resize_ratio=RESIZE_RATIO)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors before any work: the model files, the dataset string, the class-name and template files."""
    check_dinotxt_args(parser, args)
    with usage_errors(parser, ValueError, flag="--val-dataset"):
        parse_dataset_str(args.val_dataset_str)
    with usage_errors(parser, FileNotFoundError, ValueError):
        if args.class_names:
            read_class_names(args.class_names)
        read_templates(args.templates)


def _class_names(dataset, class_names: Sequence[str] | None) -> list[str]:
    if class_names is not None:
        return list(class_names)
    names = getattr(dataset, "classes", None)
    if not names:
        raise ValueError(
            f"{type(dataset).__name__} has no folder class names: pass --class-names (one name a line, label order)"
        )
    return [name.replace("_", " ") for name in names]


def eval_zeroshot_with_model(
    model: nn.Module,
    tokenizer,
    val_dataset,
    *,
    class_names: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    output_dir: str | None = None,
    batch_size: int = 64,
    num_workers: int = 4,
    crop_size: int = 224,
    resize_size: int | None = None,
    device: torch.device | str | None = None,
    run_args=None,
) -> dict[str, float]:
    """Top-1 / top-5 zero-shot accuracy (%) of ``model`` on ``val_dataset`` (a dataset string or object yielding
    ``(normalised image, label)``); writes the result files when ``output_dir``."""
    start = time.perf_counter()
    device = torch.device(device) if device is not None else eval_device()
    model = model.to(device).eval()
    dataset = make_eval_dataset(val_dataset, make_eval_transform(crop_size, resize_size, RESIZE_RATIO), "val")
    names = _class_names(dataset, class_names)
    templates = list(templates) if templates is not None else read_templates()
    weights = zeroshot_weights(model, tokenizer, names, templates, device=device)  # [D, C]
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    results = topk_accuracy(*predict_topk(model, weights, loader, device), len(names))
    logger.info("zero-shot on %s: top-1 %.2f %%, top-5 %.2f %%", val_dataset, results["top-1"], results["top-5"])
    detailed = {
        "protocol": "zeroshot",
        "val_dataset": str(val_dataset),
        "num_val": len(dataset),
        "num_classes": len(names),
        "num_templates": len(templates),
        "results": results,
    }
    finish_eval_run(output_dir, "zeroshot", results, detailed, start=start, run_args=run_args)
    return results


def text_eval_inputs(args: argparse.Namespace) -> tuple[tuple, dict]:
    """What every dino.txt evaluation takes from its flags: ``(model, tokenizer, val dataset)`` and the class
    names, templates and run arguments (``--class-names``, ``--templates``)."""
    model, tokenizer = dinotxt_from_args(args)
    names = read_class_names(args.class_names) if args.class_names else None
    return (model, tokenizer, args.val_dataset_str), dict(
        class_names=names, templates=read_templates(args.templates), run_args=args
    )


def main(args: argparse.Namespace) -> int:
    """Build the model the flags name and run :func:`eval_zeroshot_with_model`."""
    positional, common = text_eval_inputs(args)
    eval_zeroshot_with_model(
        *positional,
        **common,
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        crop_size=args.crop_size,
        resize_size=args.resize_size,
    )
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``python -m dinov2.eval.zeroshot``: parse, check (exit code 2), run."""
    return run_protocol_cli(get_args_parser, check_args, main, DESCRIPTION, argv)
