"""k-NN evaluation of a backbone: the released command line and model-level entry point.

Command line (released flags; ``python -m dinov2.eval.knn`` or ``dinov2-eval-knn``, or ``dinov2/run/eval/knn.py``
on SLURM)::

    python -m dinov2.eval.knn --config-file dinov2/configs/eval/vits14_pretrain.yaml \\
        --pretrained-weights dinov2_vits14_pretrain.pth --output-dir out/knn \\
        --train-dataset ImageFolder:root=/data/train --val-dataset ImageFolder:root=/data/val [key=value ...]

Trailing ``key=value`` (or ``--opts key=value ...``, the released flag) override the model config. The config,
the weights and the dataset strings are checked before any work (:func:`cli_main`; usage errors, exit code 2).

Features and the protocol on them come from :func:`dinov2.features.knn_scoring.knn_eval_of_model` (shared with
the online k-NN monitor of training).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence

import torch
from torch import nn

from dinov2.eval import common
from dinov2.eval.knn.core import DEFAULT_NB_KNN, DEFAULT_TEMPERATURE, format_knn_results, released_knn_results
from dinov2.eval.metrics import AccuracyAveraging, MetricType
from dinov2.eval.setup import setup_and_build_model
from dinov2.features.knn import check_k
from dinov2.features.knn_scoring import RESIZE_RATIO, knn_eval_of_model
from dinov2.utils.cli import add_overrides

logger = logging.getLogger("dinov2")

__all__ = ["RESIZE_RATIO", "get_args_parser", "eval_knn_with_model", "main", "cli_main"]

DESCRIPTION = "DINOv2 k-NN evaluation"
# the dataset flags checked before any work (dinov2.eval.common.check_eval_args)
DATASET_FLAGS = common.TRAIN_VAL_DATASETS


def get_args_parser(
    description: str | None = None, parents: list[argparse.ArgumentParser] | None = None, add_help: bool = True
) -> argparse.ArgumentParser:
    """Released k-NN flags (``--train-dataset --val-dataset --nb_knn --temperature --gather-on-cpu
    --batch-size --n-per-class-list --n-tries``) plus the set-up flags and the extras of
    :mod:`dinov2.eval.common` (``--metric-type``, ``--crop-size``, ``--resize-size``, ``--num-workers``)."""
    parser = common.get_protocol_args_parser(description, parents, add_help)
    parser.add_argument("--nb_knn", nargs="+", type=int, help="Number of NN to use. 20 is usually working the best.")
    parser.add_argument("--temperature", type=float, help="Temperature used in the voting coefficient")
    parser.add_argument(
        "--gather-on-cpu",
        action="store_true",
        help="gather the train features on the CPU (slower, avoids running out of GPU memory on large sets)",
    )
    parser.add_argument("--batch-size", type=int, help="Batch size (per process).")
    parser.add_argument("--n-per-class-list", nargs="+", type=int, help="Number to take per class (-1: all)")
    parser.add_argument("--n-tries", type=int, help="Number of tries (few-shot draws)")
    parser.add_argument("--metric-type", type=MetricType, choices=list(MetricType), help="metric")
    common.add_eval_transform_args(parser, num_workers=5, resize_ratio=RESIZE_RATIO)
    add_overrides(parser, "the model config")
    parser.set_defaults(
        nb_knn=list(DEFAULT_NB_KNN),
        temperature=DEFAULT_TEMPERATURE,
        batch_size=256,
        n_per_class_list=[-1],
        n_tries=1,
        metric_type=MetricType.MEAN_ACCURACY,
    )
    return parser


def _check_k_fits(nb_knn: Sequence[int], n_per_class_list: Sequence[int], train_count: int, name: str) -> None:
    """Fail before extracting features when k exceeds the whole train set (the search would fail afterwards)."""
    if any(n < 0 for n in n_per_class_list):
        check_k(nb_knn, train_count, name=name)


def eval_knn_with_model(
    model: nn.Module,
    output_dir: str | None = None,
    train_dataset_str="ImageNet:split=TRAIN",
    val_dataset_str="ImageNet:split=VAL",
    nb_knn: Sequence[int] = DEFAULT_NB_KNN,
    temperature: float = DEFAULT_TEMPERATURE,
    autocast_dtype: torch.dtype = torch.float,
    accuracy_averaging: AccuracyAveraging | MetricType | str = AccuracyAveraging.MEAN_ACCURACY,
    transform=None,
    gather_on_cpu: bool = False,
    batch_size: int = 256,
    num_workers: int = 5,
    n_per_class_list: Sequence[int] = (-1,),
    n_tries: int = 1,
    *,
    crop_size: int = 224,
    resize_size: int | None = None,
    progress: bool = True,
    run_args=None,
) -> dict[str, float | list[float]]:
    """k-NN evaluation of a backbone (``model(images) -> [B, D]`` cls features) on two datasets (collective).

    Datasets are dataset strings (``ImageFolder:root=R``, ``Synthetic:root=R:split=VAL``, ...) or dataset
    objects returning ``(image, label)``. ``transform`` (default: the eval transform at ``crop_size`` /
    ``resize_size``) is applied to dataset strings. ``output_dir``: where the result files go (none when
    None). Returns the released flat results on every rank, e.g. ``{"('full', 20) Top 1": 81.2, ...}``
    (percent; lists for per-class accuracy).
    """
    start = time.perf_counter()
    transform = transform or common.make_eval_transform(crop_size, resize_size, RESIZE_RATIO)
    train_dataset = common.make_eval_dataset(train_dataset_str, transform, "train")
    val_dataset = common.make_eval_dataset(val_dataset_str, transform, "val")
    train_name, val_name = str(train_dataset_str), str(val_dataset_str)
    _check_k_fits(nb_knn, n_per_class_list, len(train_dataset), train_name)
    names = {"train": train_name, "val": val_name}
    results = knn_eval_of_model(
        model, train_dataset, val_dataset,
        nb_knn=nb_knn, temperature=temperature, autocast_dtype=autocast_dtype,
        metric_type=common.as_metric_type(accuracy_averaging), gather_on_cpu=gather_on_cpu, batch_size=batch_size,
        num_workers=num_workers, n_per_class_list=n_per_class_list, n_tries=n_tries, progress=progress,
        check_labels=lambda labels, which: common.check_extracted_labels(labels, names[which]),
    )  # fmt: skip
    flat = released_knn_results(results)
    logger.info("\n%s", format_knn_results(results))
    detailed = {
        "protocol": "knn",
        "train_dataset": train_name,
        "val_dataset": val_name,
        "num_train": len(train_dataset),
        "num_val": len(val_dataset),
        "results": flat,
        "settings": {s: {"mean": e["mean"], "tries": e["tries"]} for s, e in results.items()},
    }
    common.finish_eval_run(output_dir, "knn", flat, detailed, start=start, run_args=run_args)
    return flat


def main(args: argparse.Namespace) -> int:
    """Released entry point: build the backbone from ``--config-file`` / ``--pretrained-weights`` and run k-NN."""
    return common.run_with_model(
        eval_knn_with_model, args, build=setup_and_build_model, accuracy_averaging=args.metric_type
    )


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``dinov2-eval-knn`` / ``python -m dinov2.eval.knn``: parse ``argv`` (default ``sys.argv``), check
    the config, weights and datasets (usage errors, exit code 2), run :func:`main`."""
    return common.run_eval_cli(get_args_parser, main, DESCRIPTION, DATASET_FLAGS, argv)
