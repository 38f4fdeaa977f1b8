"""Model wrappers and loops shared by the protocols (released ``dinov2/eval/utils.py`` names).

Feature extraction lives in :mod:`dinov2.features` (shared with data curation); its released names
(:func:`extract_features`, :func:`extract_features_with_dataloader`) and helpers are re-exported here. Differences
from the release, all deliberate (details in :mod:`dinov2.features.extract`):

- Ranks take interleaved indices ``rank, rank + world, ...`` *without* the padding duplicates of
  ``DistributedSampler``, so no image is computed twice and per-rank query shards (``gather=False``)
  count every image exactly once in the metrics. Ranks exchange one padded batch per round; a rank out
  of images sends padding only.
- A sample whose target is ``None`` gets the label -1 (the release's enumerated dataset used the index),
  and the protocols refuse labels < 0 with an error that names the dataset.
- A progress bar (tqdm, main process only) shows images/s over all ranks; a log line sums it up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from dinov2 import distributed
from dinov2.features.extract import (
    IndexedDataset,
    extract_features,
    extract_features_with_dataloader,
    make_shard_loader,
    shard_indices,
)
from dinov2.features.knn_scoring import ModelWithNormalize
from dinov2.logging import MetricLogger

logger = logging.getLogger("dinov2")

__all__ = [
    "ModelWithNormalize",
    "ModelWithIntermediateLayers",
    "IndexedDataset",
    "check_labelled",
    "shard_indices",
    "make_shard_loader",
    "extract_features",
    "extract_features_with_dataloader",
    "all_gather_and_flatten",
    "evaluate",
]


class ModelWithIntermediateLayers(nn.Module):
    """Frozen backbone -> ``get_intermediate_layers(x, n=n_last_blocks, return_class_token=True)`` (``n`` by
    keyword: the released DINOv3 ViT takes no positional ``n``).

    Returns one ``(patch_tokens [B, N, D], cls_token [B, D])`` pair per block (oldest first), computed
    without gradients inside ``autocast_ctx()`` (a context-manager factory, e.g. from
    :func:`dinov2.eval.setup.autocast_context`).
    """

    def __init__(self, feature_model: nn.Module, n_last_blocks: int, autocast_ctx: Callable):
        super().__init__()
        self.feature_model = feature_model
        self.feature_model.eval()
        self.n_last_blocks = n_last_blocks
        self.autocast_ctx = autocast_ctx

    def forward(self, images: torch.Tensor):
        with torch.no_grad(), self.autocast_ctx():
            return self.feature_model.get_intermediate_layers(images, n=self.n_last_blocks, return_class_token=True)


def check_labelled(dataset, name: str) -> None:
    """Raise if ``dataset`` (described by ``name``) declares missing labels (targets None or < 0).

    Datasets without ``get_targets`` are checked after feature extraction instead.
    """
    get_targets = getattr(dataset, "get_targets", None)
    if get_targets is None:
        return
    try:
        targets = get_targets()
    except ValueError:  # e.g. ImageNet TEST: "has no class ids"
        targets = None
    if targets is None or (len(targets) and int(np.min(np.asarray(targets))) < 0):
        raise ValueError(
            f"dataset {name!r} has no labels (targets missing or -1): this protocol needs a labelled split, "
            "e.g. ImageFolder with one sub-folder per class, Synthetic:split=VAL or ImageNet:split=VAL"
        )


def all_gather_and_flatten(tensor_rank: torch.Tensor) -> torch.Tensor:
    """Released helper: ``tensor_rank`` [n, ...] of every rank concatenated in rank order, [world * n, ...]."""
    return distributed.all_gather(tensor_rank.contiguous())


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data_loader,
    postprocessors: Mapping[str, Callable],
    metrics: Mapping,
    device: torch.device,
    criterion: nn.Module | None = None,
) -> tuple[dict[str, float], dict]:
    """Released evaluation loop: ``outputs = model(samples)``; for each key, ``metrics[k].update(
    **postprocessors[k](outputs, targets))`` (a dict with ``preds`` and ``target``).

    data_loader yields ``(samples, targets, ...)``. Returns (averaged logged values such as the loss,
    ``{k: metrics[k].compute()}``); metrics reduce over ranks themselves.
    """
    model.eval()
    if criterion is not None:
        criterion.eval()
    metric_logger = MetricLogger(delimiter="  ")
    for samples, targets, *_ in metric_logger.log_every(data_loader, 10, "Test:"):
        outputs = model(samples.to(device))
        targets = targets.to(device)
        if criterion is not None:
            metric_logger.update(loss=criterion(outputs, targets).item())
        for key, metric in metrics.items():
            metric.update(**postprocessors[key](outputs, targets))
    metric_logger.synchronize_between_processes()
    logger.info("Averaged stats: %s", metric_logger)
    stats = {key: metric.compute() for key, metric in metrics.items()}
    return {name: meter.global_avg for name, meter in metric_logger.meters.items()}, stats
