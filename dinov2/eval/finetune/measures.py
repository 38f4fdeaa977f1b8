"""The numbers reported before and after fine-tuning, from the project's own protocols.

- k-NN (:func:`dinov2.features.knn_scoring.knn_eval_of_model`): the backbone's cls features of the train images
  (eval transform) vote for the val images; top-1 (%) per k.
- Linear probe (the linear eval's pieces, :mod:`dinov2.eval.linear`): a grid of linear classifiers on the frozen
  backbone (the fine-tuning head's blocks, avgpool off and on, ``learning_rates``) trained for ``iterations``
  iterations of SGD on augmented train images; the best val top-1 (%) and its classifier.
- The fine-tuned classifier itself (:func:`finetuned_accuracy`): val top-1 / top-5 (%).

All are collective (every rank calls them) and leave the backbone in eval mode.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

from dinov2.eval.dense.train import make_train_loader
from dinov2.eval.finetune.model import FineTuneClassifier
from dinov2.eval.linear.train import setup_probe, train_linear_classifiers
from dinov2.eval.metrics import MetricType, build_metric
from dinov2.features.backbone import autocast_context
from dinov2.features.knn_scoring import knn_eval_of_model, top1_by_k

logger = logging.getLogger("dinov2")

__all__ = ["knn_top1", "linear_probe_top1", "finetuned_accuracy"]


def knn_top1(
    backbone,
    train_dataset,
    val_dataset,
    *,
    nb_knn: Sequence[int],
    batch_size: int,
    num_workers: int,
    autocast_dtype: torch.dtype,
    metric_type: MetricType,
    progress: bool = False,
) -> dict[str, float]:
    """``{"k=<k>": top-1 %}`` of the k-NN protocol on ``backbone``'s features (datasets with the eval transform)."""
    results = knn_eval_of_model(
        backbone.eval(),
        train_dataset,
        val_dataset,
        nb_knn=nb_knn,
        autocast_dtype=autocast_dtype,
        metric_type=metric_type,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
    )
    return {f"k={k}": value for k, value in top1_by_k(results).items()}


def linear_probe_top1(
    backbone,
    train_dataset,
    val_loader,
    *,
    n_last_blocks: int,
    learning_rates: Sequence[float],
    iterations: int,
    batch_size: int,
    num_workers: int,
    num_classes: int,
    autocast_dtype: torch.dtype,
    metric_type: MetricType,
    seed: int = 0,
) -> dict:
    """Best val top-1 (%) of the linear probe grid on the frozen ``backbone``: ``{"top-1", "classifier"}``."""
    grid = (n_last_blocks,), learning_rates, batch_size, num_classes, autocast_dtype, iterations
    probe = setup_probe(backbone.eval(), train_dataset[0][0], *grid)
    loader = make_train_loader(train_dataset, batch_size, num_workers, seed, start_iter=0)
    results, _ = train_linear_classifiers(
        **probe._asdict(),
        train_data=loader,
        max_iter=iterations,
        val_data=val_loader,
        metric_type=metric_type,
        num_classes=num_classes,
        log_period=max(iterations, 1),
    )
    best = results["best_classifier"]
    return {"top-1": 100.0 * best["accuracy"], "classifier": best["name"]}


@torch.no_grad()
def finetuned_accuracy(
    model: FineTuneClassifier, val_loader, *, num_classes: int, autocast_dtype: torch.dtype, metric_type: MetricType
) -> dict[str, float]:
    """Val ``{"top-1": %, "top-5": %}`` of the fine-tuned backbone and head (per ``metric_type``; collective)."""
    model.eval()
    device = next(model.parameters()).device
    autocast = autocast_context(autocast_dtype, device)
    metric = build_metric(metric_type, num_classes=num_classes)
    for images, targets, *_ in val_loader:
        with autocast():
            logits = model(images.to(device))  # [B, C]
        metric.update(logits.float(), targets.to(device))
    return {name: 100.0 * float(value.nanmean()) for name, value in metric.compute().items()}
