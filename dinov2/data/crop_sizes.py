"""Per-iteration crop resolutions of DINOv3's high-resolution adaptation (``crops.*_size`` lists).

``crops.global_crops_size``, ``crops.local_crops_size`` and ``crops.gram_teacher_crops_size`` may be lists of equal
length (a scalar stands for every entry); entry ``i`` is one resolution (:class:`CropSizes`), drawn for a whole
iteration with probability ``crops.global_local_crop_pairs_ratios[i]``. Every batch is therefore collated at one
resolution (no padding), the same on every rank.

:class:`CropSizeSampler` draws the entry of iteration ``t`` from a generator seeded by ``(seed, t // block)`` alone:
the ranks agree without communicating (as in the release, whose ranks share one seeded generator), and the sequence
does not depend on where a run started, so a resumed run replays it exactly (the release restarts its sequence).
:class:`MultiResolutionLoader` takes each iteration's batch from the loader of its entry; on resume each loader is
advanced by the batches it served before (:meth:`CropSizeSampler.counts`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

__all__ = ["CropSizes", "CropSizeSampler", "MultiResolutionLoader", "crop_size_entries"]

_BLOCK = 4096  # iterations drawn per generator: counts over a million iterations stay cheap
_STREAM = 65537  # the release's seed of its combined loader


@dataclasses.dataclass(frozen=True)
class CropSizes:
    """One resolution entry: global, local and (Gram anchoring) Gram teacher crop sizes in pixels."""

    global_size: int
    local_size: int
    gram_size: int | None = None


def _as_list(value: Any, n: int, key: str) -> list:
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * n
    if len(values) != n:
        raise ValueError(
            f"crops.{key} has {len(values)} entries but crops.global_crops_size has {n}: give one size per "
            "resolution entry (or a single number for all)"
        )
    return values


def crop_size_entries(crops: Any) -> tuple[list[CropSizes], list[float]]:
    """The resolution entries of a ``crops`` config section and their probabilities (normalised)."""
    global_sizes = crops.global_crops_size
    n = len(global_sizes) if isinstance(global_sizes, Sequence) and not isinstance(global_sizes, str) else 1
    columns = [_as_list(crops[key], n, key) for key in ("global_crops_size", "local_crops_size")]
    gram = _as_list(crops.get("gram_teacher_crops_size"), n, "gram_teacher_crops_size")
    ratios = [
        float(r)
        for r in _as_list(crops.get("global_local_crop_pairs_ratios", 1.0), n, "global_local_crop_pairs_ratios")
    ]
    if any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"crops.global_local_crop_pairs_ratios={ratios} must be >= 0 with a positive sum")
    entries = [CropSizes(int(g), int(loc), None if s is None else int(s)) for g, loc, s in zip(*columns, gram)]
    total = sum(ratios)
    return entries, [r / total for r in ratios]


class CropSizeSampler:
    """``index(t)``: the resolution entry of iteration ``t`` (same on every rank, any start)."""

    def __init__(self, ratios: Sequence[float], seed: int = 0) -> None:
        self.ratios = np.asarray(ratios, dtype=np.float64)
        self.ratios = self.ratios / self.ratios.sum()
        self.seed = int(seed)
        self._cache: tuple[int, np.ndarray] | None = None

    def _block(self, block: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != block:
            rng = np.random.default_rng([_STREAM, self.seed, block])
            self._cache = (block, rng.choice(len(self.ratios), size=_BLOCK, p=self.ratios))
        return self._cache[1]

    def index(self, iteration: int) -> int:
        if len(self.ratios) == 1:
            return 0
        return int(self._block(iteration // _BLOCK)[iteration % _BLOCK])

    def indices(self, start: int, stop: int) -> np.ndarray:
        """Entries of iterations ``start .. stop - 1``."""
        return np.array([self.index(t) for t in range(start, stop)], dtype=np.int64)

    def counts(self, stop: int) -> list[int]:
        """How many of the iterations ``0 .. stop - 1`` drew each entry."""
        n = len(self.ratios)
        if n == 1:
            return [stop]
        total = np.zeros(n, dtype=np.int64)
        full, rest = divmod(stop, _BLOCK)
        for block in range(full):
            total += np.bincount(self._block(block), minlength=n)
        if rest:
            total += np.bincount(self._block(full)[:rest], minlength=n)
        return total.tolist()


class MultiResolutionLoader:
    """An infinite stream of batches: iteration ``t`` (from ``start_iter``) takes the next batch of
    ``loaders[sampler.index(t)]``. Each loader must already be advanced by the batches it served before."""

    def __init__(self, loaders: Sequence[Iterable], sampler: CropSizeSampler, start_iter: int = 0) -> None:
        if len(loaders) != len(sampler.ratios):
            raise ValueError(f"{len(loaders)} loaders for {len(sampler.ratios)} resolution entries")
        self.loaders = list(loaders)
        self.sampler = sampler
        self.start_iter = int(start_iter)

    def __iter__(self) -> Iterator[Any]:
        iterators: list[Iterator | None] = [None] * len(self.loaders)
        iteration = self.start_iter
        while True:
            k = self.sampler.index(iteration)
            if iterators[k] is None:  # started on first use: an entry never drawn spawns no workers
                iterators[k] = iter(self.loaders[k])
            yield next(iterators[k])
            iteration += 1
