"""Water-filling allocation and hierarchical balanced sampling."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dinov2.curation.sampling import Clustering, hierarchical_sample, load_clustering, water_fill


def _cases(n: int):
    rng = np.random.default_rng(0)
    for _ in range(n):
        sizes = rng.zipf(1.5, size=int(rng.integers(1, 40))).clip(max=10_000) * rng.integers(0, 2, 1)[0]
        sizes = np.maximum(sizes, rng.integers(0, 3, size=len(sizes)))
        yield sizes.astype(np.int64), int(rng.integers(0, sizes.sum() + 5))


@pytest.mark.parametrize("case", range(200))
def test_water_filling_properties(case):
    sizes, target = list(_cases(200))[case]
    allocation = water_fill(sizes, target, np.random.default_rng(case))
    assert (allocation >= 0).all() and (allocation <= sizes).all()  # never above a cluster's size
    assert allocation.sum() == min(target, sizes.sum())  # sums to T (or takes everything)
    # max-min fair: a cluster below its size gets at least every other cluster's allocation minus one
    unfilled = allocation < sizes
    if unfilled.any():
        assert allocation[unfilled].min() >= allocation.max() - 1
        # and no cluster could gain without taking from one that has at most as much
        assert allocation[unfilled].max() - allocation[unfilled].min() <= 1


def test_water_filling_example_and_seed():
    sizes = np.array([1, 5, 10, 100, 3])
    np.testing.assert_array_equal(water_fill(sizes, 50, np.random.default_rng(0)), [1, 5, 10, 31, 3])
    alloc = [water_fill(np.array([10, 10, 10]), 7, np.random.default_rng(s)) for s in range(20)]
    assert all(sorted(a.tolist()) == [2, 2, 3] for a in alloc) and len({tuple(a) for a in alloc}) > 1
    np.testing.assert_array_equal(water_fill(np.array([4, 4]), 100, np.random.default_rng(0)), [4, 4])


@pytest.fixture
def two_levels():
    """Level 1: 6 clusters of sizes 50, 30, 10, 5, 3, 2 (100 points); level 2: {0, 1} (80 points) and {2..5}."""
    sizes = [50, 30, 10, 5, 3, 2]
    labels = np.random.default_rng(1).permutation(np.repeat(np.arange(6), sizes))
    distances = np.random.default_rng(2).random(100).astype(np.float32)
    return Clustering(None, [labels, np.array([0, 0, 1, 1, 1, 1])], [6, 2], distances, None)


def test_hierarchical_sample_is_balanced_top_down(two_levels):
    picked = hierarchical_sample(two_levels, 40, seed=0)
    assert len(picked) == 40 and len(np.unique(picked)) == 40 and np.all(np.diff(picked) > 0)
    per_cluster = np.bincount(two_levels.assignments[0][picked], minlength=6)
    # top level: 20 + 20 (the small top cluster has 20 points); inside: 10 + 10 and 10, 5, 3, 2
    np.testing.assert_array_equal(per_cluster, [10, 10, 10, 5, 3, 2])
    np.testing.assert_array_equal(picked, hierarchical_sample(two_levels, 40, seed=0))
    assert not np.array_equal(picked, hierarchical_sample(two_levels, 40, seed=1))


def test_closest_strategy_and_multiplier(two_levels):
    labels, distances = two_levels.assignments[0], two_levels.distances
    picked = hierarchical_sample(two_levels, 40, strategy="closest")
    for cluster in (0, 1):
        members = np.flatnonzero(labels == cluster)
        expected = members[np.argsort(distances[members], kind="stable")[:10]]
        np.testing.assert_array_equal(np.sort(picked[labels[picked] == cluster]), np.sort(expected))
    doubled = hierarchical_sample(two_levels, 150, multiplier=2, seed=0)
    counts = np.bincount(doubled, minlength=100)
    assert len(doubled) == 150 and counts.max() == 2  # never more than the multiplier
    assert (counts[labels >= 2] == 2).all()  # small clusters are taken twice before big ones grow
    everything = hierarchical_sample(two_levels, 10_000, multiplier=3)
    np.testing.assert_array_equal(np.bincount(everything), np.full(100, 3))


def test_subset_rows_and_missing_level(tmp_path, two_levels):
    two_levels.rows = np.arange(100, dtype=np.int64) * 10 + 7  # the clustering ran on a subset
    assert (hierarchical_sample(two_levels, 40) % 10 == 7).all()
    (tmp_path / "level1").mkdir()
    json.dump({"params": {"n_clusters": [6, 2]}}, open(tmp_path / "kmeans.json", "w"))
    np.save(tmp_path / "level1" / "assignment.npy", two_levels.assignments[0])
    with pytest.raises(FileNotFoundError, match=r"level 2 of 2 is missing .*level2.*re-run the kmeans"):
        load_clustering(tmp_path)
    with pytest.raises(FileNotFoundError, match="no kmeans.json"):
        load_clustering(tmp_path / "level1")
    with pytest.raises(ValueError, match="--strategy"):
        hierarchical_sample(two_levels, 10, strategy="furthest")
