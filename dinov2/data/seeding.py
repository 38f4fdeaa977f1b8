"""Per-sample seeding: augmentation randomness that depends on the sample's place in the stream only.

The released loader lets every worker draw augmentations from its own running RNG stream, so the
random crops of a sample depend on which worker loaded it and on everything that worker did before:
a resumed run cannot reproduce them. Here every sample is loaded with the global RNGs (torch, Python
``random``, NumPy) freshly seeded from ``(seed, rank, epoch, position)``, where ``position`` counts
this rank's samples from the start of training; the collate function is seeded from the key of the
batch's first sample (it draws the iBOT masks). Consequences, all tested:

- batches do not depend on ``num_workers`` or on worker scheduling;
- a loader built with ``sampler_advance=n`` yields exactly the batches an uninterrupted run yields
  after its first ``n`` samples on this rank (augmentations and masks included).

In the main process (``num_workers=0``) the global RNG states are saved and restored around each
batch, so the loader never disturbs the caller's random streams.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, default_collate, get_worker_info

from dinov2.utils.utils import fix_random_seeds

__all__ = ["SampleKey", "KeyedSampler", "SeededDataset", "SeededCollate", "mix_seed", "seed_worker"]

_MASK64 = (1 << 64) - 1
_SAMPLE, _COLLATE, _WORKER = 0x5A17, 0xC011, 0x3043


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from a tuple of integers (a SplitMix64 chain); order matters."""
    state = 0
    for value in values:
        state = _splitmix64(state ^ (int(value) & _MASK64))
    return state >> 1


def seed_all(seed: int) -> None:
    """Seed torch's default CPU generator (not the CUDA ones), Python ``random`` and NumPy's global RNG."""
    fix_random_seeds(seed, cuda=False)


@contextlib.contextmanager
def _isolated_rng() -> Iterator[None]:
    """Restore the global RNG states afterwards, unless in a worker process (whose RNGs are ours)."""
    if get_worker_info() is not None:
        yield
        return
    states = torch.get_rng_state(), random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])


def seed_worker(worker_id: int, seed: int, rank: int) -> None:
    """``worker_init_fn``: seeds each worker from ``(seed, rank, worker_id)`` (for code outside samples)."""
    seed_all(mix_seed(_WORKER, seed, rank, worker_id))


class SampleKey(NamedTuple):
    """What the keyed sampler yields: the dataset index and the sample's place in the rank's stream."""

    index: int
    epoch: int
    position: int


class KeyedSampler(Sampler):
    """Wraps a sampler to yield :class:`SampleKey` s (uses ``iter_keyed()`` of the samplers in ``samplers.py``;
    other samplers get positions counted from 0 and their pass number as epoch)."""

    def __init__(self, sampler):
        self.sampler = sampler
        self._passes = 0

    def __iter__(self) -> Iterator[SampleKey]:
        if hasattr(self.sampler, "iter_keyed"):
            for index, (epoch, position) in self.sampler.iter_keyed():
                yield SampleKey(int(index), epoch, position)
            return
        epoch, self._passes = self._passes, self._passes + 1
        for position, index in enumerate(self.sampler):
            yield SampleKey(int(index), epoch, position)

    def __len__(self) -> int:
        return len(self.sampler)  # TypeError for infinite samplers, as the DataLoader expects

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)


class KeyedBatch(list):
    """A batch of samples that remembers the key of its first sample (seeds the collate function)."""

    key: SampleKey | None = None


class SeededDataset(Dataset):
    """Wraps a dataset: ``dataset[SampleKey]`` loads ``dataset[key.index]`` with RNGs seeded from the key."""

    def __init__(self, dataset, seed: int, rank: int):
        self.dataset = dataset
        self.seed = int(seed)
        self.rank = int(rank)

    def _load(self, key) -> Any:
        if not isinstance(key, SampleKey):
            return self.dataset[key]
        seed_all(mix_seed(_SAMPLE, self.seed, self.rank, key.epoch, key.position))
        return self.dataset[key.index]

    def __getitem__(self, key) -> Any:
        with _isolated_rng():
            return self._load(key)

    def __getitems__(self, keys: list) -> KeyedBatch:
        with _isolated_rng():
            batch = KeyedBatch(self._load(key) for key in keys)
        batch.key = keys[0] if keys and isinstance(keys[0], SampleKey) else None
        return batch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


class SeededCollate:
    """Wraps a collate function: runs it with RNGs seeded from the batch's first sample key."""

    def __init__(self, collate_fn: Callable | None, seed: int, rank: int):
        self.collate_fn = collate_fn if collate_fn is not None else default_collate
        self.seed = int(seed)
        self.rank = int(rank)

    def __call__(self, batch: list) -> Any:
        key = getattr(batch, "key", None)
        samples = list(batch)
        if key is None:
            return self.collate_fn(samples)
        with _isolated_rng():
            seed_all(mix_seed(_COLLATE, self.seed, self.rank, key.epoch, key.position))
            return self.collate_fn(samples)
