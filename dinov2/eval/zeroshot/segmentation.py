"""Open-vocabulary segmentation mIoU of a dino.txt model on a dense dataset (``python -m
dinov2.eval.zeroshot.segmentation``)::

    python -m dinov2.eval.zeroshot.segmentation --val-dataset ADE20K:root=/data/ade:split=VAL --output-dir out \\
        [--short-side 512] [--window 384 --stride 192] [--class-names names.txt] [--templates templates.txt]

Class names: ADE20K's 150 / VOC2012's 21 (the dense datasets' own lists), else ``--class-names``. Per class, the
local half of the text embeddings averaged over the templates (default: the 80 ImageNet ones); per image, the short
side resized to ``--short-side`` (bicubic), scores of :func:`dinov2.text.segmentation.segmentation_scores` resized
bilinearly to the label, argmax; mIoU / mAcc / aAcc (%) with the probes' metric
(:class:`dinov2.eval.segmentation.metrics.SegmentationMetric`, ignore index 255). One process.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dinov2.data.dataset_strings import parse_dataset_str
from dinov2.data.datasets.extended import set_unreadable_policy
from dinov2.data.dense_transforms import keep_ratio_size, make_dense_eval_transform
from dinov2.eval.common import finish_eval_run, run_protocol_cli
from dinov2.eval.segmentation.metrics import SegmentationMetric
from dinov2.eval.segmentation.probe import class_names_for
from dinov2.eval.zeroshot.cli import check_args, text_eval_inputs
from dinov2.features import eval_device
from dinov2.hub.dinotxt import add_dinotxt_args
from dinov2.text.segmentation import segmentation_scores
from dinov2.text.zeroshot import read_templates, zeroshot_weights
from dinov2.utils.cli import ArgumentParser

logger = logging.getLogger("dinov2")

__all__ = ["eval_text_segmentation", "get_args_parser", "check_args", "main", "cli_main"]

DESCRIPTION = "dino.txt open-vocabulary segmentation mIoU"


def _dense_dataset(dataset_str: str, transforms):
    """A segmentation dataset (ADE20K, VOC2012, SegmentationFolder...) with joint ``transforms``; unreadable
    images raise (a substitute would change the metric)."""
    cls, kwargs = parse_dataset_str(dataset_str)
    dataset = cls(transforms=transforms, **kwargs)
    if getattr(dataset, "kind", "segmentation") != "segmentation":
        raise ValueError(f"{dataset_str!r} is not a segmentation dataset (ADE20K, VOC2012, SegmentationFolder)")
    set_unreadable_policy(dataset, "raise")
    return dataset


def _names(dataset, class_names: Sequence[str] | None) -> list[str]:
    if class_names is not None:
        return list(class_names)
    names = class_names_for(dataset, 0)
    if not names:
        raise ValueError(f"{type(dataset).__name__} has no class names: pass --class-names (one a line, label order)")
    return names


@torch.no_grad()
def eval_text_segmentation(
    model: nn.Module,
    tokenizer,
    val_dataset,
    *,
    class_names: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    short_side: int = 512,
    window: int | None = None,
    stride: int | None = None,
    output_dir: str | None = None,
    device: torch.device | str | None = None,
    run_args=None,
) -> dict:
    """mIoU, mAcc, aAcc (%) and per-class IoU of the argmax text segmentation on ``val_dataset`` (a dataset
    string of a segmentation dataset, or a dataset object yielding ``(image [3, H, W], label [H, W])``)."""
    start = time.perf_counter()
    device = torch.device(device) if device is not None else eval_device()
    model = model.to(device).eval()
    transforms = make_dense_eval_transform("segmentation")
    dataset = _dense_dataset(val_dataset, transforms) if isinstance(val_dataset, str) else val_dataset
    names = _names(dataset, class_names)
    templates = list(templates) if templates is not None else read_templates()
    weights = zeroshot_weights(model, tokenizer, names, templates, part="local", device=device)  # [D/2, C]
    metric = SegmentationMetric(len(names), 255, names)
    for index in range(len(dataset)):
        image, label = dataset[index]
        size = keep_ratio_size(*image.shape[-2:], short_side)
        image = F.interpolate(image[None].to(device), size=size, mode="bicubic", align_corners=False)
        scores = segmentation_scores(model, image, weights, window=window, stride=stride)  # [1, C, h, w]
        scores = F.interpolate(scores, size=label.shape[-2:], mode="bilinear", align_corners=False)
        metric.update(scores[0].argmax(0).cpu(), label)
    values = metric.compute()
    results = {key: 100.0 * values[key] for key in ("mIoU", "mAcc", "aAcc")}
    logger.info("text segmentation on %s: mIoU %.2f %%", val_dataset, results["mIoU"])
    detailed = {
        "protocol": "zeroshot_segmentation",
        "val_dataset": str(val_dataset),
        "num_val": len(dataset),
        "class_names": names,
        "results": results,
        "IoU": {name: 100.0 * value for name, value in values["IoU"].items()},
    }
    finish_eval_run(output_dir, "zeroshot_segmentation", results, detailed, start=start, run_args=run_args)
    return {**results, "IoU": detailed["IoU"]}


def get_args_parser(
    description: str | None = DESCRIPTION, parents: list[argparse.ArgumentParser] | None = None, add_help: bool = True
) -> argparse.ArgumentParser:
    """Model flags, ``--val-dataset``, ``--class-names``, ``--templates``, ``--short-side``, ``--window``,
    ``--stride``, ``--output-dir``."""
    parser = ArgumentParser(description=description, parents=parents or [], add_help=add_help)
    add_dinotxt_args(parser)
    parser.add_argument("--val-dataset", dest="val_dataset_str", required=True, help="segmentation dataset string")
    parser.add_argument("--class-names", help="class names, one a line in label order (default: the dataset's)")
    parser.add_argument("--templates", help="prompt templates with '{}', one a line (default: 80 ImageNet ones)")
    parser.add_argument("--short-side", type=int, default=512, help="image short side (px) before inference")
    parser.add_argument("--window", type=int, default=None, help="sliding-window size (px); default: whole image")
    parser.add_argument("--stride", type=int, default=None, help="sliding-window stride (px); default window / 2")
    parser.add_argument("--output-dir", default=None, help="where the result files go (none when unset)")
    return parser


def main(args: argparse.Namespace) -> int:
    """Build the model the flags name and run :func:`eval_text_segmentation`."""
    positional, common = text_eval_inputs(args)
    options = dict(short_side=args.short_side, window=args.window, stride=args.stride, output_dir=args.output_dir)
    eval_text_segmentation(*positional, **common, **options)
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """Parse, check (the flags it shares with zero-shot classification: usage errors, exit code 2), run."""
    return run_protocol_cli(get_args_parser, check_args, main, DESCRIPTION, argv)


if __name__ == "__main__":
    sys.exit(cli_main())
