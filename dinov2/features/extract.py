"""Sharded feature extraction: a frozen model run over a dataset split across the ranks of the default group.

The model maps images ``[B, 3, H, W]`` to a tensor ``[B, ...]`` (class tokens, patch tokens, logits, ...) or to a
dict of such tensors. Ranks take interleaved dataset indices ``rank, rank + world, ...`` (:func:`shard_indices`)
*without* the padding duplicates of ``DistributedSampler``, so no image is computed twice.

- :func:`iter_outputs`: this rank's batches ``(indices, outputs, labels)``, no communication (stream them to disk).
- :func:`extract`: every row in memory: this rank's rows (``gather=False``, no communication) or the whole
  dataset in dataset order on every rank (``gather=True``, collective: one padded exchange per batch).
- :func:`extract_features` / :func:`extract_features_with_dataloader`: the released evaluation names
  (``dinov2.eval.utils``), returning ``(features [N, D] float32, labels [N])``.

Unreadable images: during extraction the dataset (an ``ExtendedVisionDataset`` under any ``Subset`` wrappers)
leaves them out instead of substituting the next readable sample (``on_unreadable="drop"``): they yield no row,
and :attr:`Extracted.dropped` lists their dataset indices (on every rank with ``gather=True``).
:func:`extract_features` (the evaluation door) refuses them: :class:`UnreadableImagesError` names the files.

Labels: a sample's target becomes its label (int64); a ``None`` target becomes -1 (the release's enumerated dataset
used the index), so unlabelled datasets work. A progress bar (tqdm, main process only) shows images/s over all
ranks; a log line sums it up.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from dinov2 import distributed
from dinov2.data.datasets.extended import Unreadable, UnreadableImagesError, refuse_unreadable, unreadable_policy

logger = logging.getLogger("dinov2")

__all__ = [
    "Outputs",
    "FeatureBatch",
    "Extracted",
    "UnreadableImagesError",
    "refuse_unreadable",
    "IndexedDataset",
    "shard_indices",
    "make_shard_loader",
    "iter_outputs",
    "extract",
    "extract_features",
    "extract_features_with_dataloader",
]

#: A model output: a tensor [B, ...] or a dict of them (rows in dataset order after extraction).
Outputs = Tensor | dict[str, Tensor]
_TENSOR_KEY = ""  # the key of a plain tensor output in the internal dict form


class FeatureBatch(NamedTuple):
    """One batch of outputs: dataset indices [b] int64, outputs [b, ...] (or a dict), labels [b] int64 (-1: none)."""

    indices: Tensor
    outputs: Outputs
    labels: Tensor


@dataclasses.dataclass
class Extracted:
    """Extracted rows: outputs [n, ...] (or a dict), labels [n], dataset indices [n] of each row, and the sorted
    dataset indices of the unreadable samples left out (``dropped``, int64 on the CPU)."""

    outputs: Outputs
    labels: Tensor
    indices: Tensor
    dropped: Tensor = dataclasses.field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


class _DropUnreadable:
    """Collate of ``(image, index, label)`` samples that leaves out :class:`Unreadable` images: a batch is
    ``(images or None, indices, labels, dropped indices)``."""

    def __init__(self, collate_fn: Callable | None):
        self.collate_fn = collate_fn or torch.utils.data.default_collate

    def __call__(self, samples: list):
        dropped = torch.tensor([s[1] for s in samples if isinstance(s[0], Unreadable)], dtype=torch.long)
        kept = [s for s in samples if not isinstance(s[0], Unreadable)]
        if not kept:
            return None, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), dropped
        return (*self.collate_fn(kept), dropped)


class IndexedDataset(Dataset):
    """``dataset[i] = (image, target)`` -> ``(image, i, label)``; a ``None`` target becomes the label -1."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, index: int):
        image, target = self.dataset[index]
        return image, index, -1 if target is None else target

    def __len__(self) -> int:
        return len(self.dataset)


def shard_indices(sample_count: int, rank: int, world_size: int) -> range:
    """This rank's dataset indices: ``rank, rank + world, ...`` (no padding; sizes differ by at most 1)."""
    return range(rank, sample_count, world_size)


