"""Linear transfer to the 12 fine-grained datasets of the DINOv2 paper (Table 8): the command line and the
model-level entry point.

    python -m dinov2.eval.transfer --model dinov2_vitl14 --data-root /data/transfer --output-dir out/transfer
    python -m dinov2.eval.transfer --config-file runs/exp1/config.yaml --weights <teacher_checkpoint.pth> \\
        --data-root /data/transfer --datasets flowers pets --folder birds:train=/data/b/train:test=/data/b/test

(or ``dinov2-eval-transfer``, or ``dinov2/run/eval/transfer.py`` on SLURM). Per dataset: class-token features of
images resized to 224 (short side, bicubic) and centre-cropped to 224, the released logistic-regression protocol
(:func:`dinov2.eval.log_regression.solver.eval_log_regression`: float64 L-BFGS, C over 10^linspace(-6, 5, 45)) or its
one-vs-rest form for VOC 2007, and the dataset's metric (:mod:`~dinov2.eval.transfer.datasets`). Results:
one table, ``results_eval_transfer.json`` (``{"<dataset>": %}`` lines and ``"average"``) and
``results_eval_transfer_detailed.json`` (metrics, best C, sweeps, split sizes).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from dinov2.data.transforms import make_classification_eval_transform
from dinov2.eval.common import BackboneProtocol, check_extracted_labels, default_resize_size, finish_eval_run
from dinov2.eval.log_regression.solver import DEFAULT_MAX_ITER, check_fit_device, check_hold_out, eval_log_regression
from dinov2.eval.metrics import MetricType
from dinov2.eval.results import format_table
from dinov2.eval.transfer.datasets import TRANSFER_DATASETS, dataset_splits, folder_splits, parse_folder_spec
from dinov2.eval.transfer.multilabel import eval_multilabel_log_regression
from dinov2.features.backbone import LoadedBackbone, autocast_context
from dinov2.features.extract import extract_features
from dinov2.utils.cli import usage_errors
from dinov2.utils.dtype import as_torch_dtype

logger = logging.getLogger("dinov2")

__all__ = [
    "get_args_parser",
    "add_fit_args",
    "backbone_eval_transform",
    "check_args",
    "eval_transfer_with_model",
    "main",
    "cli_main",
]

DESCRIPTION = "DINOv2 linear transfer (12 fine-grained datasets, logistic regression)"
METRIC_TYPES = {"top1": MetricType.MEAN_ACCURACY, "mean_per_class": MetricType.MEAN_PER_CLASS_ACCURACY}


def _add_flags(parser: argparse.ArgumentParser) -> None:
    """The transfer settings (after the backbone flags)."""
    add = parser.add_argument
    add("--data-root", default=None, help="folder holding the datasets in torchvision's layout (nothing downloaded)")
    add("--datasets", nargs="+", choices=list(TRANSFER_DATASETS), default=None, help="default: all 12 (--data-root)")
    add("--folder", action="append", default=[], help="NAME:train=DIR:test=DIR[:val=DIR][:metric=...] image folders")
    add("--crop-size", type=int, default=224, help="centre crop (px)")
    add("--resize-size", type=int, default=None, help="short-side resize (px); default: the crop size")
    add("--split-seed", type=int, default=0, help="seed of Caltech-101's 30-per-class training draw")
    add_fit_args(parser, batch_size=256)


def add_fit_args(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """Feature extraction and logistic-regression flags shared with the video probe: ``--batch-size``,
    ``--num-workers``, ``--train-features-device``, ``--train-dtype``, ``--max-train-iters``, ``--c-values``,
    ``--no-progress``."""
    add = parser.add_argument
    add("--batch-size", type=int, default=batch_size, help="feature-extraction batch size")
    add("--num-workers", type=int, default=4, help="data-loading processes")
    add("--train-features-device", default="cpu", help="device of the logistic-regression fits (cpu, cuda)")
    add("--train-dtype", default="float64", help="dtype of the fits")
    add("--max-train-iters", type=int, default=DEFAULT_MAX_ITER, help="L-BFGS iterations per fit")
    add("--c-values", type=float, nargs="+", default=None, help="C values swept (default: 10^linspace(-6, 5, 45))")
    add("--no-progress", action="store_true", help="no progress bar during feature extraction")


def backbone_eval_transform(backbone: LoadedBackbone, crop_size: int, resize_size: int | None):
    """Resize the short side to ``resize_size`` (default ``crop_size``; bicubic), centre-crop ``crop_size``,
    normalise with the backbone family's mean and std."""
    if crop_size < 1:
        raise ValueError(f"--crop-size must be >= 1, got {crop_size}")
    resize = default_resize_size(crop_size, resize_size, 1.0)
    return make_classification_eval_transform(
        resize_size=resize, crop_size=crop_size, mean=backbone.mean, std=backbone.std
    )


def _datasets(args: argparse.Namespace) -> list[str]:
    if args.datasets is not None:
        return list(args.datasets)
    return list(TRANSFER_DATASETS) if args.data_root else []


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """No dataset to evaluate, a missing --data-root, a malformed --folder or --train-dtype."""
    if _datasets(args) and not (args.data_root and Path(args.data_root).is_dir()):
        parser.error(f"--data-root {args.data_root!r} is not a folder; the datasets {_datasets(args)} are read there")
    if not _datasets(args) and not args.folder:
        parser.error("nothing to evaluate: give --data-root (and --datasets) or --folder")
    with usage_errors(parser, ValueError):
        for spec in args.folder:
            parse_folder_spec(spec)
        as_torch_dtype(args.train_dtype, "--train-dtype")


