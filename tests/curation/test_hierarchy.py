"""Hierarchical k-means with resampling: output formats, level structure, resume, and the flattening effect."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dinov2.curation.arrays import RowSet
from dinov2.curation.hierarchy import hierarchical_kmeans, select_per_cluster
from dinov2.curation.kmeans import assign
from dinov2.curation.sampling import hierarchical_sample, load_clustering
from tests.curation.synthetic import blobs, save

N_COMPONENTS = 20


@pytest.fixture(scope="module")
def long_tail(tmp_path_factory):
    """~3,000 unit rows from 20 Gaussian components of Zipf-like sizes (1,205 down to 35)."""
    sizes = (1200 / np.arange(1, N_COMPONENTS + 1) ** 1.3).astype(int) + 5
    points, component = blobs(list(sizes), dim=16, spread=0.6, seed=0)
    points = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
    return save(tmp_path_factory.mktemp("data") / "x.npy", points), component


def _entropy(labels: np.ndarray) -> float:
    p = np.bincount(labels, minlength=N_COMPONENTS) / len(labels)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _run(path, folder, steps, **kwargs):
    kwargs = {"n_iters": 10, "seed": 0, **kwargs}
    return hierarchical_kmeans(RowSet.open(path, "--embeddings"), folder, [40, 8], steps, [5, 3], **kwargs)


def test_levels_formats_and_structure(long_tail, tmp_path):
    path, _ = long_tail
    n = len(np.load(path))
    _run(path, tmp_path, [2, 2])
    clustering = load_clustering(tmp_path)
    for level, (k, n_in) in enumerate([(40, n), (8, 40)], start=1):
        centroids = np.load(tmp_path / f"level{level}" / "centroids.npy", allow_pickle=False)
        labels = np.load(tmp_path / f"level{level}" / "assignment.npy", allow_pickle=False)
        assert centroids.shape == (k, 16) and centroids.dtype == np.float32
        assert labels.shape == (n_in,) and labels.dtype == np.int64 and labels.min() >= 0 and labels.max() < k
    # level 2 clusters the level-1 centroids: its assignment is their closest level-2 centroid
    level1 = torch.from_numpy(np.load(tmp_path / "level1" / "centroids.npy"))
    level2 = torch.from_numpy(np.load(tmp_path / "level2" / "centroids.npy"))
    np.testing.assert_array_equal(assign(level1, level2)[0].numpy(), clustering.assignments[1])
    sizes = clustering.flat_sizes()
    assert sizes[0].sum() == sizes[1].sum() == n
    record = json.loads((tmp_path / "kmeans.json").read_text())
    assert record["params"]["n_clusters"] == [40, 8] and len(record["objectives"]) == 2


def test_resume_recomputes_nothing_finished(long_tail, tmp_path):
    path, _ = long_tail
    _run(path, tmp_path, [1, 1])
    first = {f: np.load(tmp_path / f) for f in ("level1/assignment.npy", "level2/assignment.npy")}
    step_file = tmp_path / "level1" / "step1" / "centroids.npy"
    stamp = step_file.stat().st_mtime_ns
    for f in ("kmeans.json", "level2/centroids.npy", "level2/step0/centroids.npy", "level2/step1/centroids.npy"):
        (tmp_path / f).unlink()  # as if the job had died during level 2
    _run(path, tmp_path, [1, 1])
    assert step_file.stat().st_mtime_ns == stamp  # level 1 was not recomputed
    for f, array in first.items():
        np.testing.assert_array_equal(np.load(tmp_path / f), array)


@pytest.mark.slow
def test_resampling_flattens_clusters_over_the_components(long_tail, tmp_path):
    """Plain k-means spends its centroids on the dense components; resampling spreads them over all of them,
    and the balanced sample covers the components more evenly than a random sample of the same size."""
    path, component = long_tail
    results = {}
    for name, steps in (("plain", [0, 0]), ("resampled", [4, 4])):
        _run(path, tmp_path / name, steps)
        level1 = np.load(tmp_path / name / "level1" / "assignment.npy")
        majority = np.array(
            [
                np.bincount(component[level1 == c], minlength=N_COMPONENTS).argmax()
                for c in range(40)
                if (level1 == c).any()
            ]
        )
        samples = [component[hierarchical_sample(tmp_path / name, 300, seed=s)] for s in range(3)]
        results[name] = (_entropy(majority), np.mean([_entropy(s) for s in samples]), (majority == 0).sum())
    rng = np.random.default_rng(0)
    random = np.mean([_entropy(component[rng.choice(len(component), 300, replace=False)]) for _ in range(3)])
    # measured: 9 of the 40 centroids in the largest component without resampling, 2 with it
    assert results["resampled"][2] <= results["plain"][2] / 2
    assert results["resampled"][0] > results["plain"][0] + 0.1  # centroids spread over the components
    assert results["resampled"][1] > random + 0.3 and results["plain"][1] > random + 0.2


def test_select_per_cluster_takes_the_smallest_keys():
    labels = torch.tensor([0, 1, 0, 1, 0, 2])
    keys = np.array([0.5, 0.1, 0.2, 0.3, 0.2, 0.9])
    np.testing.assert_array_equal(select_per_cluster(labels, keys, 100, 3, 2), [101, 102, 103, 104, 105])


def test_bad_levels_are_refused(long_tail, tmp_path):
    path, _ = long_tail
    rows = RowSet.open(path, "--embeddings")
    with pytest.raises(ValueError, match=r"level1: 5000 clusters requested but .*x\.npy' has 3\d\d\d rows"):
        hierarchical_kmeans(rows, tmp_path / "a", [5000, 50], [0, 0], [1, 1], n_iters=2)
    with pytest.raises(ValueError, match=r"\[40, 50\]: each level needs at most the clusters of the level below"):
        hierarchical_kmeans(rows, tmp_path / "a", [40, 50], [0, 0], [1, 1], n_iters=2)
    assert not (tmp_path / "a").exists()  # refused before anything was written
    with pytest.raises(ValueError, match="one value per level"):
        hierarchical_kmeans(rows, tmp_path / "b", [40, 8], [0], [1, 1])