def make_shard_loader(
    dataset,
    batch_size: int,
    num_workers: int,
    collate_fn: Callable | None = None,
    with_index: bool = True,
    indices: Sequence[int] | None = None,
) -> DataLoader:
    """A sequential loader over ``indices`` (default: this rank's :func:`shard_indices`), yielding
    ``(images, indices, labels, dropped indices)`` (``(images, targets)`` with ``with_index=False``, e.g. for
    evaluation loops). ``images`` is None when every sample of a batch was dropped (see the module docstring)."""
    if indices is None:
        indices = shard_indices(len(dataset), distributed.get_global_rank(), distributed.get_global_size())
    subset = torch.utils.data.Subset(IndexedDataset(dataset) if with_index else dataset, indices)
    collate_fn = _DropUnreadable(collate_fn) if with_index else collate_fn
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
    param = next(iter(model.parameters()), None) if isinstance(model, nn.Module) else None
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


def _as_dict(outputs, batch: int, dtype: torch.dtype | None) -> dict[str, Tensor]:
    """The model output as ``{key: [b, ...]}`` (a plain tensor under the key ``""``), cast to ``dtype``."""
    items = outputs.items() if isinstance(outputs, Mapping) else [(_TENSOR_KEY, outputs)]
    out = {}
    for key, value in items:
        if not isinstance(value, Tensor) or value.ndim == 0 or value.shape[0] != batch:
            got = type(value).__name__ if not isinstance(value, Tensor) else f"shape {list(value.shape)}"
            raise TypeError(
                f"feature extraction needs the model to return a tensor [batch={batch}, ...] or a dict of them; "
                f"output {key or 'tensor'!r} is {got}: wrap the model to select or stack its outputs"
            )
        out[str(key)] = value if dtype is None else value.to(dtype)
    return out


def _from_dict(outputs: dict[str, Tensor]) -> Outputs:
    return outputs[_TENSOR_KEY] if set(outputs) == {_TENSOR_KEY} else outputs


def _batch_labels(labels) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.ndim != 1:
        raise ValueError(
            f"feature extraction needs one integer label per image, got labels of shape {list(labels.shape)}"
        )
    return labels.long()


def _forward(model, images: Tensor, index, labels, device, dtype) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    outputs = _as_dict(model(images.to(device, non_blocking=True)), len(images), dtype)
    return torch.as_tensor(index).long(), outputs, _batch_labels(labels)


def _loader_batches(
    model, batches: Iterable, device, dtype, dropped: list[Tensor] | None = None
) -> Iterator[tuple[Tensor, dict[str, Tensor], Tensor]]:
    """Forward ``(images, indices, labels[, dropped])`` or the released ``(images, (indices, labels))`` batches;
    the dropped indices go to ``dropped`` (batches without an image yield nothing)."""
    for batch in batches:
        images, rest = batch[0], batch[1:]
        if len(rest) == 3:
            if dropped is not None:
                dropped.append(rest[2])
            rest = rest[:2]
        if images is None:
            continue
        index, labels = rest[0] if len(rest) == 1 else rest
        yield _forward(model, images, index, labels, device, dtype)


@torch.no_grad()
def iter_outputs(
    model: Callable[[Tensor], Outputs],
    dataset,
    batch_size: int,
    num_workers: int = 0,
    *,
    indices: Sequence[int] | None = None,
    dtype: torch.dtype | None = torch.float32,
    collate_fn: Callable | None = None,
    device: torch.device | str | None = None,
) -> Iterator[FeatureBatch]:
    """This rank's batches of ``model`` outputs over ``dataset[indices]`` (default: :func:`shard_indices`).

    No communication. Images go to ``device`` (default: the device of the model's parameters, the CPU for a plain
    function); outputs are cast to ``dtype`` (None keeps the model's). Unreadable images are left out (logged by the
    dataset): their indices are in no batch.
    """
    device = torch.device(device) if device is not None else _model_device(model)
    loader = make_shard_loader(dataset, batch_size, num_workers, collate_fn=collate_fn, indices=indices)
    with unreadable_policy(dataset, "drop"):
        for index, outputs, labels in _loader_batches(model, loader, device, dtype):
            yield FeatureBatch(index, _from_dict(outputs), labels)


