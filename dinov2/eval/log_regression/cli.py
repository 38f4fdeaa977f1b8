"""Logistic-regression evaluation of a backbone: the command line and the model-level entry point.

    python -m dinov2.eval.log_regression --config-file dinov2/configs/eval/vits14_pretrain.yaml \\
        --pretrained-weights dinov2_vits14_pretrain.pth --output-dir out/logreg \\
        --train-dataset ImageFolder:root=/data/train --val-dataset ImageFolder:root=/data/val [key=value ...]

(or ``dinov2-eval-log-regression``, or ``dinov2/run/eval/log_regression.py`` on SLURM). Trailing ``key=value``
(or ``--opts key=value ...``, the released flag) override the model config; the config, weights and dataset strings
are checked before any work (:func:`cli_main`: usage errors, exit code 2).

Released facts: cls features (not normalised) of images resized to 224 and centre-cropped to 224, batch 256; C swept
over ``10 ** linspace(-6, 5, 45)`` on a fine-tune set (``--finetune-dataset-str``, the val set with
``--finetune-on-val``, else 10 % of train), refit, evaluated on val. The solver
(:mod:`dinov2.eval.log_regression.solver`) is float64 L-BFGS on torch, on ``--train-features-device`` (CPU by
default, or a GPU): no cuML needed. The release wrote no result file; here ``results_eval_log_regression.json`` gets
``top-1`` / ``top-5`` / ``best_C`` lines and ``results_eval_log_regression_detailed.json`` the sweep.
``--train-dtype`` is read by :func:`dinov2.utils.dtype.as_torch_dtype`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from collections.abc import Sequence

import torch
from torch import nn

from dinov2.eval import common
from dinov2.eval.log_regression import solver
from dinov2.eval.log_regression.solver import (
    DEFAULT_MAX_ITER,
    check_fit_device,
    check_hold_out,
    format_log_regression_results,
)
from dinov2.eval.metrics import MetricType
from dinov2.eval.results import to_jsonable
from dinov2.eval.setup import autocast_context, setup_and_build_model
from dinov2.features.extract import extract_features
from dinov2.utils.cli import add_overrides
from dinov2.utils.dtype import as_torch_dtype as parse_any_dtype

logger = logging.getLogger("dinov2")

__all__ = [
    "RESIZE_RATIO",
    "as_torch_dtype",
    "get_args_parser",
    "eval_log_regression",
    "eval_log_regression_with_model",
    "main",
    "cli_main",
]

RESIZE_RATIO = 1.0  # released: make_classification_eval_transform(resize_size=224), crop 224
DESCRIPTION = "DINOv2 logistic regression evaluation"
# the dataset flags checked before any work (dinov2.eval.common.check_eval_args)
DATASET_FLAGS = (*common.TRAIN_VAL_DATASETS, ("--finetune-dataset-str", "finetune_dataset_str", False))


def as_torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """``--train-dtype`` (``"float64"``, ``"double"``, ``torch.float64``, ...) as a ``torch.dtype``."""
    return parse_any_dtype(name, "--train-dtype")


def get_args_parser(
    description: str | None = None, parents: list[argparse.ArgumentParser] | None = None, add_help: bool = True
) -> argparse.ArgumentParser:
    """Released logistic-regression flags and defaults, plus ``--batch-size``, ``--num-workers`` and the
    transform sizes of :mod:`dinov2.eval.common`."""
    parser = common.get_protocol_args_parser(description, parents, add_help)
    add = parser.add_argument
    add("--finetune-dataset-str", dest="finetune_dataset_str", type=str, help="Fine-tuning dataset (chooses C)")
    add(
        "--finetune-on-val",
        action="store_true",
        help="without a fine-tune dataset, choose C on the val set instead of 10%% of the train set",
    )
    add("--metric-type", type=MetricType, choices=list(MetricType), help="Metric type")
    add("--train-features-device", type=str, help="Device holding the features and fitting (cpu, cuda, cuda:0 ...)")
    add("--train-dtype", type=str, help="Data type of the fit")
    add("--max-train-iters", type=int, help="Maximum number of L-BFGS iterations per fit")
    add("--batch-size", type=int, default=256, help="feature-extraction batch size")
    common.add_eval_transform_args(parser, num_workers=0, resize_ratio=RESIZE_RATIO)
    add_overrides(parser, "the model config")
    parser.set_defaults(
        finetune_dataset_str=None,
        metric_type=MetricType.MEAN_ACCURACY,
        train_features_device="cpu",
        train_dtype="float64",
        max_train_iters=DEFAULT_MAX_ITER,
        finetune_on_val=False,
    )
    return parser


def _extract_and_fit(
    model: nn.Module,
    datasets: dict[str, tuple[object, str]],
    *,
    batch_size: int,
    num_workers: int,
    progress: bool,
    finetune_on_val: bool,
    metric_type: MetricType | str,
    max_train_iters: int,
    train_dtype: torch.dtype | str,
    fit_device: torch.device,
    autocast=contextlib.nullcontext,
) -> dict:
    """Labelled features of each dataset of ``datasets`` (role ``train`` / ``val`` / ``fine-tune`` -> (dataset, name
    in errors)) on every rank, inside ``autocast()``, then the released fit
    (:func:`dinov2.eval.log_regression.solver.eval_log_regression`) outside it."""
    fit_device = check_fit_device(fit_device)  # before any feature is extracted
    if "fine-tune" not in datasets and not finetune_on_val:
        fix = "pass --finetune-on-val (C chosen on val) or --finetune-dataset-str"
        check_hold_out(len(datasets["train"][0]), f"training images in {datasets['train'][1]!r}", fix)
    features = {}
    with autocast():
        for role, (dataset, name) in datasets.items():
            features[role] = extract_features(
                model, dataset, batch_size, num_workers, fit_device.type == "cpu", progress=progress, description=role
            )
            common.check_extracted_labels(features[role][1], name)
    finetune = features.get("fine-tune", (None, None))
    return solver.eval_log_regression(
        *features["train"], *features["val"], finetune_features=finetune[0], finetune_labels=finetune[1],
        finetune_on_val=finetune_on_val, metric_type=common.as_metric_type(metric_type), max_iter=max_train_iters,
        dtype=as_torch_dtype(train_dtype), device=fit_device,
    )  # fmt: skip


def eval_log_regression(
    *,
    model: nn.Module,
    train_dataset,
    val_dataset,
    finetune_dataset,
    metric_type: MetricType | str,
    batch_size: int,
    num_workers: int,
    finetune_on_val: bool = False,
    train_dtype: torch.dtype | str = torch.float64,
    train_features_device: torch.device | str = "cpu",
    max_train_iters: int = DEFAULT_MAX_ITER,
) -> dict:
    """The release's logistic regression of ``model`` on labelled datasets of transformed images (collective), its
    signature and its results: ``{"top-1": fraction, "top-5": fraction, "best_C": C}`` (accuracies in [0, 1] as
    released; ``eval_log_regression_with_model`` gives percents). C is chosen on ``finetune_dataset``, else on val
    (``finetune_on_val``), else on 10 % of train, as released; the fit is
    :func:`dinov2.eval.log_regression.solver.eval_log_regression`."""
    given = {"train": train_dataset, "val": val_dataset, "fine-tune": finetune_dataset}
    results = _extract_and_fit(
        model, {role: (dataset, role) for role, dataset in given.items() if dataset is not None},
        batch_size=batch_size, num_workers=num_workers, progress=True, finetune_on_val=finetune_on_val,
        metric_type=metric_type, max_train_iters=max_train_iters, train_dtype=train_dtype,
        fit_device=torch.device(train_features_device),
    )  # fmt: skip
    fractions = {key: torch.as_tensor(results[key]) / 100.0 for key in ("top-1", "top-5")}
    return {**fractions, "best_C": results["best_C"]}


def eval_log_regression_with_model(
    model: nn.Module,
    train_dataset_str="ImageNet:split=TRAIN",
    val_dataset_str="ImageNet:split=VAL",
    finetune_dataset_str=None,
    autocast_dtype: torch.dtype = torch.float,
    finetune_on_val: bool = False,
    metric_type: MetricType | str = MetricType.MEAN_ACCURACY,
    train_dtype: torch.dtype | str = torch.float64,
    train_features_device: torch.device | str = "cpu",
    max_train_iters: int = DEFAULT_MAX_ITER,
    *,
    output_dir: str | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    crop_size: int = 224,
    resize_size: int | None = None,
    progress: bool = True,
    run_args=None,
) -> dict:
    """Logistic-regression evaluation of ``model`` (``model(images) -> [B, D]``) on dataset strings or
    dataset objects (collective). Returns ``{"top-1": %, "top-5": %, "best_C": C}`` (released keys;
    per-class lists with ``metric_type=per_class_accuracy``) and writes the result files to ``output_dir``.
    """
    start = time.perf_counter()
    transform = common.make_eval_transform(crop_size, resize_size, RESIZE_RATIO)
    model.eval()
    given = {"train": train_dataset_str, "val": val_dataset_str, "fine-tune": finetune_dataset_str or None}
    datasets = {
        role: (common.make_eval_dataset(s, transform, role), str(s)) for role, s in given.items() if s is not None
    }
    results = _extract_and_fit(
        model, datasets, batch_size=batch_size, num_workers=num_workers, progress=progress,
        finetune_on_val=finetune_on_val, metric_type=metric_type, max_train_iters=max_train_iters,
        train_dtype=train_dtype, fit_device=torch.device(train_features_device),
        autocast=autocast_context(autocast_dtype, next(model.parameters()).device),
    )  # fmt: skip
    logger.info("\n%s", format_log_regression_results(results))
    released = to_jsonable({key: results[key] for key in ("top-1", "top-5", "best_C")})
    detailed = {
        "protocol": "log_regression",
        "train_dataset": str(train_dataset_str),
        "val_dataset": str(val_dataset_str),
        "finetune_dataset": None if finetune_dataset_str is None else str(finetune_dataset_str),
        "finetune_on_val": finetune_on_val,
        "results": released,
        "sweep": results["sweep"],
    }
    common.finish_eval_run(output_dir, "log_regression", released, detailed, start=start, run_args=run_args)
    return released


def main(args: argparse.Namespace) -> int:
    """Released entry point: build the backbone from ``--config-file`` / ``--pretrained-weights``, run the sweep."""
    return common.run_with_model(
        eval_log_regression_with_model,
        args,
        build=setup_and_build_model,
        train_dtype=as_torch_dtype(args.train_dtype),
        train_features_device=torch.device(args.train_features_device),
    )


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``dinov2-eval-log-regression`` / ``python -m dinov2.eval.log_regression``: parse ``argv`` (default
    ``sys.argv``), check the config, weights and datasets (usage errors, exit code 2), run :func:`main`."""
    return common.run_eval_cli(get_args_parser, main, DESCRIPTION, DATASET_FLAGS, argv)
