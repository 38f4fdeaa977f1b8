"""Supervised fine-tuning of a backbone: the command line.

    python -m dinov2.eval.finetune --model dinov2_vits14 --output-dir out/finetune \\
        --train-dataset ImageFolder:root=/data/train --val-dataset ImageFolder:root=/data/val \\
        --epochs 10 --unfreeze-last-blocks 4 --layer-decay 0.75

(or ``dinov2-finetune``, or ``dinov2/run/eval/finetune.py`` on SLURM). The backbone comes through the backbone door
(:func:`dinov2.features.load_backbone`) with the flags of :mod:`dinov2.features.backbone_args`: a hub name
(``--model``, released weights or ``--weights``), a training config's teacher (``--config-file`` + ``--weights``,
e.g. a run's ``config.yaml`` and ``teacher_checkpoint.pth``) or ``--weights`` alone (a file or folder whose
architecture the weights tell: a fine-tuning export, a Hugging Face / timm folder). The config, weights and
dataset strings are checked before any work (usage errors, exit code 2). Restarting the same command resumes
from ``<output-dir>/checkpoints`` unless ``--no-resume``. The run itself: :func:`dinov2.eval.finetune.run.run_finetune`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from dinov2 import distributed
from dinov2.config import resolve_config_file
from dinov2.data.dataset_strings import parse_dataset_str
from dinov2.eval import common
from dinov2.eval.finetune.run import run_finetune
from dinov2.eval.linear.classifiers import DEFAULT_LEARNING_RATES
from dinov2.eval.metrics import MetricType
from dinov2.features.backbone_args import add_backbone_args, check_backbone_args, loaded_from_args
from dinov2.features.knn_scoring import DEFAULT_NB_KNN, RESIZE_RATIO
from dinov2.models.weights import is_url
from dinov2.utils.cli import ArgumentParser, add_output_dir, call_with_args, check_writable_dir, usage_errors
from dinov2.utils.config import default_setup
from dinov2.utils.dtype import parse_dtype

__all__ = ["DESCRIPTION", "get_args_parser", "check_args", "main", "cli_main"]

DESCRIPTION = "DINOv2 supervised fine-tuning of a backbone with a linear head"
DATASET_FLAGS = common.TRAIN_VAL_DATASETS


def _blocks(value: str) -> int | None:
    """``--unfreeze-last-blocks``: ``all`` (None) or a number of blocks >= 0."""
    if value == "all":
        return None
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number of blocks >= 0 or 'all'")
    return number


def get_args_parser(
    description: str | None = None, parents: list[argparse.ArgumentParser] | None = None, add_help: bool = True
) -> argparse.ArgumentParser:
    """The fine-tuning flags (the backbone door's, data, recipe, measurements)."""
    parser = ArgumentParser(description=description, parents=parents or [], add_help=add_help)
    add_backbone_args(parser)
    add_output_dir(parser, help="where checkpoints, the export and the results go (default: the working directory)")
    add = parser.add_argument
    add("--train-dataset", dest="train_dataset_str", help="labelled train set, e.g. ImageFolder:root=/data/train")
    add("--val-dataset", dest="val_dataset_str", help="labelled val set")
    add("--batch-size", type=int, default=32, help="images per process and iteration")
    add("--epochs", type=int, default=10, help="number of epochs")
    add("--epoch-length", type=int, default=None, help="iterations per epoch (default: one pass over the train set)")
    add("--lr", type=float, default=1e-4, help="peak learning rate per 256 images (scaled by the global batch)")
    add("--min-lr", type=float, default=1e-6, help="final learning rate of the cosine, per 256 images")
    add("--warmup-epochs", type=float, default=1.0, help="linear warm-up from 0, in epochs")
    add("--weight-decay", type=float, default=0.05, help="AdamW weight decay (none on biases, norms, gammas)")
    add("--layer-decay", type=float, default=0.75, help="layer-wise lr decay r: block i of L gets r^(L-i)")
    add("--patch-embed-lr-mult", type=float, default=1.0, help="extra lr multiplier of the patch embedding")
    add("--clip-grad", type=float, default=3.0, help="gradient norm clipping (0: off)")
    add("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    add("--unfreeze-last-blocks", type=_blocks, default=None, metavar="N|all", help="blocks trained (default all)")
    add("--n-last-blocks", type=int, default=1, help="cls tokens of the last N blocks feed the head (1 or 4)")
    add("--avgpool", action="store_true", help="append the mean patch token to the head input")
    add("--rope-augmentation", action="store_true", help="keep DINOv3's RoPE augmentation on while fine-tuning")
    add("--amp-dtype", default="bf16", choices=["bf16", "fp16", "fp32"], help="compute dtype on CUDA (CPU: fp32)")
    add("--nb-knn", type=int, nargs="*", default=list(DEFAULT_NB_KNN), help="k-NN before/after (none: skip)")
    add("--probe-learning-rates", type=float, nargs="+", default=list(DEFAULT_LEARNING_RATES), help="linear grid")
    add("--probe-iterations", type=int, default=1250, help="linear probe iterations before/after (0: skip)")
    add("--metric-type", type=MetricType, choices=list(MetricType), default=MetricType.MEAN_ACCURACY, help="val metric")
    add("--checkpoint-period", type=int, default=None, help="iterations between checkpoints (default: an epoch)")
    add("--stop-after", type=int, default=None, help="stop after this many iterations in all (checkpointed)")
    add("--no-resume", action="store_true", help="start afresh even if the output dir has checkpoints")
    common.add_eval_transform_args(parser, num_workers=8, resize_ratio=RESIZE_RATIO, progress=False)
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit code 2) before any work: no backbone named, the config file, local weights, the dataset
    strings."""
    check_backbone_args(parser, args)
    if args.config_file:
        with usage_errors(parser, FileNotFoundError, flag="--config-file"):
            args.config_file = str(resolve_config_file(args.config_file))
    weights = args.weights
    if weights and not is_url(weights) and not os.path.exists(os.path.expanduser(weights)):
        parser.error(f"--weights {weights!r} does not exist (a file, a checkpoint folder or a URL)")
    missing = [flag for flag, attribute, _ in DATASET_FLAGS if not getattr(args, attribute, None)]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    for flag, attribute, _ in DATASET_FLAGS:
        with usage_errors(parser, ValueError, flag=flag):
            parse_dataset_str(getattr(args, attribute))
    if args.output_dir:  # last: a mistake above makes no folder
        check_writable_dir(parser, args.output_dir, "--output-dir")


def main(args: argparse.Namespace) -> int:
    """Join the process group (if launched with one), set up logging and seeds, load the backbone, fine-tune."""
    distributed.enable(overwrite=True)
    os.makedirs(args.output_dir or ".", exist_ok=True)
    default_setup(args, seed=args.seed)
    loaded = loaded_from_args(args, device=None)  # on the eval device
    values = dict(amp_dtype=parse_dtype(args.amp_dtype, "--amp-dtype"), resume=not args.no_resume, run_args=args)
    call_with_args(run_finetune, args, loaded=loaded, **values)
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``dinov2-finetune`` / ``python -m dinov2.eval.finetune``: parse, check (usage errors), run :func:`main`."""
    return common.run_protocol_cli(get_args_parser, check_args, main, DESCRIPTION, argv, intermixed=True)