class _Store:
    """Rows [N, ...] per output key, labels [N] and filled flags of a whole dataset, filled by dataset index."""

    def __init__(self, sample_count: int, spec: list, device: torch.device):
        self.outputs = {
            key: torch.zeros(sample_count, *shape, dtype=dtype, device=device) for key, shape, dtype in spec
        }
        self.labels = torch.full((sample_count,), -1, dtype=torch.long, device=device)
        self.filled = torch.zeros(sample_count, dtype=torch.bool, device=device)

    def add(self, index: Tensor, outputs: dict[str, Tensor], labels: Tensor) -> None:
        keep = index >= 0  # padding rows carry index -1
        index = index[keep].to(self.labels.device)
        if index.numel() and int(index.max()) >= len(self.labels):
            raise IndexError(f"dataset index {int(index.max())} is out of range for {len(self.labels)} samples")
        for key, rows in outputs.items():
            self.outputs[key].index_copy_(0, index, rows[keep].to(self.labels.device))
        self.labels.index_copy_(0, index, labels[keep].to(self.labels.device))
        self.filled[index] = True


def _spec(outputs: dict[str, Tensor]) -> list:
    return [(key, tuple(value.shape[1:]), value.dtype) for key, value in outputs.items()]


def _broadcast_spec(spec: list | None, src: int, device: torch.device) -> list:
    """Output keys, row shapes and dtypes, known by rank ``src`` (ranks without images learn them here)."""
    if distributed.get_global_size() == 1:
        return spec  # type: ignore[return-value]
    payload = json.dumps([[k, list(s), str(d).removeprefix("torch.")] for k, s, d in spec or []]).encode()
    size = distributed.broadcast(torch.tensor([len(payload)], device=device), src=src)
    data = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if spec is not None:
        data.copy_(torch.frombuffer(bytearray(payload), dtype=torch.uint8))
    data = distributed.broadcast(data, src=src)
    return [(k, tuple(s), getattr(torch, d)) for k, s, d in json.loads(bytes(data.cpu().tolist()).decode())]


def _pad(tensor: Tensor, rows: int, value: float) -> Tensor:
    pad = rows - tensor.shape[0]
    return tensor if pad == 0 else torch.cat([tensor, tensor.new_full((pad, *tensor.shape[1:]), value)])


def _gather_all(
    batches: Iterator, sample_count: int, store_device: torch.device, comm: torch.device, bar
) -> _Store | None:
    """Exchange every rank's batches (one round per batch of the longest shard) into a whole-dataset store (None
    when no rank has a batch).

    Each round every rank sends its next batch padded to the round's largest batch (index -1 marks padding; a rank
    out of batches sends padding only) and every rank stores all rows at their dataset index.
    """
    world, store = distributed.get_global_size(), None
    while True:
        batch = next(batches, None)
        rows = 0 if batch is None else len(batch[0])
        sizes = distributed.all_gather(torch.tensor([rows, int(batch is not None)], device=comm)).view(world, 2)
        if not bool(sizes[:, 1].any()):
            break
        if store is None:  # the first rank with a batch tells the others the output shapes
            src = int(sizes[:, 1].nonzero()[0, 0])
            spec = _broadcast_spec(_spec(batch[1]) if batch is not None else None, src, comm)
            store = _Store(sample_count, spec, store_device)
        width = int(sizes[:, 0].max())
        if batch is None:
            empty = {key: torch.zeros(0, *value.shape[1:], dtype=value.dtype) for key, value in store.outputs.items()}
            batch = (torch.zeros(0, dtype=torch.long), empty, torch.zeros(0, dtype=torch.long))
        index, labels = _pad(batch[0].to(comm), width, -1), _pad(batch[2].to(comm), width, -1)
        outputs = {key: distributed.all_gather(_pad(value.to(comm), width, 0)) for key, value in batch[1].items()}
        index_all, labels_all = distributed.all_gather(index), distributed.all_gather(labels)  # [world * width]
        store.add(index_all, outputs, labels_all)
        if bar is not None:
            bar.update(int((index_all >= 0).sum()))
    return store


