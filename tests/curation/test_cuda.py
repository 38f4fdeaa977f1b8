"""The curation steps on a GPU give the CPU results (run on a machine with CUDA; skipped elsewhere)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinov2.curation.arrays import RowSet
from dinov2.curation.hierarchy import hierarchical_kmeans
from dinov2.curation.kmeans import kmeans
from dinov2.curation.knn import SearchOptions, knn_search
from tests.curation.synthetic import blobs, planted_pool, save

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def points():
    x, _ = blobs([400, 300, 200, 100, 50], dim=64, spread=0.8, seed=0)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kmeans_on_cuda_equals_cpu(points, dtype):
    x = torch.from_numpy(points).to(dtype)
    cpu = kmeans(x, 16, n_iters=10, seed=0)
    gpu = kmeans(x.cuda(), 16, n_iters=10, seed=0)
    np.testing.assert_array_equal(gpu.init_indices, cpu.init_indices)
    np.testing.assert_array_equal(gpu.assignment.cpu().numpy(), cpu.assignment.numpy())
    atol = 1e-10 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(gpu.centroids.numpy(), cpu.centroids.numpy(), rtol=0, atol=atol)
    assert gpu.objective == pytest.approx(cpu.objective, rel=1e-6)


def test_exact_knn_on_cuda_equals_cpu(tmp_path):
    pool, _ = planted_pool(3000, 100, 128, seed=1)
    rows = RowSet.open(save(tmp_path / "pool.npy", pool), "pool")
    queries = torch.from_numpy(pool[:500])
    cpu_sims, cpu = knn_search(rows, queries, 16, SearchOptions(device="cpu"))
    gpu_sims, gpu = knn_search(rows, queries, 16, SearchOptions(device="cuda"))
    np.testing.assert_array_equal(gpu.numpy(), cpu.numpy())
    np.testing.assert_allclose(gpu_sims.numpy(), cpu_sims.numpy(), atol=1e-5)


def test_hierarchical_kmeans_on_cuda_equals_cpu(points, tmp_path):
    path = save(tmp_path / "x.npy", points.astype(np.float32))
    for device in ("cpu", "cuda"):
        hierarchical_kmeans(
            RowSet.open(path, "x"),
            tmp_path / device,
            [20, 4],
            [2, 2],
            [10, 3],
            n_iters=5,
            device=device,
            dtype="float64",
        )
    for name in ("level1/assignment.npy", "level2/assignment.npy"):
        np.testing.assert_array_equal(np.load(tmp_path / "cuda" / name), np.load(tmp_path / "cpu" / name))
