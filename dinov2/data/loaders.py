"""Datasets from dataset strings and data loaders with resumable samplers."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from enum import Enum
from typing import Any

import torch
from torch.utils.data import Sampler

from dinov2 import distributed

from .dataset_strings import parse_dataset_str
from .samplers import DistributedSampler, EpochSampler, InfiniteSampler, ShardedInfiniteSampler
from .seeding import KeyedSampler, SeededCollate, SeededDataset, mix_seed, seed_worker

logger = logging.getLogger("dinov2")

__all__ = ["SamplerType", "make_dataset", "make_data_loader"]


class SamplerType(Enum):
    DISTRIBUTED = 0
    EPOCH = 1
    INFINITE = 2
    SHARDED_INFINITE = 3
    SHARDED_INFINITE_NEW = 4


def make_dataset(
    *,
    dataset_str: str,
    transform: Callable | None = None,
    target_transform: Callable | None = None,
    strict: bool | None = None,
):
    """Build the dataset described by ``dataset_str`` (see ``dataset_strings.py`` for names and keys).

    ``strict`` (if given) overrides the string's ``strict`` key: True raises on an unreadable image,
    False skips it. Raises at once for an unknown name or key, a missing root or an empty dataset.
    """
    logger.info('using dataset: "%s"', dataset_str)
    cls, kwargs = parse_dataset_str(dataset_str)
    if strict is not None:
        kwargs["strict"] = strict
    dataset = cls(transform=transform, target_transform=target_transform, **kwargs)
    count = len(dataset)
    if count == 0:
        raise ValueError(f"dataset {dataset_str!r} has no samples")
    logger.info("# of dataset samples: %s", f"{count:,d}")
    for name, value in (("transform", transform), ("target_transform", target_transform)):
        if not hasattr(dataset, name):
            setattr(dataset, name, value)
    return dataset


def _make_sampler(
    *,
    dataset,
    type: SamplerType | None = None,
    shuffle: bool = False,
    seed: int = 0,
    size: int = -1,
    advance: int = 0,
) -> Sampler | None:
    sample_count = len(dataset)
    if type in (SamplerType.INFINITE, SamplerType.SHARDED_INFINITE, SamplerType.SHARDED_INFINITE_NEW):
        if size > 0:
            raise ValueError(f"sampler_size={size} is only valid with SamplerType.EPOCH, not {type.name}")
        if type == SamplerType.INFINITE:
            logger.info("sampler: infinite")
            return InfiniteSampler(sample_count=sample_count, shuffle=shuffle, seed=seed, advance=advance)
        logger.info("sampler: sharded infinite")
        return ShardedInfiniteSampler(
            sample_count=sample_count,
            shuffle=shuffle,
            seed=seed,
            advance=advance,
            use_new_shuffle_tensor_slice=type == SamplerType.SHARDED_INFINITE_NEW,
        )
    if type == SamplerType.EPOCH:
        size = size if size > 0 else sample_count
        logger.info("sampler: epoch, # of samples / epoch: %s", f"{size:,d}")
        return EpochSampler(size=size, sample_count=sample_count, shuffle=shuffle, seed=seed, advance=advance)
    if type == SamplerType.DISTRIBUTED:
        if size > 0:
            raise ValueError(f"sampler_size={size} is only valid with SamplerType.EPOCH, not DISTRIBUTED")
        logger.info("sampler: distributed")
        return DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=False, advance=advance)
    if type is not None:
        raise ValueError(f"unknown sampler_type {type!r}; use a dinov2.data.SamplerType")
    if advance > 0:
        raise ValueError("sampler_advance > 0 needs a sampler_type")
    logger.info("sampler: none")
    return None


def make_data_loader(
    *,
    dataset,
    batch_size: int,
    num_workers: int,
    shuffle: bool = True,
    seed: int = 0,
    sampler_type: SamplerType | None = SamplerType.INFINITE,
    sampler_size: int = -1,
    sampler_advance: int = 0,
    drop_last: bool = True,
    persistent_workers: bool = False,
    collate_fn: Callable[[list], Any] | None = None,
    seed_per_sample: bool = True,
    pin_memory: bool | None = None,
) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over ``dataset`` with the released arguments, resumable with ``sampler_advance``.

    Args:
        sampler_type / shuffle / seed / sampler_size: which sampler (``samplers.py``) and how it shuffles.
        sampler_advance: samples already consumed on this rank (e.g. ``iteration * batch_size``); the
            loader continues exactly where that many samples left off.
        seed_per_sample: seed every sample's augmentation from ``(seed, rank, epoch, position)`` and
            the collate function from its batch (see ``seeding.py``): batches are then independent of
            ``num_workers`` and exactly resumable. False gives the released per-worker streams.
        pin_memory: default True when CUDA is available.
        persistent_workers: kept alive between iterations (ignored with ``num_workers=0``).

    Workers are seeded from ``(seed, rank, worker_id)``; the loader never draws from the global RNGs.
    """
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"need batch_size >= 1 and num_workers >= 0, got {batch_size} and {num_workers}")
    sampler = _make_sampler(
        dataset=dataset, type=sampler_type, shuffle=shuffle, seed=seed, size=sampler_size, advance=sampler_advance
    )
    rank = getattr(sampler, "rank", distributed.get_global_rank())
    if seed_per_sample:
        if sampler is None:
            sampler = torch.utils.data.SequentialSampler(dataset)
        sampler = KeyedSampler(sampler)
        dataset = SeededDataset(dataset, seed, rank)
        collate_fn = SeededCollate(collate_fn, seed, rank)
    data_loader = torch.utils.data.DataLoader(
        dataset,
        sampler=sampler,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        persistent_workers=persistent_workers and num_workers > 0,
        collate_fn=collate_fn,
        worker_init_fn=functools.partial(seed_worker, seed=seed, rank=rank),
        generator=torch.Generator().manual_seed(mix_seed(seed, rank)),  # workers' base seed; not the global RNG
    )
    try:
        logger.info("# of batches: %s", f"{len(data_loader):,d}")
    except TypeError:  # infinite sampler
        logger.info("infinite data loader")
    return data_loader
