"""Samplers: the released index streams, determinism, disjoint ranks that cover the data, exact ``advance``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from dinov2.data.samplers import (
    DistributedSampler,
    EpochSampler,
    InfiniteSampler,
    ShardedInfiniteSampler,
    TorchRandintStream,
)

# ---------------------------------------------------------------- released algorithms, element by element


def _released_infinite(n, seed, start, step):
    """Infinite shuffled stream as the release draws it: one torch.randint(i, n) per element, one generator."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        perm = list(range(n))
        drawn = []
        for i in range(n):
            j = torch.randint(i, n, size=(1,), generator=generator).item()
            perm[i], perm[j] = perm[j], perm[i]
            drawn.append(perm[i])
        yield from drawn[start::step]


def _released_sharded(n, seed, start, step, new):
    """Sharded stream as the release draws it: one base permutation, the rank's slice reshuffled every pass."""
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, dtype=torch.int32, generator=generator)
    count = n // step
    for pass_index in itertools.count():
        generator.manual_seed(seed + start + (pass_index << 24))
        if new:
            yield from perm[start::step][torch.randperm(count, dtype=torch.int64, generator=generator)].tolist()
            continue
        result = [0] * count
        for i in range(count):
            j = torch.randint(0, i + 1, size=(1,), generator=generator).item() if i > 0 else 0
            result[i] = result[j]
            result[j] = perm[start + i * step].item()
        yield from result


def _take(iterable, count, skip=0):
    return list(itertools.islice(iterable, skip, skip + count))


@pytest.mark.parametrize("n, seed, step", [(10, 0, 1), (37, 5, 3), (64, 123, 4)])
def test_infinite_sampler_reproduces_released_stream(n, seed, step):
    for start in range(step):
        ours = InfiniteSampler(sample_count=n, shuffle=True, seed=seed, start=start, step=step)
        assert _take(ours, 3 * n) == _take(_released_infinite(n, seed, start, step), 3 * n)


@pytest.mark.parametrize("new", [False, True])
@pytest.mark.parametrize("n, seed, step", [(10, 0, 1), (37, 5, 3), (64, 123, 4)])
def test_sharded_sampler_reproduces_released_stream(n, seed, step, new):
    for start in range(step):
        ours = ShardedInfiniteSampler(
            sample_count=n, shuffle=True, seed=seed, start=start, step=step, use_new_shuffle_tensor_slice=new
        )
        assert _take(ours, 3 * n) == _take(_released_sharded(n, seed, start, step, new), 3 * n)


def test_epoch_and_distributed_samplers_match_their_references():
    n, size, step = 23, 40, 3
    for epoch in (0, 2):
        tiled = np.tile(np.arange(n), 2)
        expected = np.random.default_rng(7 * epoch).choice(tiled, size, replace=False) if epoch else None
        for start in range(step):
            sampler = EpochSampler(size=size, sample_count=n, shuffle=True, seed=7, start=start, step=step)
            sampler.set_epoch(epoch)
            if expected is None:
                expected = np.random.default_rng(0).choice(tiled, size, replace=False)
            assert list(sampler) == expected[start::step].tolist()
    dataset = list(range(n))
    ours = DistributedSampler(dataset, shuffle=True, seed=3)
    reference = torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=3)
    for epoch in (0, 1):
        ours.set_epoch(epoch)
        reference.set_epoch(epoch)
        assert list(ours) == list(reference)


@pytest.mark.parametrize("top", [1000, 2**20 + 7, 2**31 - 1])
def test_randint_stream_equals_torch_draws(top):
    bounds = np.array([1, 2, 5, top, top - 1, 7] * 20, dtype=np.uint64)
    generator = torch.Generator().manual_seed(99)
    stream = TorchRandintStream(99)
    for _ in range(2):  # the stream continues across calls
        expected = [torch.randint(0, int(b), size=(1,), generator=generator).item() for b in bounds]
        assert stream.below(bounds).tolist() == expected
    slow = TorchRandintStream(99)
    slow._use_numpy = False  # the exact torch-loop fallback
    assert slow.below(bounds[:12]).tolist() == TorchRandintStream(99).below(bounds[:12]).tolist()


# ------------------------------------------------------------------------------------ invariants


