"""k-NN classification of frozen features (SPEC.md §6): the protocol lives in :mod:`dinov2.features.knn_scoring`
(shared with the online k-NN monitor of training); here are its released names and the results table.
"""

from __future__ import annotations

import torch

from dinov2.eval.results import format_table
from dinov2.features.knn_scoring import (
    DEFAULT_NB_KNN,
    DEFAULT_TEMPERATURE,
    eval_knn,
    few_shot_k_list,
    knn_class_scores,
    released_knn_results,
    sample_few_shot_indices,
)

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