def _features(model, dataset, name: str, options: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    if dataset is None:
        return None
    features, labels = extract_features(
        model,
        dataset,
        options["batch_size"],
        options["num_workers"],
        gather_on_cpu=options["on_cpu"],
        progress=options["progress"],
        description=name,
    )
    check_extracted_labels(labels, name)
    return features, labels


def _check_hold_out(name: str, splits: dict) -> None:
    """Without a val split, C is chosen on 10 % of train (as released): refuse a train split too small for one."""
    if splits.get("val") is None:
        check_hold_out(len(splits["train"]), f"training images of {name}", "add a val split")


def _evaluate(model, name: str, metric: str, splits: dict, options: dict) -> dict:
    """One dataset: features of each split, the C sweep, the test metric (percent)."""
    feats = {role: _features(model, ds, f"{name} {role}", options) for role, ds in splits.items()}
    sizes = {role: 0 if f is None else len(f[1]) for role, f in feats.items()}
    fit = {key: options[key] for key in ("max_iter", "dtype", "device", "c_values")}
    if metric == "map11":
        multi_hot = {role: splits[role].multi_hot[f[1].cpu().numpy()] for role, f in feats.items()}
        pairs = {role: (feats[role][0], multi_hot[role]) for role in feats}
        result = eval_multilabel_log_regression(pairs["train"], pairs["val"], pairs["test"], **fit)
        return {"metric": metric, "score": result["mAP"], "best_C": result["best_C"], "sizes": sizes, **result}
    val = feats["val"] or (None, None)
    result = eval_log_regression(
        *feats["train"],
        *feats["test"],
        finetune_features=val[0],
        finetune_labels=val[1],
        metric_type=METRIC_TYPES[metric],
        **fit,
    )
    score = float(result["top-1"])
    return {"metric": metric, "score": score, "best_C": result["best_C"], "sizes": sizes, "sweep": result["sweep"]}


def eval_transfer_with_model(
    backbone: LoadedBackbone,
    data_root: str | None = None,
    datasets: Sequence[str] | None = None,
    folder: Sequence[str] = (),
    *,
    crop_size: int = 224,
    resize_size: int | None = None,
    batch_size: int = 256,
    num_workers: int = 4,
    train_features_device: str = "cpu",
    train_dtype: str | torch.dtype = "float64",
    max_train_iters: int = DEFAULT_MAX_ITER,
    c_values: Sequence[float] | None = None,
    split_seed: int = 0,
    progress: bool = True,
    output_dir: str | None = None,
    run_args=None,
) -> dict[str, float]:
    """Transfer scores of ``backbone`` (percent) per dataset and their ``"average"`` (collective)."""
    start = time.perf_counter()
    transform = backbone_eval_transform(backbone, crop_size, resize_size)
    device = check_fit_device(train_features_device)  # before any feature is extracted
    options = dict(
        batch_size=batch_size,
        num_workers=num_workers,
        on_cpu=device.type == "cpu",
        progress=progress,
        max_iter=max_train_iters,
        dtype=as_torch_dtype(train_dtype, "--train-dtype"),
        device=device,
        c_values=c_values,
    )
    names = list(datasets) if datasets is not None else (list(TRANSFER_DATASETS) if data_root else [])
    detailed = {}
    model = backbone.model
    jobs = [
        (name, TRANSFER_DATASETS[name].metric, dataset_splits(name, data_root, transform, split_seed)) for name in names
    ]
    for spec in folder:
        name, metric, folders = parse_folder_spec(spec)
        jobs.append((name, metric, folder_splits(folders, transform)))
    for name, _, splits in jobs:  # every dataset is checked before any feature is extracted
        _check_hold_out(name, splits)
    with autocast_context(backbone.autocast_dtype, next(model.parameters()).device)():
        for name, metric, splits in jobs:
            detailed[name] = _evaluate(model, name, metric, splits, options)
    flat = {name: entry["score"] for name, entry in detailed.items()}
    flat["average"] = sum(flat.values()) / max(len(flat), 1)
    rows = [
        {
            "dataset": n,
            "metric": e["metric"],
            "score": e["score"],
            "best C": f"{e['best_C']:.3g}",
            **{f"n {r}": s for r, s in e["sizes"].items()},
        }
        for n, e in detailed.items()
    ]
    rows.append({"dataset": "average", "score": flat["average"]})
    logger.info("\n%s", format_table(rows, title="Linear transfer (logistic regression, %)"))
    record = {"protocol": "transfer", "results": flat, "datasets": detailed, "backbone": backbone.source}
    finish_eval_run(output_dir, "transfer", flat, record, start=start, run_args=run_args)
    return flat


# cli_main: ``dinov2-eval-transfer`` / ``python -m dinov2.eval.transfer``; the SLURM launcher reads the others
CLI = BackboneProtocol(DESCRIPTION, _add_flags, _check_flags, eval_transfer_with_model)
get_args_parser, check_args, main, cli_main = CLI.entry_points()
