"""Feature extraction and evaluation loops shared by the protocols (released ``dinov2/eval/utils.py`` names).

:func:`extract_features` runs a frozen model over a dataset split across ranks and returns the features
and labels of the whole dataset, in dataset order, on every rank. Differences from the release, all
deliberate:

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
import math
import sys
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from dinov2 import distributed
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
    "evaluate",
]


class ModelWithNormalize(nn.Module):
    """``model(images)`` L2-normalised along the feature dimension: [B, D] unit vectors (the k-NN input)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model(samples), dim=1, p=2)


class ModelWithIntermediateLayers(nn.Module):
    """Frozen backbone -> ``get_intermediate_layers(x, n_last_blocks, return_class_token=True)``.

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
            return self.feature_model.get_intermediate_layers(images, self.n_last_blocks, return_class_token=True)


class IndexedDataset(Dataset):
    """``dataset[i] = (image, target)`` -> ``(image, i, label)``; a ``None`` target becomes the label -1."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        return image, index, -1 if target is None else target

    def __len__(self) -> int:
        return len(self.dataset)


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


def shard_indices(sample_count: int, rank: int, world_size: int) -> range:
    """This rank's dataset indices: ``rank, rank + world, ...`` (no padding; sizes differ by at most 1)."""
    return range(rank, sample_count, world_size)


def make_shard_loader(
    dataset, batch_size: int, num_workers: int, collate_fn=None, with_index: bool = True
) -> DataLoader:
    """A sequential loader over this rank's :func:`shard_indices`, yielding ``(images, indices, labels)``
    (``(images, targets)`` with ``with_index=False``, e.g. for evaluation loops)."""
    indices = shard_indices(len(dataset), distributed.get_global_rank(), distributed.get_global_size())
    subset = torch.utils.data.Subset(IndexedDataset(dataset) if with_index else dataset, indices)
    return DataLoader(
        subset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=False,
        collate_fn=collate_fn,
    )


def _collective_device(fallback: torch.device) -> torch.device:
    if distributed.is_enabled() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return fallback if not distributed.is_enabled() else torch.device("cpu")


def _model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _progress_bar(total: int, description: str, enabled: bool):
    """tqdm over ``total`` images on the main process (None elsewhere, when disabled or without tqdm)."""
    if not enabled or not distributed.is_main_process():
        return None
    try:
        from tqdm import tqdm  # installed with fvcore
    except ImportError:
        return None
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=description, unit="img", unit_scale=True, mininterval=1 if interactive else 30)


class _FeatureStore:
    """Features [N, D] and labels [N] of the whole dataset, filled from gathered, index-tagged rows."""

    def __init__(self, sample_count: int, dim: int, device: torch.device):
        self.features = torch.zeros(sample_count, dim, device=device)
        self.labels = torch.full((sample_count,), -1, dtype=torch.long, device=device)
        self.filled = torch.zeros(sample_count, dtype=torch.bool, device=device)

    def add(self, index: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> None:
        keep = index >= 0  # padding rows carry index -1
        index = index[keep].to(self.features.device)
        self.features.index_copy_(0, index, features[keep].to(self.features.device))
        self.labels.index_copy_(0, index, labels[keep].to(self.features.device))
        self.filled[index] = True


def _pad_rows(tensor: torch.Tensor, rows: int, value: float) -> torch.Tensor:
    pad = rows - tensor.shape[0]
    return tensor if pad == 0 else torch.cat([tensor, tensor.new_full((pad, *tensor.shape[1:]), value)])


def _advance(bar, count: int) -> None:
    if bar is not None:
        bar.update(count)


def _forward_batch(model, batch, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(features [b, D] float32, indices [b], labels [b]) of one ``(images, indices, labels)`` batch."""
    images, index, labels = batch
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"feature extraction needs one integer label per image, got labels of shape {list(labels.shape)}"
        )
    features = model(images.to(device, non_blocking=True)).float()  # [b, D]
    return features, index.long(), labels.long()


@torch.no_grad()
def extract_features(
    model: nn.Module,
    dataset,
    batch_size: int,
    num_workers: int,
    gather_on_cpu: bool = False,
    *,
    gather: bool = True,
    progress: bool = True,
    description: str = "features",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model`` (images [B, 3, H, W] -> [B, D]) over ``dataset`` split across ranks (collective).

    Returns float32 features [N, D] and int64 labels [N] (-1 where the target is None) of the whole
    dataset in dataset order, on every rank: on the CPU when ``gather_on_cpu`` (for sets too large for
    the accelerator) or when the model is on the CPU, else on the model's device. With ``gather=False``
    returns this rank's rows only (indices :func:`shard_indices`, in that order), without communication.
    """
    if len(dataset) == 0:
        raise ValueError(f"cannot extract {description} of an empty dataset")
    device = _model_device(model)
    store_device = torch.device("cpu") if gather_on_cpu else device
    loader = make_shard_loader(dataset, batch_size, num_workers)
    start = time.perf_counter()
    bar = _progress_bar(len(dataset) if gather else len(loader.dataset), f"Extracting {description}", progress)
    try:
        if gather:
            features, labels = _extract_gathered(model, loader, len(dataset), batch_size, device, store_device, bar)
        else:
            features, labels = _extract_local(model, loader, device, store_device, bar)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - start
    scope = f"{distributed.get_global_size()} process(es)" if gather else "this process"
    count = len(dataset) if gather else len(loader.dataset)
    rate = count / max(elapsed, 1e-9)
    logger.info(
        "Extracted %s %s in %.1f s: %.1f images/s (%s)", description, list(features.shape), elapsed, rate, scope
    )
    return features, labels


def _extract_local(model, loader, device, store_device, bar) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = [], []
    for batch in loader:
        batch_features, _, batch_labels = _forward_batch(model, batch, device)
        features.append(batch_features.to(store_device))
        labels.append(batch_labels.to(store_device))
        _advance(bar, len(batch_labels))
    if not features:  # more ranks than images
        return torch.zeros(0, 0, device=store_device), torch.zeros(0, dtype=torch.long, device=store_device)
    return torch.cat(features), torch.cat(labels)


def _extract_gathered(model, loader, sample_count, batch_size, device, store_device, bar):
    """One round per batch of the largest shard: every rank sends a batch padded to ``batch_size`` rows
    (index -1 marks padding) and every rank stores all rows at their dataset index."""
    comm = _collective_device(device)
    rounds = math.ceil(math.ceil(sample_count / distributed.get_global_size()) / batch_size)
    batches, store = iter(loader), None
    for _ in range(rounds):
        batch = next(batches, None)
        if batch is not None:
            features, index, labels = _forward_batch(model, batch, device)
        if store is None:  # rank 0 always has a first batch: it tells the others the feature size
            dim = torch.tensor([features.shape[1] if batch is not None else 0], device=comm)
            store = _FeatureStore(sample_count, int(distributed.broadcast(dim, src=0).item()), store_device)
        if batch is None:  # this shard is exhausted: send padding only
            features = torch.zeros(0, store.features.shape[1], device=comm)
            index = labels = torch.zeros(0, dtype=torch.long, device=comm)
        rows = [_pad_rows(t.to(comm), batch_size, fill) for t, fill in ((features, 0), (index, -1), (labels, -1))]
        features_all, index_all, labels_all = (distributed.all_gather(t) for t in rows)  # [world * batch_size, ...]
        store.add(index_all, features_all, labels_all)
        _advance(bar, int((index_all >= 0).sum()))
    if not bool(store.filled.all()):
        raise RuntimeError(f"feature extraction missed {int((~store.filled).sum())} of {sample_count} samples")
    return store.features, store.labels


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
