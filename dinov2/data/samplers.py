"""Index samplers: infinite, sharded-infinite, epoch and distributed, all resumable with ``advance``.

Every sampler yields dataset indices (ints) for one rank. ``start`` / ``step`` default to the global
rank / world size, so rank ``r`` of ``W`` sees a disjoint part of the stream. ``advance=n`` means
"``n`` samples were already consumed on this rank": the sampler then yields exactly the
continuation of the stream it would have produced from the beginning. (The released trainer leaves
``sampler_advance`` at 0 as an open to-do, and its sharded sampler converts ``advance`` into whole passes
with the wrong pass length; here the arithmetic is exact and tested.)

The shuffled streams are the released ones, index for index: the released samplers draw one
``torch.randint`` per element in a Python loop; the same numbers come out of NumPy's legacy
Mersenne-Twister, which shares the CPU ``torch.Generator`` engine and seeding, in one vectorised call
(checked once per process against torch itself, with a slow exact fallback).

``iter_keyed()`` yields ``(index, (epoch, position))`` pairs, where ``position`` counts the samples
of this rank from the start of the stream (``advance`` included). The data loader seeds each
sample's augmentation from that key, which makes augmentations resumable too.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from dinov2 import distributed

logger = logging.getLogger("dinov2")

__all__ = ["EpochSampler", "InfiniteSampler", "ShardedInfiniteSampler", "DistributedSampler"]


# ----------------------------------------------------------------------------------------- RNG


def _torch_dtype(size: int) -> torch.dtype:
    return torch.int32 if size <= 2**31 else torch.int64


@functools.cache
def _numpy_matches_torch(bound_bits: int) -> bool:
    """True when NumPy's legacy MT19937 reproduces CPU ``torch.randint(0, b)`` draws for ``b <= 2**bound_bits``.

    Small ranges are ``engine() % b`` on one 32-bit output; recent torch versions switch to other
    draws for large ranges (2**28 and above in torch 2.15), hence the check per magnitude.
    """
    seed, top = 123456789, 2**bound_bits
    bounds = [top, top - 1, top // 2 + 1, 7, 1, 2, 1000]
    generator = torch.Generator().manual_seed(seed)
    expected = [torch.randint(0, b, size=(1,), generator=generator).item() for b in bounds]
    raw = np.random.RandomState(seed & 0xFFFFFFFF).randint(0, 2**32, size=len(bounds), dtype=np.uint64)
    return expected == (raw % np.array(bounds, np.uint64)).tolist()


class TorchRandintStream:
    """The draws ``torch.randint(0, b, (1,), generator=g)`` of a CPU generator seeded with ``seed``, in bulk.

    ``below(bounds)`` returns one draw per bound (bounds >= 1), continuing the stream. The CPU
    generator is an MT19937 seeded with the low 32 bits of the seed, and for small ranges a draw is
    ``engine() % b``; NumPy's legacy ``RandomState`` has the same engine and seeding, so the stream is
    computed vectorised where a one-off check confirms it for the magnitude of the bounds, else with
    an exact (slow) torch loop.
    """

    def __init__(self, seed: int):
        self._numpy = np.random.RandomState(seed & 0xFFFFFFFF)
        self._torch = torch.Generator().manual_seed(seed)
        self._use_numpy: bool | None = None  # decided at the first draw; the stream then stays on one engine

    def below(self, bounds: np.ndarray) -> np.ndarray:
        bounds = np.asarray(bounds, dtype=np.uint64)
        if len(bounds) == 0:
            return np.empty(0, dtype=np.int64)
        fits = _numpy_matches_torch(max(int(bounds.max()) - 1, 1).bit_length())
        if self._use_numpy is None:
            self._use_numpy = fits
        if self._use_numpy and fits:
            raw = self._numpy.randint(0, 2**32, size=len(bounds), dtype=np.uint64)  # raw 32-bit engine outputs
            return (raw % bounds).astype(np.int64)
        if self._use_numpy:
            raise RuntimeError("TorchRandintStream: bounds grew past the range NumPy reproduces; use a new stream")
        draws = [torch.randint(0, int(b), size=(1,), generator=self._torch).item() for b in bounds.tolist()]
        return np.array(draws, dtype=np.int64)


def _fisher_yates_forward(size: int, draws: np.ndarray) -> np.ndarray:
    """Permutation of ``range(size)`` built by swapping ``i`` with ``i + draws[i]`` (released infinite shuffle)."""
    perm = np.arange(size, dtype=np.int64)
    for i, offset in enumerate(draws.tolist()):
        j = i + offset
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def _inside_out_shuffle(values: np.ndarray, draws: np.ndarray) -> np.ndarray:
    """Inside-out Fisher-Yates of ``values`` with ``draws[i - 1]`` in ``[0, i]`` (released sharded shuffle)."""
    result = np.empty_like(values)
    if len(values) == 0:
        return result
    result[0] = values[0]
    for i, j in enumerate(draws.tolist(), start=1):
        result[i] = result[j]
        result[j] = values[i]
    return result


# ------------------------------------------------------------------------------------- helpers


def _rank_and_world(start: int | None, step: int | None) -> tuple[int, int]:
    start = distributed.get_global_rank() if start is None else int(start)
    step = distributed.get_global_size() if step is None else int(step)
    if step < 1 or not 0 <= start < step:
        raise ValueError(f"sampler needs 0 <= start < step, got start={start}, step={step}")
    return start, step


def _check_counts(sample_count: int, advance: int) -> None:
    if sample_count < 1:
        raise ValueError(f"sampler got an empty dataset (sample_count={sample_count}); point it at a non-empty dataset")
    if advance < 0:
        raise ValueError(f"sampler advance must be >= 0 (samples already consumed on this rank), got {advance}")


def _keyed_passes(passes: Iterator[np.ndarray], offset: int, position: int) -> Iterator[tuple[int, tuple[int, int]]]:
    """``(index, (0, position))`` over endless passes (each this rank's indices of one pass), skipping the first
    ``offset`` of the first pass; ``position`` counts on from the samples already consumed."""
    for indices in passes:
        for index in indices[offset:].tolist():
            yield index, (0, position)
            position += 1
        offset = 0


class _KeyedSampler(Sampler):
    """Base: ``__iter__`` yields indices; ``iter_keyed`` yields ``(index, (epoch, position))``."""

    _epoch = 0

    def iter_keyed(self) -> Iterator[tuple[int, tuple[int, int]]]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        return (index for index, _ in self.iter_keyed())

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def rank(self) -> int:
        return self._start


class _StreamSampler(_KeyedSampler):
    """Base of the samplers below: the stream arguments they all take, checked and stored in one place.

    ``sample_count``: dataset size; ``shuffle`` / ``seed``: how passes are drawn; rank ``start`` of ``step`` takes
    items ``start::step`` (default: the global rank and world size); ``advance``: items already consumed on this
    rank. Subclasses add their own keyword arguments and pass these on (``**stream``).
    """

    def __init__(
        self,
        *,
        sample_count: int,
        shuffle: bool = False,
        seed: int = 0,
        start: int | None = None,
        step: int | None = None,
        advance: int = 0,
    ):
        _check_counts(sample_count, advance)
        self._advance = advance
        self._sample_count = sample_count
        self._shuffle = shuffle
        self._seed = seed
        self._start, self._step = _rank_and_world(start, step)


# ------------------------------------------------------------------------------------ samplers


class InfiniteSampler(_StreamSampler):
    """Endless stream of whole-dataset passes; rank ``start`` takes items ``start::step`` of each pass.

    Shuffled passes come from one generator seeded once with ``seed`` (the released ``InfiniteSampler``
    stream). Unshuffled passes are ``range(sample_count)``. Arguments: those of :class:`_StreamSampler`.
    """

    def __init__(self, **stream):
        super().__init__(**stream)
        if self._start >= self._sample_count:
            raise ValueError(f"rank {self._start} gets no samples from a dataset of {self._sample_count} samples")

    def _passes(self, first_pass: int) -> Iterator[np.ndarray]:
        n = self._sample_count
        if not self._shuffle:
            while True:
                yield np.arange(n, dtype=np.int64)
        stream = TorchRandintStream(self._seed)
        bounds = np.arange(n, 0, -1, dtype=np.uint64)  # draw i is torch.randint(i, n) = i + randint(0, n - i)
        for _ in range(first_pass):  # replay the passes already consumed (the generator is never re-seeded)
            stream.below(bounds)
        while True:
            yield _fisher_yates_forward(n, stream.below(bounds))

    def iter_keyed(self):
        per_pass = len(range(self._start, self._sample_count, self._step))
        pass_index, offset = divmod(self._advance, per_pass)
        passes = (perm[self._start :: self._step] for perm in self._passes(pass_index))
        yield from _keyed_passes(passes, offset, self._advance)


class ShardedInfiniteSampler(_StreamSampler):
    """Endless stream where rank ``start`` reshuffles its own shard every pass (released default sampler).

    A permutation of the dataset is drawn once from ``seed``; rank ``start`` owns its items
    ``start::step`` (the last ``sample_count % step`` items are dropped so that shards have equal
    length) and shuffles that shard anew at every pass with a generator seeded from
    ``seed + start + (pass << 24)``. ``use_new_shuffle_tensor_slice`` selects ``torch.randperm`` for
    that shuffle (``SHARDED_INFINITE_NEW``) instead of the released per-element inside-out shuffle. Other
    arguments: those of :class:`_StreamSampler`.
    """

    def __init__(self, *, use_new_shuffle_tensor_slice: bool = False, **stream):
        super().__init__(**stream)
        count, ranks = self._sample_count, self._step
        if count < ranks:
            raise ValueError(f"sharded sampler: {count} samples cannot be split over {ranks} ranks")
        self._use_new_shuffle = use_new_shuffle_tensor_slice
        if self._shuffle and count % ranks:
            logger.info("sharded sampler drops %d samples per pass", count % ranks)

    def _pass(self, pass_index: int, shard: np.ndarray) -> np.ndarray:
        if not self._shuffle:
            return shard
        seed = self._seed + self._start + (pass_index << 24)
        if self._use_new_shuffle:
            order = torch.randperm(len(shard), dtype=torch.int64, generator=torch.Generator().manual_seed(seed))
            return shard[order.numpy()]
        bounds = np.arange(2, len(shard) + 1, dtype=np.uint64)  # draw for item i is randint(0, i + 1), i >= 1
        return _inside_out_shuffle(shard, TorchRandintStream(seed).below(bounds))

    def _shard(self) -> np.ndarray:
        if not self._shuffle:
            return np.arange(self._start, self._sample_count, self._step, dtype=np.int64)
        generator = torch.Generator().manual_seed(self._seed)
        perm = torch.randperm(self._sample_count, dtype=_torch_dtype(self._sample_count), generator=generator)
        count = self._sample_count // self._step
        return perm.numpy().astype(np.int64)[self._start :: self._step][:count]

    def iter_keyed(self):
        shard = self._shard()
        pass_index, offset = divmod(self._advance, len(shard))
        passes = (self._pass(number, shard) for number in itertools.count(pass_index))
        yield from _keyed_passes(passes, offset, self._advance)


class EpochSampler(_StreamSampler):
    """``size`` samples per epoch drawn from the dataset tiled as often as needed; call ``set_epoch``.

    Shuffled epochs use ``numpy.random.default_rng(seed * epoch or epoch)`` as in the release. Rank
    ``start`` takes items ``start::step``. ``advance`` skips samples of the first iteration only
    (resuming inside an epoch); later epochs are whole. Other arguments: those of :class:`_StreamSampler`.
    """

    def __init__(self, *, size: int, **stream):
        super().__init__(**stream)
        if size < 1:
            raise ValueError(f"epoch sampler size must be >= 1, got {size}")
        self._size = size
        self._epoch = 0

    def _epoch_indices(self) -> np.ndarray:
        tiles = -(-self._size // self._sample_count)
        tiled = np.tile(np.arange(self._sample_count), tiles)
        if not self._shuffle:
            return tiled[: self._size]
        rng = np.random.default_rng(self._seed * self._epoch if self._seed != 0 else self._epoch)
        return rng.choice(tiled, self._size, replace=False)

    def iter_keyed(self):
        advance, self._advance = self._advance, 0  # one-shot: only the resumed epoch is shortened
        indices = self._epoch_indices()[self._start :: self._step]
        for position, index in enumerate(indices[advance:].tolist(), start=advance):
            yield int(index), (self._epoch, position)

    def __len__(self) -> int:
        return len(range(self._start, self._size, self._step)) - self._advance

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch


class DistributedSampler(torch.utils.data.DistributedSampler):
    """``torch.utils.data.DistributedSampler`` (same indices) plus ``advance`` and keyed iteration.

    ``advance`` skips samples of the first iteration only, like :class:`EpochSampler`.
    """

    def __init__(self, dataset, *, shuffle: bool = True, seed: int = 0, drop_last: bool = False, advance: int = 0):
        _check_counts(len(dataset), advance)
        rank, world = _rank_and_world(None, None)
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        self._advance = advance

    def iter_keyed(self):
        advance, self._advance = self._advance, 0
        indices = itertools.islice(super().__iter__(), advance, None)
        for position, index in enumerate(indices, start=advance):
            yield index, (self.epoch, position)

    def __iter__(self):
        return (index for index, _ in self.iter_keyed())

    def __len__(self) -> int:
        return self.num_samples - self._advance
