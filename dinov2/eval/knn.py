"""k-NN classification on frozen features (SPEC.md §6), sharded over ranks.

Protocol (released ``dinov2/eval/knn.py``): features are L2-normalised; for each query the
``max(nb_knn)`` most similar train features (cosine similarity) are found; their similarities are
turned into weights ``softmax(sims / T)`` over those ``max(nb_knn)`` neighbours, and the class score
for a given k sums the weights of the first k neighbours per class. Top-1 / top-5 accuracy per k.

Command line (released flags; ``python -m dinov2.eval.knn``, or ``dinov2/run/eval/knn.py`` on SLURM)::

    python -m dinov2.eval.knn --config-file dinov2/configs/eval/vits14_pretrain.yaml \\
        --pretrained-weights dinov2_vits14_pretrain.pth --output-dir out/knn \\
        --train-dataset ImageFolder:root=/data/train --val-dataset ImageFolder:root=/data/val

The search itself (:class:`KnnIndex`: train set sharded over ranks, exact top-k with deterministic
tie-breaking by train index) lives in :mod:`dinov2.eval.knn_search`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn

from dinov2 import distributed
from dinov2.eval.common import (
    add_eval_transform_args,
    args_record,
    as_metric_type,
    check_extracted_labels,
    make_eval_dataset,
    make_eval_transform,
    write_results,
)
from dinov2.eval.knn_search import KnnIndex
from dinov2.eval.metrics import AccuracyAveraging, MetricType, build_metric
from dinov2.eval.results import format_table
from dinov2.eval.setup import autocast_context, setup_and_build_model
from dinov2.eval.setup import get_args_parser as get_setup_args_parser
from dinov2.eval.utils import ModelWithNormalize, extract_features

logger = logging.getLogger("dinov2")

__all__ = [
    "DEFAULT_NB_KNN",
    "DEFAULT_TEMPERATURE",
    "KnnIndex",
    "knn_class_scores",
    "sample_few_shot_indices",
    "few_shot_k_list",
    "eval_knn",
    "released_knn_results",
    "format_knn_results",
    "get_args_parser",
    "eval_knn_with_model",
    "main",
]

DEFAULT_NB_KNN = (10, 20, 100, 200)
DEFAULT_TEMPERATURE = 0.07


def knn_class_scores(
    topk_sims: torch.Tensor, topk_labels: torch.Tensor, nb_knn: Sequence[int], temperature: float, num_classes: int
) -> dict[int, torch.Tensor]:
    """Class scores per k from the sorted top-max_k neighbours.

    topk_sims, topk_labels: [Q, max_k]. Weights are ``softmax(sims / T)`` over all max_k neighbours
    (not renormalised per k, as released); score[c] = sum of the weights of the first k neighbours
    with label c. Returns {k: [Q, num_classes] float32}.
    """
    max_k = topk_sims.shape[1]
    if any(k > max_k or k < 1 for k in nb_knn):
        raise ValueError(f"every k in {list(nb_knn)} must be in [1, {max_k}] (the number of neighbours found)")
    weights = torch.softmax(topk_sims.float() / temperature, dim=1)  # [Q, max_k]
    scores = weights.new_zeros(topk_sims.shape[0], num_classes)  # [Q, C]
    by_k, done = {}, 0
    for k in sorted(set(nb_knn)):
        scores = scores.scatter_add(1, topk_labels[:, done:k], weights[:, done:k])
        by_k[k], done = scores, k
    return {k: by_k[k] for k in nb_knn}


def sample_few_shot_indices(labels: torch.Tensor, n_per_class: int, seed: int) -> torch.Tensor:
    """Indices of ``n_per_class`` random samples of every class (all of a class's samples if fewer).

    Same draw as the released ``filter_train``: a generator seeded with ``seed``, one
    ``randperm(len(class))`` per class in increasing class order. Returned sorted (train order).
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1 (or -1 for the full train set), got {n_per_class}")
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(seed)
    order = torch.sort(labels, stable=True).indices  # class by class, train order inside a class
    counts = torch.unique(labels, return_counts=True)[1].tolist()
    picks = [idx[torch.randperm(len(idx), generator=generator)[:n_per_class]] for idx in order.split(counts)]
    return torch.cat(picks).sort().values


def few_shot_k_list(nb_knn: Sequence[int], n_per_class: int) -> list[int]:
    """The k values used with ``n_per_class`` samples per class (released rule: k <= n, plus k = n)."""
    return sorted({k for k in nb_knn if k <= n_per_class} | {n_per_class})


def _check_labels(labels: torch.Tensor, what: str) -> None:
    if labels is None or labels.numel() == 0:
        raise ValueError(f"{what} labels are missing; k-NN evaluation needs a labelled {what} split")
    if labels.ndim != 1 or labels.dtype.is_floating_point or bool((labels < 0).any()):
        raise ValueError(
            f"{what} labels must be a 1-D tensor of class indices >= 0 (got dtype {labels.dtype}, shape "
            f"{tuple(labels.shape)}, min {labels.min().item()}); -1 means the split has no labels: use a labelled split"
        )


def _evaluate_one(index, val_features, val_labels, k_list, temperature, num_classes, metric_type, chunk=4096):
    """Search, vote and score this rank's queries (chunk of queries voted at a time); accuracies in %."""
    sims, _, neighbour_labels = index.search(val_features, max(k_list))  # [Q_local, max_k]
    metrics = {k: build_metric(metric_type, num_classes=num_classes) for k in k_list}
    for start in range(0, max(1, sims.shape[0]), chunk):
        stop = start + chunk
        scores = knn_class_scores(sims[start:stop], neighbour_labels[start:stop], k_list, temperature, num_classes)
        for k in k_list:
            metrics[k].update(scores[k], val_labels[start:stop].to(scores[k].device))
    return {k: {name: 100.0 * value for name, value in metrics[k].compute().items()} for k in k_list}


def eval_knn(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    val_features: torch.Tensor,
    val_labels: torch.Tensor,
    *,
    nb_knn: Sequence[int] = DEFAULT_NB_KNN,
    temperature: float = DEFAULT_TEMPERATURE,
    n_per_class_list: Sequence[int] = (-1,),
    n_tries: int = 1,
    metric_type: MetricType | str = MetricType.MEAN_ACCURACY,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
    chunk_size: int | None = None,
    normalize: bool = True,
) -> dict[str, dict]:
    """k-NN evaluation of features (collective when distributed).

    train_features [N, D], train_labels [N]: the full train set on every rank (as released; each rank
    keeps its shard). val_features [Q_local, D], val_labels [Q_local]: this rank's queries.
    ``n_per_class_list``: -1 = full train set (one try); n > 0 = n samples per class, ``n_tries``
    draws (seeds 0..n_tries-1), with the k values of :func:`few_shot_k_list`.

    Returns ``{setting: {"mean": {k: {"top-1": %, "top-5": %}}, "tries": [{k: {...}}, ...]}}`` with
    settings ``"full"`` and ``"{n} per class"``; accuracies in percent (every rank gets them).
    """
    _check_labels(train_labels, "train")
    _check_labels(val_labels, "val")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not nb_knn or min(nb_knn) < 1:
        raise ValueError(f"--nb_knn values must be >= 1, got {list(nb_knn)}")
    num_classes = int(train_labels.max()) + 1 if num_classes is None else int(num_classes)
    results: dict[str, dict] = {}
    for setting, k_list, train_sets in _train_sets(train_features, train_labels, nb_knn, n_per_class_list, n_tries):
        tries = []
        for t, (features, labels) in enumerate(train_sets):
            index = KnnIndex.from_full(features, labels, device=device, normalize=normalize, chunk_size=chunk_size)
            logger.info("k-NN %s, try %d: %d train samples, k in %s", setting, t, index.num_total, k_list)
            tries.append(_evaluate_one(index, val_features, val_labels, k_list, temperature, num_classes, metric_type))
        mean = {k: {m: torch.stack([tr[k][m] for tr in tries]).mean(dim=0) for m in tries[0][k]} for k in k_list}
        results[setting] = {"mean": mean, "tries": tries}
    return results


def _train_sets(train_features, train_labels, nb_knn, n_per_class_list, n_tries):
    """Yield (setting name, k values, lazy iterable of (features, labels) per try) for each n per class."""

    def draws(n_per_class, setting, k_list):
        for t in range(n_tries):
            subset = sample_few_shot_indices(train_labels, n_per_class, seed=t).to(train_labels.device)
            if max(k_list) > len(subset):
                raise ValueError(
                    f"k={max(k_list)} is larger than the {len(subset)} train samples drawn for '{setting}' "
                    "(some classes have fewer samples than requested); lower --n-per-class-list"
                )
            yield train_features[subset], train_labels[subset]

    for n_per_class in n_per_class_list:
        if n_per_class < 0:
            yield "full", sorted(set(nb_knn)), [(train_features, train_labels)]
        else:
            setting, k_list = f"{n_per_class} per class", few_shot_k_list(nb_knn, n_per_class)
            yield setting, k_list, draws(n_per_class, setting, k_list)


def released_knn_results(results: dict[str, dict]) -> dict[str, float | list[float]]:
    """Flatten :func:`eval_knn` results to the released JSON keys, e.g. ``"('full', 10) Top 1": 78.2``.

    Per-class accuracies (a vector per k) become lists (NaN for classes without validation images).
    """
    flat = {}
    for setting, entry in results.items():
        for k, values in entry["mean"].items():
            for name, value in values.items():
                flat[f"{(setting, k)} Top {name.split('-')[1]}"] = float(value) if value.ndim == 0 else value.tolist()
    return flat


def format_knn_results(results: dict[str, dict]) -> str:
    """Readable table of :func:`eval_knn` results (mean over tries, and the spread when several)."""
    rows = []
    for setting, entry in results.items():
        for k, values in entry["mean"].items():
            row = {"train set": setting, "k": k, "tries": len(entry["tries"])}
            for name, value in values.items():
                row[name] = float(value.nanmean()) if value.ndim else float(value)
                if len(entry["tries"]) > 1:
                    per_try = torch.stack([tr[k][name].nanmean() for tr in entry["tries"]])
                    row[f"{name} std"] = float(per_try.std())
            rows.append(row)
    return format_table(rows, title="k-NN accuracy (%)")


# ----------------------------------------------------------------------------------- model level, CLI
RESIZE_RATIO = 256 / 224  # released eval transform: resize 256, crop 224


def get_args_parser(
    description: str | None = None, parents: list[argparse.ArgumentParser] | None = None, add_help: bool = True
) -> argparse.ArgumentParser:
    """Released k-NN flags (``--train-dataset --val-dataset --nb_knn --temperature --gather-on-cpu
    --batch-size --n-per-class-list --n-tries``) plus the set-up flags and the extras of
    :mod:`dinov2.eval.common` (``--metric-type``, ``--crop-size``, ``--resize-size``, ``--num-workers``)."""
    setup_parser = get_setup_args_parser(parents=parents or [], add_help=False)
    parser = argparse.ArgumentParser(description=description, parents=[setup_parser], add_help=add_help)
    parser.add_argument("--train-dataset", dest="train_dataset_str", type=str, help="Training dataset")
    parser.add_argument("--val-dataset", dest="val_dataset_str", type=str, help="Validation dataset")
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
    parser.add_argument(
        "--metric-type", type=MetricType, choices=list(MetricType), help="metric (released: mean_accuracy)"
    )
    add_eval_transform_args(parser, num_workers=5, resize_ratio=RESIZE_RATIO)
    parser.set_defaults(
        train_dataset_str="ImageNet:split=TRAIN",
        val_dataset_str="ImageNet:split=VAL",
        nb_knn=list(DEFAULT_NB_KNN),
        temperature=DEFAULT_TEMPERATURE,
        batch_size=256,
        n_per_class_list=[-1],
        n_tries=1,
        metric_type=MetricType.MEAN_ACCURACY,
    )
    return parser


def _check_k_fits(nb_knn: Sequence[int], n_per_class_list: Sequence[int], train_count: int, name: str) -> None:
    """Fail before extracting features when k exceeds the train set (the search would fail afterwards)."""
    if any(n < 0 for n in n_per_class_list) and max(nb_knn) > train_count:
        raise ValueError(
            f"--nb_knn {max(nb_knn)} is larger than the train set ({train_count} images in {name!r}); "
            f"use k <= {train_count}, e.g. --nb_knn {' '.join(str(k) for k in nb_knn if k <= train_count) or 1}"
        )


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
    transform = transform or make_eval_transform(crop_size, resize_size, RESIZE_RATIO)
    train_dataset = make_eval_dataset(train_dataset_str, transform, "train")
    val_dataset = make_eval_dataset(val_dataset_str, transform, "val")
    train_name, val_name = str(train_dataset_str), str(val_dataset_str)
    _check_k_fits(nb_knn, n_per_class_list, len(train_dataset), train_name)
    device = next(model.parameters()).device
    normalized = ModelWithNormalize(model).eval()
    with autocast_context(autocast_dtype, device)():
        train_features, train_labels = extract_features(
            normalized, train_dataset, batch_size, num_workers, gather_on_cpu, progress=progress, description="train"
        )
        check_extracted_labels(train_labels, train_name)
        val_features, val_labels = extract_features(
            normalized, val_dataset, batch_size, num_workers, gather=False, progress=progress, description="val"
        )
    check_extracted_labels(val_labels, val_name)
    results = eval_knn(
        train_features, train_labels, val_features, val_labels,
        nb_knn=nb_knn, temperature=temperature, n_per_class_list=n_per_class_list, n_tries=n_tries,
        metric_type=as_metric_type(accuracy_averaging), device=device, normalize=False,
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
        "seconds": time.perf_counter() - start,
        "args": args_record(run_args),
    }
    write_results(output_dir, "knn", flat, detailed)
    distributed.barrier()
    return flat


def main(args: argparse.Namespace) -> int:
    """Released entry point: build the backbone from ``--config-file`` / ``--pretrained-weights`` and run k-NN."""
    model, autocast_dtype = setup_and_build_model(args)
    eval_knn_with_model(
        model=model,
        output_dir=args.output_dir,
        train_dataset_str=args.train_dataset_str,
        val_dataset_str=args.val_dataset_str,
        nb_knn=args.nb_knn,
        temperature=args.temperature,
        autocast_dtype=autocast_dtype,
        accuracy_averaging=args.metric_type,
        gather_on_cpu=args.gather_on_cpu,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        n_per_class_list=args.n_per_class_list,
        n_tries=args.n_tries,
        crop_size=args.crop_size,
        resize_size=args.resize_size,
        progress=not args.no_progress,
        run_args=args,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser(description="DINOv2 k-NN evaluation").parse_args()))