def _make(kind, n, start, step, seed=11, advance=0, shuffle=True):
    if kind == "infinite":
        return InfiniteSampler(sample_count=n, shuffle=shuffle, seed=seed, start=start, step=step, advance=advance)
    if kind in ("sharded", "sharded_new"):
        return ShardedInfiniteSampler(
            sample_count=n, shuffle=shuffle, seed=seed, start=start, step=step, advance=advance,
            use_new_shuffle_tensor_slice=kind == "sharded_new",
        )  # fmt: skip
    return EpochSampler(size=n, sample_count=n, shuffle=shuffle, seed=seed, start=start, step=step, advance=advance)


KINDS = ["infinite", "sharded", "sharded_new", "epoch"]


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_for_a_seed(kind):
    def first(seed):
        sampler = _make(kind, 50, 0, 2, seed=seed)
        if kind == "epoch":
            sampler.set_epoch(1)  # released quirk: epoch 0 shuffles with seed 0 whatever the seed
        return _take(sampler, 25)

    assert first(11) == first(11)
    assert first(11) != first(12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_are_disjoint_and_cover_the_dataset(kind, shuffle):
    n, world = 51, 4
    per_rank = n // world if kind.startswith("sharded") and shuffle else None
    streams = []
    for rank in range(world):
        count = per_rank if per_rank else len(range(rank, n, world))
        streams.append(_take(_make(kind, n, rank, world, shuffle=shuffle), count))
    flat = [i for s in streams for i in s]
    assert len(flat) == len(set(flat))  # disjoint across ranks (and no repeat within a pass)
    expected = n - n % world if kind.startswith("sharded") and shuffle else n
    assert len(flat) == expected and set(flat) <= set(range(n))


@pytest.mark.parametrize("kind", ["infinite", "sharded", "sharded_new"])
@pytest.mark.parametrize("advance", [0, 1, 12, 13, 25, 100])
def test_advance_continues_exactly(kind, advance):
    n, world, rank = 27, 2, 1  # one pass of a rank: 13 or 14 samples
    full = _take(_make(kind, n, rank, world), 60, skip=advance)
    resumed = _make(kind, n, rank, world, advance=advance)
    assert _take(resumed, 60) == full
    positions = [key[1][1] for key in itertools.islice(resumed.iter_keyed(), 5)]
    assert positions == list(range(advance, advance + 5))


@pytest.mark.parametrize("advance", [0, 3, 10])
def test_epoch_sampler_advance_resumes_inside_the_epoch_once(advance):
    sampler = _make("epoch", 30, 1, 3, advance=advance)
    sampler.set_epoch(4)
    reference = _make("epoch", 30, 1, 3)
    reference.set_epoch(4)
    assert len(sampler) == 10 - advance
    assert list(sampler) == list(reference)[advance:]
    assert list(sampler) == list(reference)  # the next pass is whole


def test_distributed_sampler_advance():
    dataset = list(range(20))
    full = list(DistributedSampler(dataset, shuffle=True, seed=1))
    resumed = DistributedSampler(dataset, shuffle=True, seed=1, advance=7)
    assert len(resumed) == 13 and list(resumed) == full[7:]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sample_count": 0}, "empty"),
        ({"sample_count": 10, "start": 2, "step": 2}, "start < step"),
        ({"sample_count": 10, "advance": -1}, "advance"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        InfiniteSampler(**{"start": 0, "step": 1, **kwargs})


@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: InfiniteSampler(**kw),
        lambda **kw: ShardedInfiniteSampler(use_new_shuffle_tensor_slice=True, **kw),
        lambda **kw: EpochSampler(size=5, **kw),
    ],
)
def test_every_stream_sampler_checks_the_shared_arguments(make):
    with pytest.raises(ValueError, match="advance"):
        make(sample_count=10, start=0, step=1, advance=-1)
    with pytest.raises(TypeError, match="sample_cuont"):  # a misspelt argument is refused, not swallowed
        make(sample_cuont=10, start=0, step=1)
    sampler = make(sample_count=10, start=1, step=2, seed=3, shuffle=True, advance=2)
    assert (sampler.rank, sampler._step, sampler._seed, sampler._advance) == (1, 2, 3, 2)


def test_sharded_sampler_needs_a_sample_per_rank():
    with pytest.raises(ValueError, match="cannot be split over 4 ranks"):
        ShardedInfiniteSampler(sample_count=3, start=0, step=4)
