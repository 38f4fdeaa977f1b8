"""Nearest neighbours (exact torch, faiss Flat and IVF) and retrieval (sample- and cluster-based)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinov2.curation.arrays import RowSet
from dinov2.curation.knn import SearchOptions, knn_search
from dinov2.curation.retrieval import cluster_pool, retrieve_by_clusters, retrieve_by_samples
from tests.curation.synthetic import copy_at, normalise, random_units, save


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """2,000 unit rows around 20 centres (500 / 20 rows per cluster, 100 each) and 200 queries near them."""
    rng = np.random.default_rng(0)
    centres = random_units(20, 32, rng)
    pool = normalise(np.repeat(centres, 100, axis=0) + 0.15 * rng.standard_normal((2000, 32))).astype(np.float32)
    queries = normalise(centres[rng.integers(0, 20, 200)] + 0.15 * rng.standard_normal((200, 32))).astype(np.float32)
    root = tmp_path_factory.mktemp("knn")
    return save(root / "pool.npy", pool), save(root / "queries.npy", queries), centres


def test_exact_search_equals_brute_force_with_ties_to_the_lower_row(tmp_path):
    rng = np.random.default_rng(1)
    base = random_units(300, 16, rng)
    pool = np.concatenate([base, base[:50]])  # rows 300..349 repeat rows 0..49: exact ties
    rows = RowSet.open(save(tmp_path / "pool.npy", pool.astype(np.float32)), "pool")
    queries = torch.from_numpy(base[:60].astype(np.float32))
    sims, found = knn_search(rows, queries, 5, SearchOptions(chunk_size=7))
    scores = queries.double() @ torch.from_numpy(pool).double().T
    order = np.lexsort((np.broadcast_to(np.arange(350), scores.shape), -scores.numpy().round(5)), axis=1)[:, :5]
    np.testing.assert_array_equal(found.numpy(), order)
    np.testing.assert_allclose(sims.numpy(), np.take_along_axis(scores.numpy(), order, 1), atol=1e-5)
    assert (found[:50, 0] == torch.arange(50)).all() and (found[:50, 1] == torch.arange(300, 350)).all()


def test_faiss_flat_and_ivf(clustered):
    pytest.importorskip("faiss")
    pool_path, queries_path, _ = clustered
    pool, queries = RowSet.open(pool_path, "pool"), torch.from_numpy(np.load(queries_path))
    exact_sims, exact = knn_search(pool, queries, 4, SearchOptions())
    flat_sims, flat = knn_search(pool, queries, 4, SearchOptions(backend="faiss"))
    np.testing.assert_array_equal(flat.numpy(), exact.numpy())
    np.testing.assert_allclose(flat_sims.numpy(), exact_sims.numpy(), atol=1e-5)
    ivf_sims, ivf = knn_search(pool, queries, 4, SearchOptions(backend="faiss", index="IVF20,Flat", nprobe=4))
    recall = np.mean([len(set(a) & set(b)) / 4 for a, b in zip(ivf.numpy(), exact.numpy())])
    assert recall >= 0.95
    _, pq = knn_search(pool, queries, 4, SearchOptions(backend="faiss", index="IVF20,PQ8x4", nprobe=20))
    # compressed codes blur the order inside a cluster, not the cluster (pool row i belongs to cluster i // 100)
    assert np.mean(pq.numpy() // 100 == exact.numpy()[:, :1] // 100) >= 0.95


def test_sample_based_retrieval_keeps_repeats_unless_asked(clustered, tmp_path):
    pool_path, queries_path, _ = clustered
    pool, queries = RowSet.open(pool_path, "--pool"), RowSet.open(queries_path, "--queries")
    retrieved = retrieve_by_samples(pool, queries, tmp_path / "repeats", k=4)
    neighbours = np.load(tmp_path / "repeats" / "neighbours.npy")
    assert neighbours.shape == (200, 4) and len(retrieved) == 200 * 4  # N x k, as the paper counts
    np.testing.assert_array_equal(retrieved, np.sort(neighbours.ravel()))
    unique = retrieve_by_samples(pool, queries, tmp_path / "unique", k=4, unique=True)
    np.testing.assert_array_equal(unique, np.unique(neighbours))
    assert len(unique) < len(retrieved)  # collisions: pool rows near several queries
    subset = np.arange(1, 2000, 2, dtype=np.int64)  # retrieval from part of the pool reports original rows
    odd = retrieve_by_samples(
        RowSet.open(pool_path, "--pool", save(tmp_path / "odd.npy", subset)), queries, tmp_path / "odd", k=2
    )
    assert (odd % 2 == 1).all()


def test_cluster_based_retrieval(tmp_path):
    rng = np.random.default_rng(2)
    centres = random_units(20, 64, rng)
    pool = np.concatenate([[copy_at(c, 0.99, rng) for _ in range(60)] for c in centres])  # tight: k-means finds them
    placed = {0: 5, 1: 4, 2: 3, 3: 1, 19: 6}  # queries per true cluster: only > 3 qualifies
    queries = np.stack([copy_at(centres[c], 0.9, rng) for c, n in placed.items() for _ in range(n)])
    pool_rows = RowSet.open(save(tmp_path / "pool.npy", pool.astype(np.float32)), "--pool")
    query_rows = RowSet.open(save(tmp_path / "queries.npy", queries.astype(np.float32)), "--queries")
    clusters = cluster_pool(pool_rows, tmp_path / "clusters", 20, n_iters=10, seed=0)
    truth = np.repeat(np.arange(20), 60)
    assignment = np.load(tmp_path / "clusters" / "assignment.npy")
    assert len({(int(a), int(t)) for a, t in zip(assignment, truth)}) == 20  # k-means found the 20 clusters
    retrieved = retrieve_by_clusters(pool_rows, query_rows, tmp_path / "a", clusters, per_cluster=25, cap=1000)
    per_true_cluster = np.bincount(truth[retrieved], minlength=20)
    assert per_true_cluster[[0, 1, 19]].tolist() == [25, 25, 25] and per_true_cluster.sum() == 75
    assert len(np.unique(retrieved)) == 75
    everything = retrieve_by_clusters(pool_rows, query_rows, tmp_path / "all", clusters, per_cluster=100, cap=1000)
    np.testing.assert_array_equal(everything, np.flatnonzero(np.isin(truth, [0, 1, 19])))  # smaller than per_cluster
    capped = retrieve_by_clusters(pool_rows, query_rows, tmp_path / "b", clusters, per_cluster=25, cap=30)
    assert len(capped) == 30 and np.isin(capped, retrieved).all()
    again = retrieve_by_clusters(pool_rows, query_rows, tmp_path / "c", clusters, per_cluster=25, cap=30)
    np.testing.assert_array_equal(again, capped)  # seeded
