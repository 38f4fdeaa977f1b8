"""k-NN classification of frozen features (SPEC.md §6): the protocol lives in :mod:`dinov2.features.knn_scoring`
(shared with the online k-NN monitor of training); here are its released names, the release's model-level
:func:`eval_knn` and the results table. The protocol on features is :func:`dinov2.features.knn_scoring.eval_knn`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dinov2.eval.results import format_table
from dinov2.features.knn_scoring import (
    DEFAULT_NB_KNN,
    DEFAULT_TEMPERATURE,
    few_shot_k_list,
    knn_class_scores,
    knn_eval_of_model,
    released_knn_results,
    sample_few_shot_indices,
)
from dinov2.features.metrics import AccuracyAveraging, MetricType

__all__ = [
    "DEFAULT_NB_KNN",
    "DEFAULT_TEMPERATURE",
    "knn_class_scores",
    "sample_few_shot_indices",
    "few_shot_k_list",
    "eval_knn",
    "released_knn_results",
    "format_knn_results",
]


def eval_knn(
    model: nn.Module,
    train_dataset,
    val_dataset,
    accuracy_averaging: AccuracyAveraging | str,
    nb_knn: Sequence[int],
    temperature: float,
    batch_size: int,
    num_workers: int,
    gather_on_cpu: bool,
    n_per_class_list: Sequence[int] = (-1,),
    n_tries: int = 1,
) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
    """The release's k-NN of ``model`` on two labelled datasets of transformed images (collective), its signature
    and its results: ``{(train set, k): {"top-1": fraction, "top-5": fraction}}`` with train sets ``"full"`` and
    ``"<n> per class"`` (means over the tries), accuracies in [0, 1] as released (``eval_knn_with_model`` gives
    percents). Runs :func:`dinov2.features.knn_scoring.knn_eval_of_model`."""
    metric_type = MetricType[AccuracyAveraging(accuracy_averaging).name]
    results = knn_eval_of_model(
        model,
        train_dataset,
        val_dataset,
        nb_knn=nb_knn,
        temperature=temperature,
        metric_type=metric_type,
        gather_on_cpu=gather_on_cpu,
        batch_size=batch_size,
        num_workers=num_workers,
        n_per_class_list=n_per_class_list,
        n_tries=n_tries,
    )
    return {
        (setting, k): {name: value / 100.0 for name, value in values.items()}
        for setting, entry in results.items()
        for k, values in entry["mean"].items()
    }


def format_knn_results(results: dict[str, dict]) -> str:
    """Readable table of :func:`dinov2.features.knn_scoring.eval_knn` results (mean over tries, and the spread when
    several)."""
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