def _no_batch_error() -> ValueError:
    return ValueError("feature extraction got no batch on any rank: the dataset or data loader is empty")


def _check_filled(store: _Store, dropped: Tensor) -> None:
    """Every sample has a row or was dropped."""
    done = store.filled.clone()
    done[dropped.to(done.device)] = True
    if not bool(done.all()):
        raise RuntimeError(f"feature extraction missed {int((~done).sum())} of {len(done)} samples")


def _no_rows(store_device: torch.device) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """``(outputs, labels, indices)`` without a row, when no batch tells the row shapes."""
    empty = torch.zeros(0, dtype=torch.long, device=store_device)
    return {_TENSOR_KEY: torch.zeros(0, 0, device=store_device)}, empty, empty


def _all_dropped(local: list[Tensor], comm: torch.device) -> Tensor:
    """Collective: the sorted dataset indices dropped on any rank (on the CPU), from each rank's ``local`` list."""
    mine = torch.cat(local) if local else torch.zeros(0, dtype=torch.long)
    if distributed.get_global_size() > 1:
        counts = distributed.all_gather(torch.tensor([len(mine)], device=comm))
        padded = distributed.all_gather(_pad(mine.to(comm), int(counts.max()), -1))
        mine = padded[padded >= 0].cpu()
    return torch.sort(mine.long()).values


def _gathered(batches: Iterator, dropped: list[Tensor], sample_count: int, store_device, device, bar):
    """Collective: ``(outputs, labels, indices, dropped)`` of the whole dataset in dataset order, on every rank;
    ``dropped`` is filled by ``batches`` with this rank's dropped indices."""
    comm = _collective_device(device)
    store = _gather_all(batches, sample_count, store_device, comm, bar)
    all_dropped = _all_dropped(dropped, comm)  # after the batches: each rank's list is complete
    if store is None and len(all_dropped) == sample_count:  # no readable image: no row (shapes unknown)
        return *_no_rows(store_device), all_dropped
    if store is None:
        raise _no_batch_error()
    _check_filled(store, all_dropped)
    if not len(all_dropped):  # the rows as they are (no copy)
        return store.outputs, store.labels, torch.arange(sample_count, device=store_device), all_dropped
    keep = store.filled
    outputs = {key: value[keep] for key, value in store.outputs.items()}
    return outputs, store.labels[keep], keep.nonzero()[:, 0], all_dropped


def _concat_local(batches: Iterator, store_device: torch.device, bar) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    indices, outputs, labels = [], [], []
    for index, batch_outputs, batch_labels in batches:
        indices.append(index.to(store_device))
        outputs.append({key: value.to(store_device) for key, value in batch_outputs.items()})
        labels.append(batch_labels.to(store_device))
        if bar is not None:
            bar.update(len(index))
    if not outputs:  # more ranks than images: the row shapes are unknown here
        return _no_rows(store_device)
    joined = {key: torch.cat([part[key] for part in outputs]) for key in outputs[0]}
    return joined, torch.cat(labels), torch.cat(indices)


