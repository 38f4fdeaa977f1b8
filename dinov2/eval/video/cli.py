"""Video classification from frame features (DINOv2 paper Table 7: UCF-101, Kinetics-400, Something-Something v2):
the command line and the model-level entry point.

    python -m dinov2.eval.video --model dinov2_vitl14 --train-root /data/ucf101/train --val-root /data/ucf101/test \\
        --output-dir out/ucf101
    python -m dinov2.eval.video --model dinov2_vitl14 --train-root /data/ssv2/train --val-root /data/ssv2/val \\
        --aggregation concat --output-dir out/ssv2

(or ``dinov2-eval-video``, or ``dinov2/run/eval/video.py`` on SLURM). Each clip (:class:`dinov2.data.datasets.video.
VideoClips`: frame folders or video files under ``<root>/<class>/``) gives ``--num-frames`` uniformly spaced frames
(8), each resized to 224 (short side) and centre-cropped to 224; their class tokens are averaged (``mean``) or
concatenated (``concat``, SSv2), and a linear classifier is fitted on the clip features with the released
logistic-regression protocol (C swept on 10 % of train, or on val with ``--finetune-on-val``; refit; top-1 on val).
Results: ``results_eval_video.json`` and ``results_eval_video_detailed.json``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from dinov2.data.datasets.video import VideoClips
from dinov2.eval.common import BackboneProtocol, finish_eval_run
from dinov2.eval.log_regression.solver import DEFAULT_MAX_ITER, check_fit_device, check_hold_out, eval_log_regression
from dinov2.eval.results import to_jsonable
from dinov2.eval.transfer.cli import add_fit_args, backbone_eval_transform
from dinov2.eval.video.features import AGGREGATIONS, ClipEncoder
from dinov2.features.backbone import LoadedBackbone, autocast_context
from dinov2.features.extract import extract_features
from dinov2.utils.dtype import as_torch_dtype

logger = logging.getLogger("dinov2")

__all__ = ["get_args_parser", "check_args", "eval_video_with_model", "main", "cli_main"]

DESCRIPTION = "DINOv2 video classification from frame features (linear probe)"


def _add_flags(parser: argparse.ArgumentParser) -> None:
    """The clip folders, frame sampling and aggregation, and the fit flags (after the backbone flags)."""
    add = parser.add_argument
    add("--train-root", required=True, help="training clips: <root>/<class>/<frame folder or video file>")
    add("--val-root", required=True, help="evaluation clips, same layout and classes")
    add("--num-frames", type=int, default=8, help="uniformly spaced frames per clip")
    add("--aggregation", choices=AGGREGATIONS, default="mean", help="mean of the frame features, or concat (SSv2)")
    add("--crop-size", type=int, default=224, help="centre crop of each frame (px)")
    add("--resize-size", type=int, default=None, help="short-side resize (px); default: the crop size")
    add("--finetune-on-val", action="store_true", help="choose C on the val clips instead of 10%% of train")
    add_fit_args(parser, batch_size=8)


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Missing clip folders, no frames."""
    for flag, root in (("--train-root", args.train_root), ("--val-root", args.val_root)):
        if not Path(root).is_dir():
            parser.error(f"{flag} {root!r} is not a folder of <class>/<clip> entries")
    if args.num_frames < 1:
        parser.error(f"--num-frames must be >= 1, got {args.num_frames}")


def eval_video_with_model(
    backbone: LoadedBackbone,
    train_root: str,
    val_root: str,
    *,
    num_frames: int = 8,
    aggregation: str = "mean",
    crop_size: int = 224,
    resize_size: int | None = None,
    finetune_on_val: bool = False,
    batch_size: int = 8,
    num_workers: int = 4,
    train_features_device: str = "cpu",
    train_dtype: str | torch.dtype = "float64",
    max_train_iters: int = DEFAULT_MAX_ITER,
    c_values: Sequence[float] | None = None,
    progress: bool = True,
    output_dir: str | None = None,
    run_args=None,
) -> dict:
    """Linear probe on clip features of ``backbone`` (collective). Returns ``{"top-1": %, "top-5": %, "best_C": C}``."""
    start = time.perf_counter()
    fit_device = check_fit_device(train_features_device)  # before any clip is read
    transform = backbone_eval_transform(backbone, crop_size, resize_size)
    train, val = (VideoClips(root, num_frames, transform) for root in (train_root, val_root))
    if train.classes != val.classes:
        raise ValueError(f"the classes of --train-root {train.classes} and --val-root {val.classes} differ")
    if not finetune_on_val:  # the released hold-out for C is 10 % of train
        check_hold_out(len(train), "training clips", "pass --finetune-on-val")
    encoder = ClipEncoder(backbone.model, aggregation)
    with autocast_context(backbone.autocast_dtype, next(backbone.model.parameters()).device)():
        on_cpu = fit_device.type == "cpu"
        train_x, train_y = extract_features(
            encoder, train, batch_size, num_workers, on_cpu, progress=progress, description="train clips"
        )
        val_x, val_y = extract_features(
            encoder, val, batch_size, num_workers, on_cpu, progress=progress, description="val clips"
        )
    result = eval_log_regression(
        train_x,
        train_y,
        val_x,
        val_y,
        finetune_on_val=finetune_on_val,
        c_values=c_values,
        max_iter=max_train_iters,
        dtype=as_torch_dtype(train_dtype, "--train-dtype"),
        device=fit_device,
    )
    released = to_jsonable({key: result[key] for key in ("top-1", "top-5", "best_C")})
    logger.info(
        "Video probe (%s of %d frames): top-1 %.2f, best C %.3g",
        aggregation,
        num_frames,
        released["top-1"],
        released["best_C"],
    )
    record = {
        "protocol": "video",
        "results": released,
        "sweep": result["sweep"],
        "classes": train.classes,
        "num_train": len(train),
        "num_val": len(val),
        "backbone": backbone.source,
    }
    finish_eval_run(output_dir, "video", released, record, start=start, run_args=run_args)
    return released


# cli_main: ``dinov2-eval-video`` / ``python -m dinov2.eval.video``; the SLURM launcher reads the others
CLI = BackboneProtocol(DESCRIPTION, _add_flags, _check_flags, eval_video_with_model)
get_args_parser, check_args, main, cli_main = CLI.entry_points()
