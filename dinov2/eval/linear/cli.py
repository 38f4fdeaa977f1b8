"""Linear evaluation of a backbone: the released command line and model-level entry point.

    python -m dinov2.eval.linear --config-file dinov2/configs/eval/vits14_pretrain.yaml \\
        --pretrained-weights dinov2_vits14_pretrain.pth --output-dir out/linear \\
        --train-dataset ImageFolder:root=/data/train --val-dataset ImageFolder:root=/data/val [key=value ...]

(or ``dinov2-eval-linear``, or ``dinov2/run/eval/linear.py`` on SLURM). Trailing ``key=value`` (or ``--opts key=value
...``, the released flag) override the model config; the config, weights and dataset strings are checked before any
work (:func:`cli_main`: usage errors, exit code 2). The grid is in :mod:`dinov2.eval.linear.classifiers`, its training
loop in :mod:`dinov2.eval.linear.train`, checkpoints in :mod:`dinov2.eval.linear.checkpoint`, evaluation data in
:mod:`dinov2.eval.linear.data` (the package re-exports the released names).

Released behaviour: train transform ``RandomResizedCrop(224)`` + flip, sharded infinite sampler (seed 0,
drop last), ``epochs * epoch_length`` iterations, validation every ``--eval-period-iterations`` and at the
end, named checkpoints every ``--save-checkpoint-frequency`` epochs and a running one every epoch, resume
from ``--output-dir`` unless ``--no-resume``, test sets scored with the classifier chosen on validation.
Deliberate differences: the sampler resumes exactly (``start_iter * batch_size`` samples skipped; the
release skipped ``start_iter`` samples); validation and test images are split across ranks without
duplicates; the number of classes is ``max(train label) + 1`` (the release counted distinct labels, the
same for contiguous labels); ``--test-class-mapping-fpaths`` may be omitted for several test sets.
The best classifier among those with a hub layout (avgpool, 1 or 4 blocks) is saved as
``linear_head.pth`` (1 block) or ``linear4_head.pth`` (4 blocks) in the hub ``_lc`` head format:
``torch.hub.load("facebookresearch/dinov2", "dinov2_vits14_lc", layers=4, weights=".../linear4_head.pth",
backbone_weights="dinov2_vits14_pretrain.pth")`` or ``dinov2.hub.classifiers.dinov2_vits14_lc(...)``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from dinov2 import distributed
from dinov2.data import SamplerType, make_data_loader
from dinov2.data.transforms import make_classification_train_transform
from dinov2.eval import common
from dinov2.eval.linear.checkpoint import resume_or_load, save_hub_linear_head
from dinov2.eval.linear.classifiers import (
    DEFAULT_LEARNING_RATES,
    DEFAULT_N_LAST_BLOCKS_LIST,
    AllClassifiers,
)
from dinov2.eval.linear.data import load_class_mapping, make_eval_data_loader, num_classes_of, resolve_test_settings
from dinov2.eval.linear.train import (
    best_hub_classifier,
    evaluate_linear_classifiers,
    setup_probe,
    train_linear_classifiers,
)
from dinov2.eval.metrics import MetricType
from dinov2.eval.results import format_table
from dinov2.eval.setup import setup_and_build_model
from dinov2.utils.cli import add_overrides

logger = logging.getLogger("dinov2")

__all__ = [
    "RESIZE_RATIO",
    "get_args_parser",
    "format_linear_results",
    "test_on_datasets",
    "run_eval_linear",
    "main",
    "cli_main",
]

RESIZE_RATIO = 256 / 224
DESCRIPTION = "DINOv2 linear evaluation"
# the dataset flags checked before any work (dinov2.eval.common.check_eval_args)
DATASET_FLAGS = (*common.TRAIN_VAL_DATASETS, ("--test-datasets", "test_dataset_strs", False))


def get_args_parser(
    description: str | None = None, parents: list[argparse.ArgumentParser] | None = None, add_help: bool = True
) -> argparse.ArgumentParser:
    """Released linear-evaluation flags and defaults, plus ``--crop-size`` / ``--resize-size``."""
    parser = common.get_protocol_args_parser(description, parents, add_help)
    add = parser.add_argument
    add("--test-datasets", dest="test_dataset_strs", type=str, nargs="+", help="Test datasets (default: val)")
    add("--epochs", type=int, help="Number of training epochs")
    add("--batch-size", type=int, help="Batch Size (per GPU)")
    add("--num-workers", type=int, help="Number of data-loading workers")
    add("--epoch-length", type=int, help="Length of an epoch in number of iterations")
    add("--save-checkpoint-frequency", type=int, help="Number of epochs between two named checkpoint saves.")
    add("--eval-period-iterations", type=int, help="Number of iterations between two evaluations.")
    add("--learning-rates", nargs="+", type=float, help="Learning rates to grid search.")
    add("--no-resume", action="store_true", help="Whether to not resume from existing checkpoints")
    add("--val-metric-type", type=MetricType, choices=list(MetricType), help="Validation metric")
    add("--test-metric-types", type=MetricType, choices=list(MetricType), nargs="+", help="Evaluation metric")
    add("--classifier-fpath", type=str, help="Path to a file containing pretrained linear classifiers")
    add("--val-class-mapping-fpath", type=str, help="Path to a .npy mapping to adjust classifier outputs")
    add("--test-class-mapping-fpaths", nargs="+", type=str, help="Path(s) to .npy mappings, one per test set")
    common.add_eval_transform_args(parser, num_workers=None, resize_ratio=RESIZE_RATIO, progress=False)
    add_overrides(parser, "the model config")
    parser.set_defaults(
        test_dataset_strs=None,
        epochs=10,
        batch_size=128,
        num_workers=8,
        epoch_length=1250,
        save_checkpoint_frequency=20,
        eval_period_iterations=1250,
        learning_rates=list(DEFAULT_LEARNING_RATES),
        val_metric_type=MetricType.MEAN_ACCURACY,
        test_metric_types=None,
        classifier_fpath=None,
        val_class_mapping_fpath=None,
        test_class_mapping_fpaths=[None],
    )
    return parser


def _save_hub_head(output_dir, val_results: dict, classifiers: AllClassifiers) -> dict | None:
    """Save the best hub-compatible classifier as ``linear[4]_head.pth``; returns its description."""
    best = best_hub_classifier(val_results, classifiers)
    if best is None or not output_dir:
        return None
    path = Path(output_dir) / f"linear{'4' if best['layers'] == 4 else ''}_head.pth"
    if distributed.is_main_process():
        save_hub_linear_head(classifiers.classifiers_dict[best["name"]], path)
        logger.info(
            "Saved %s (layers=%d), the best hub-compatible classifier (avgpool=True), as the hub linear head %s",
            best["name"],
            best["layers"],
            path,
        )
    return {"name": best["name"], "layers": best["layers"], "path": str(path), "val top-1": 100.0 * best["accuracy"]}


def _percent(metrics: dict) -> dict:
    """``{"top-1": fraction, ...}`` -> percent (tensors of per-class values too)."""
    return {name: 100.0 * value for name, value in metrics.items()}


def format_linear_results(val_results: dict, results: dict) -> str:
    """Table of the best learning rate per (blocks, avgpool) on validation, then the released results."""
    rows = {}
    for name, metrics in val_results["classifiers"].items():
        classifier = name.split("_lr_")[0].removeprefix("classifier_")
        top1 = float(metrics["top-1"].nanmean())
        if classifier not in rows or top1 > rows[classifier]["top-1"]:
            row = {"classifier": classifier, "best lr": name.split("_lr_")[1].replace("_", ".", 1), "top-1": top1}
            rows[classifier] = {**row, "top-5": float(metrics.get("top-5", metrics["top-1"]).nanmean())}
    table = format_table([{**r, "top-1": 100 * r["top-1"], "top-5": 100 * r["top-5"]} for r in rows.values()])
    summary = "\n".join(
        f"{key}: {value if isinstance(value, str) else f'{value:.2f}'}" for key, value in results.items()
    )
    return f"Linear probe, validation accuracy (%) of the best learning rate (scaled) per input:\n{table}\n{summary}"


def _test_on_datasets(
    feature_model, classifiers, tests, batch_size, num_classes, best_name, file, iteration, *, num_workers=0, transform
):
    """Score the classifier chosen on validation on each ``(dataset, metric type, class mapping)`` of ``tests``.

    Returns ``({"<dataset>_accuracy": %}, {dataset: per-dataset metrics of that classifier})``.
    """
    results, details = {}, {}
    for dataset_str, metric_type, mapping in zip(*tests):
        logger.info("Testing on %s", dataset_str)
        loader = make_eval_data_loader(dataset_str, batch_size, num_workers, metric_type, transform=transform)
        out = evaluate_linear_classifiers(
            feature_model, classifiers, loader, metric_type, file, num_classes, iteration, f"TEST {dataset_str}",
            mapping, best_name,
        )  # fmt: skip
        results[f"{dataset_str}_accuracy"] = 100.0 * out["best_classifier"]["accuracy"]
        details[dataset_str] = {"metric_type": MetricType(metric_type), **_percent(out["classifiers"][best_name])}
    return results, details


def test_on_datasets(
    feature_model,
    linear_classifiers: AllClassifiers,
    test_dataset_strs: Sequence[str],
    batch_size: int,
    num_workers: int,
    test_metric_types: Sequence[MetricType | str],
    metrics_file_path,
    training_num_classes: int,
    iteration: int,
    best_classifier_on_val: str,
    prefixstring: str = "",
    test_class_mappings: Sequence = (None,),
    *,
    transform=None,
) -> dict[str, float]:
    """Released name: score ``best_classifier_on_val`` on each test set; ``{"<dataset>_accuracy": %}``.

    ``test_class_mappings``: one class mapping (array or None) per test set (a single None for all).
    ``transform``: the eval transform (default: the released one, resize 256 and centre crop 224).
    ``prefixstring`` is accepted for compatibility (the release passed it to its log lines).
    """
    mappings = list(test_class_mappings)
    mappings = mappings * len(test_dataset_strs) if mappings == [None] else mappings
    tests = (list(test_dataset_strs), list(test_metric_types), mappings)
    results, _ = _test_on_datasets(
        feature_model, linear_classifiers, tests, batch_size, training_num_classes, best_classifier_on_val,
        metrics_file_path, iteration, num_workers=num_workers, transform=transform,
    )  # fmt: skip
    return results


def run_eval_linear(
    model: nn.Module,
    output_dir: str,
    train_dataset_str,
    val_dataset_str,
    batch_size: int,
    epochs: int,
    epoch_length: int,
    num_workers: int,
    save_checkpoint_frequency: int,
    eval_period_iterations: int,
    learning_rates: Sequence[float],
    autocast_dtype: torch.dtype,
    test_dataset_strs: Sequence[str] | None = None,
    resume: bool = True,
    classifier_fpath: str | None = None,
    val_class_mapping_fpath: str | None = None,
    test_class_mapping_fpaths: Sequence[str | None] = (None,),
    val_metric_type: MetricType | str = MetricType.MEAN_ACCURACY,
    test_metric_types: Sequence[MetricType | str] | None = None,
    *,
    crop_size: int = 224,
    resize_size: int | None = None,
    n_last_blocks_list: Sequence[int] = DEFAULT_N_LAST_BLOCKS_LIST,
    seed: int = 0,
    run_args=None,
) -> dict:
    """Train the linear grid on a frozen backbone and evaluate it (collective); released arguments.

    Returns the released results ``{"best_classifier": name, "<val>_accuracy": %, "<test>_accuracy": %}``.
    Writes ``results_eval_linear.json`` (released blocks), ``results_eval_linear_detailed.json``, the
    checkpoints and the hub head ``linear[4]_head.pth`` to ``output_dir``.
    """
    start = time.perf_counter()
    tests = resolve_test_settings(
        val_dataset_str, val_metric_type, test_dataset_strs, test_metric_types, test_class_mapping_fpaths
    )
    train_dataset = common.make_eval_dataset(
        train_dataset_str, make_classification_train_transform(crop_size=crop_size), "train"
    )
    eval_transform = common.make_eval_transform(crop_size, resize_size, RESIZE_RATIO)
    num_classes = num_classes_of(train_dataset, train_dataset_str)
    probe = setup_probe(
        model, train_dataset[0][0], n_last_blocks_list, learning_rates, batch_size, num_classes, autocast_dtype,
        epochs * epoch_length,
    )  # fmt: skip
    feature_model, classifiers = probe.feature_model, probe.classifiers
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    start_iter = resume_or_load(
        output_dir, classifiers, probe.optimizer, probe.scheduler, classifier_fpath=classifier_fpath, resume=resume
    )
    logger.info(
        "Training %d linear classifiers (%d classes) from iteration %d", len(classifiers), num_classes, start_iter
    )
    train_loader = make_data_loader(
        dataset=train_dataset, batch_size=batch_size, num_workers=num_workers, shuffle=True, seed=seed,
        sampler_type=SamplerType.SHARDED_INFINITE, sampler_advance=start_iter * batch_size, drop_last=True,
        persistent_workers=True,
    )  # fmt: skip
    metrics_file = os.path.join(output_dir, "results_eval_linear.json")
    val_loader = make_eval_data_loader(
        val_dataset_str, batch_size, num_workers, val_metric_type, transform=eval_transform
    )
    val_results, iteration = train_linear_classifiers(
        **probe._asdict(), train_data=train_loader, max_iter=epochs * epoch_length, start_iter=start_iter,
        val_data=val_loader,
        eval_period=eval_period_iterations, metric_type=val_metric_type, num_classes=num_classes,
        val_class_mapping=load_class_mapping(val_class_mapping_fpath), output_dir=output_dir,
        checkpoint_period=save_checkpoint_frequency * epoch_length, running_checkpoint_period=epoch_length,
        metrics_file_path=metrics_file,
    )  # fmt: skip
    best_name = val_results["best_classifier"]["name"]
    results, test_details = {}, {}
    if len(tests[0]) > 1 or tests[0][0] != val_dataset_str:
        tests = (tests[0], tests[1], [load_class_mapping(path) for path in tests[2]])
        results, test_details = _test_on_datasets(
            feature_model, classifiers, tests, batch_size, num_classes, best_name, metrics_file, iteration,
            transform=eval_transform,
        )  # fmt: skip
    results["best_classifier"] = best_name
    results[f"{val_dataset_str}_accuracy"] = 100.0 * val_results["best_classifier"]["accuracy"]
    logger.info("Test Results Dict %s", results)
    logger.info("\n%s", format_linear_results(val_results, results))
    val_percent = {name: _percent(metrics) for name, metrics in val_results["classifiers"].items()}
    detailed = {
        "protocol": "linear", "results": results, "hub_head": _save_hub_head(output_dir, val_results, classifiers),
        "num_classes": num_classes, "iterations": iteration, "tests": test_details,
        "val": {"dataset": str(val_dataset_str), "classifiers": val_percent},
    }  # fmt: skip
    common.finish_eval_run(output_dir, "linear", None, detailed, start=start, run_args=run_args)
    return results


def main(args: argparse.Namespace) -> int:
    """Released entry point: build the backbone from ``--config-file`` / ``--pretrained-weights``, run the probe."""
    return common.run_with_model(run_eval_linear, args, build=setup_and_build_model, resume=not args.no_resume)


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``dinov2-eval-linear`` / ``python -m dinov2.eval.linear``: parse ``argv`` (default ``sys.argv``), check
    the config, weights and datasets (usage errors, exit code 2), run :func:`main`."""
    return common.run_eval_cli(get_args_parser, main, DESCRIPTION, DATASET_FLAGS, argv)