@torch.no_grad()
def extract(
    model: Callable[[Tensor], Outputs],
    dataset,
    batch_size: int,
    num_workers: int = 0,
    *,
    gather: bool = True,
    store_device: torch.device | str | None = None,
    dtype: torch.dtype | None = torch.float32,
    progress: bool = True,
    description: str = "features",
    device: torch.device | str | None = None,
) -> Extracted:
    """Run ``model`` over ``dataset`` split across ranks; see the module docstring.

    ``gather=True`` (collective): rows of the whole dataset in dataset order on every rank. ``gather=False``: this
    rank's rows (dataset indices :func:`shard_indices`, in that order), no communication; a rank without images
    (with ``gather=True``: a dataset without a readable image) returns a [0, 0] tensor (or ``{"": ...}`` for dict
    outputs). ``device``: where images go (default: the device of the model's parameters, the CPU for a plain
    function); ``store_device``: where rows are kept (default: ``device``); ``dtype``: cast of the outputs (None
    keeps the model's). Unreadable images yield no row: :attr:`Extracted.dropped` lists them.
    """
    if len(dataset) == 0:
        raise ValueError(f"cannot extract {description} of an empty dataset")
    device = torch.device(device) if device is not None else _model_device(model)
    store_device = torch.device(store_device) if store_device is not None else device
    loader = make_shard_loader(dataset, batch_size, num_workers)
    dropped: list[Tensor] = []
    batches = _loader_batches(model, loader, device, dtype, dropped)
    start = time.perf_counter()
    bar = _progress_bar(len(dataset) if gather else len(loader.dataset), f"Extracting {description}", progress)
    try:
        with unreadable_policy(dataset, "drop"):
            if gather:
                gathered = _gathered(batches, dropped, len(dataset), store_device, device, bar)
                outputs, labels, indices, dropped_indices = gathered
            else:
                outputs, labels, indices = _concat_local(batches, store_device, bar)
                dropped_indices = torch.sort(torch.cat(dropped)).values if dropped else torch.zeros(0, dtype=torch.long)
    finally:
        if bar is not None:
            bar.close()
    if len(dropped_indices):
        logger.warning("left out %d unreadable image(s) of %d", len(dropped_indices), len(dataset))
    elapsed = time.perf_counter() - start
    scope = f"{distributed.get_global_size()} process(es)" if gather else "this process"
    shapes = {key or "features": list(value.shape) for key, value in outputs.items()}
    rate = len(indices) / max(elapsed, 1e-9)
    logger.info("Extracted %s %s in %.1f s: %.1f images/s (%s)", description, shapes, elapsed, rate, scope)
    return Extracted(_from_dict(outputs), labels, indices, dropped_indices)


def _features_only(outputs: Outputs) -> Tensor:
    if not isinstance(outputs, Tensor):
        raise TypeError(f"extract_features needs a model returning one tensor [B, D], got outputs {sorted(outputs)}")
    return outputs


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
) -> tuple[Tensor, Tensor]:
    """Run ``model`` (images [B, 3, H, W] -> [B, D]) over ``dataset`` split across ranks (released name; collective).

    Returns float32 features [N, D] and int64 labels [N] (-1 where the target is None) of the whole dataset in
    dataset order, on every rank: on the CPU when ``gather_on_cpu`` (for sets too large for the accelerator) or
    when the model is on the CPU, else on the model's device. With ``gather=False`` returns this rank's rows only
    (indices :func:`shard_indices`, in that order), without communication.

    Evaluation must see the whole set: unreadable images raise :class:`UnreadableImagesError` naming them (on every
    rank with ``gather=True``; on the ranks that read them otherwise), rather than silently changing the results.
    """
    store_device = torch.device("cpu") if gather_on_cpu else None
    result = extract(
        model, dataset, batch_size, num_workers, gather=gather, store_device=store_device, progress=progress,
        description=description,
    )  # fmt: skip
    refuse_unreadable(dataset, result.dropped, description)
    return _features_only(result.outputs), result.labels


@torch.no_grad()
def extract_features_with_dataloader(
    model: nn.Module, data_loader: Iterable, sample_count: int, gather_on_cpu: bool = False
) -> tuple[Tensor, Tensor]:
    """Released name: features and labels of ``sample_count`` samples from a loader of this rank's batches.

    Batches are ``(images, (indices, labels))`` (the release's enumerated dataset) or ``(images, indices,
    labels)``; ranks may hold different numbers of batches. Collective; returns float32 features [N, D] and labels
    [N] in index order on every rank (on the CPU with ``gather_on_cpu``, else on the model's device).
    """
    device = _model_device(model)
    store_device = torch.device("cpu") if gather_on_cpu else device
    batches = _loader_batches(model, data_loader, device, torch.float32)
    store = _gather_all(batches, sample_count, store_device, _collective_device(device), None)
    if store is None:
        raise _no_batch_error()
    _check_filled(store, torch.zeros(0, dtype=torch.long))
    features = _features_only(_from_dict(store.outputs))
    logger.info("Features shape: %s, labels shape: %s", tuple(features.shape), tuple(store.labels.shape))
    return features, store.labels
