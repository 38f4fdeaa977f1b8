"""Retrieval of pool images close to a curated query set (DINOv2 paper, section 3 and App. A.4).

**Sample-based** (:func:`retrieve_by_samples`; the paper uses it for query sets of more than 1M images, k = 4, or
32 for ImageNet-1k): the ``k`` nearest pool rows of every query. Repeats are kept (a pool image near 3 queries
counts 3 times, as the paper's counts N x k show); ``unique=True`` keeps each pool row once.

**Cluster-based** (:func:`retrieve_by_clusters`; smaller query sets): the pool is clustered by k-means
(:func:`cluster_pool`, paper: 100,000 clusters; one clustering can serve several query sets); each query goes to
its closest centroid; every cluster holding **more than** ``min_queries`` queries (paper: more than 3) gives
``per_cluster`` of its pool rows (paper: 10,000; all of them when it has fewer), drawn at random (seeded); a
total above ``cap`` (paper: 1M) is cut to ``cap`` rows drawn at random. The paper does not say how the 10,000 or
the cap were drawn: these are our choices.

Outputs (``output_dir``): ``retrieved_indices.npy`` (sorted int64 pool row numbers, repeated when kept),
sample-based ``neighbours.npy`` ([queries, k] int64 pool rows) and ``similarities.npy`` ([queries, k] float32),
cluster-based ``query_counts.npy`` (queries per pool cluster); ``retrieve.json`` (written last). The pool
clustering folder holds ``centroids.npy``, ``assignment.npy`` (cluster of each pool row of the view) and
``pool_clusters.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from dinov2.curation import parallel
from dinov2.curation.arrays import RowSet, check_embeddings, check_same_dim
from dinov2.curation.files import begin_step, load_npy, mark_done, save_npy, write_rows
from dinov2.curation.kmeans import assign, kmeans
from dinov2.curation.knn import SearchOptions, check_k, knn_search

logger = logging.getLogger("dinov2")

__all__ = ["retrieve_by_samples", "cluster_pool", "retrieve_by_clusters"]


def _check(pool: RowSet, queries: RowSet) -> None:
    check_same_dim(pool, queries, "--pool", "--queries")
    check_embeddings(pool, "--pool")
    check_embeddings(queries, "--queries")


def retrieve_by_samples(
    pool: RowSet,
    queries: RowSet,
    output_dir: str | Path,
    *,
    k: int = 4,
    unique: bool = False,
    options: SearchOptions | None = None,
    params: dict | None = None,
) -> np.ndarray:
    """Collective: the ``k`` nearest pool rows of every query (see the module docstring)."""
    output_dir = Path(output_dir)
    params = dict(params or {}, mode="sample", k=k, unique=unique)
    check_k(k, pool, "--pool")
    if not begin_step(output_dir, "retrieve", params):
        _check(pool, queries)
        local, start = queries.load()
        sims, found = knn_search(pool, local, k, options or SearchOptions(), "--pool")
        if (found < 0).any():
            raise RuntimeError("the approximate index returned fewer than k neighbours: raise --nprobe")
        write_rows(output_dir / "neighbours.npy", pool.original(found.numpy()), start, len(queries))
        write_rows(output_dir / "similarities.npy", sims.numpy().astype(np.float32), start, len(queries))
        if parallel.is_main():
            retrieved = np.sort(load_npy(output_dir / "neighbours.npy", "neighbours", mmap=False).reshape(-1))
            if unique:
                retrieved = np.unique(retrieved)
            save_npy(output_dir / "retrieved_indices.npy", retrieved)
            mark_done(output_dir, "retrieve", params, counts={"queries": len(queries), "retrieved": len(retrieved)})
            logger.info(
                "retrieve: %d pool rows for %d queries (k=%d) in %s", len(retrieved), len(queries), k, output_dir
            )
        parallel.barrier()
    return load_npy(output_dir / "retrieved_indices.npy", "retrieved indices", mmap=False)


def cluster_pool(
    pool: RowSet,
    folder: str | Path,
    n_clusters: int,
    *,
    n_iters: int = 50,
    seed: int = 0,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Collective: k-means of the pool into ``n_clusters`` (skipped when ``folder`` already holds it)."""
    folder = Path(folder)
    params = {
        "pool": str(pool.embeddings.path),
        "rows": len(pool),
        "n_clusters": n_clusters,
        "n_iters": n_iters,
        "seed": seed,
    }
    if not 1 <= n_clusters <= len(pool):
        raise ValueError(
            f"--clusters {n_clusters}: the pool {str(pool.embeddings.path)!r} has {len(pool)} rows; use 1 <= "
            f"--clusters <= {len(pool)}"
        )
    if begin_step(folder, "pool_clusters", params):
        return folder
    check_embeddings(pool, "--pool")
    x, start = pool.load(dtype, device)
    result = kmeans(x, n_clusters, n_iters=n_iters, seed=seed, checkpoint_dir=folder / "checkpoint")
    write_rows(folder / "assignment.npy", result.assignment.cpu().numpy(), start, len(pool))
    if parallel.is_main():
        save_npy(folder / "centroids.npy", result.centroids.numpy().astype(np.float32))
        mark_done(folder, "pool_clusters", params, objective=result.objective)
    parallel.barrier()
    return folder


def retrieve_by_clusters(
    pool: RowSet,
    queries: RowSet,
    output_dir: str | Path,
    clusters: str | Path,
    *,
    min_queries: int = 3,
    per_cluster: int = 10_000,
    cap: int = 1_000_000,
    seed: int = 0,
    params: dict | None = None,
) -> np.ndarray:
    """Collective: pool rows of the clusters (in ``clusters``, from :func:`cluster_pool`) that hold more than
    ``min_queries`` queries, ``per_cluster`` each, ``cap`` in all (see the module docstring)."""
    output_dir, clusters = Path(output_dir), Path(clusters)
    if min(min_queries, per_cluster, cap) < 0:
        raise ValueError(f"--min-queries, --per-cluster, --cap must be >= 0, got {min_queries}, {per_cluster}, {cap}")
    params = dict(
        params or {},
        mode="cluster",
        clusters=str(clusters),
        min_queries=min_queries,
        per_cluster=per_cluster,
        cap=cap,
        seed=seed,
    )
    if not begin_step(output_dir, "retrieve", params):
        _check(pool, queries)
        centroids = torch.from_numpy(load_npy(clusters / "centroids.npy", "pool clusters", mmap=False))
        local, _ = queries.load()
        labels, _ = assign(local, centroids)
        counts = parallel.all_reduce(torch.bincount(labels, minlength=len(centroids)).cpu())
        if parallel.is_main():
            retrieved = _draw_from_clusters(pool, clusters, counts.numpy(), min_queries, per_cluster, cap, seed)
            save_npy(output_dir / "query_counts.npy", counts.numpy().astype(np.int64))
            save_npy(output_dir / "retrieved_indices.npy", retrieved)
            qualified = int((counts > min_queries).sum())
            mark_done(
                output_dir,
                "retrieve",
                params,
                counts={"queries": len(queries), "clusters": qualified, "retrieved": len(retrieved)},
            )
            logger.info(
                "retrieve: %d clusters hold > %d queries; %d pool rows in %s",
                qualified,
                min_queries,
                len(retrieved),
                output_dir,
            )
        parallel.barrier()
    return load_npy(output_dir / "retrieved_indices.npy", "retrieved indices", mmap=False)


def _draw_from_clusters(pool: RowSet, clusters: Path, counts, min_queries, per_cluster, cap, seed) -> np.ndarray:
    assignment = load_npy(clusters / "assignment.npy", "pool clusters", mmap=False)
    if len(assignment) != len(pool):
        raise ValueError(f"{clusters} clusters {len(assignment)} pool rows but the pool has {len(pool)}: re-cluster")
    rng = np.random.default_rng(seed)
    order = np.argsort(assignment, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(assignment, minlength=len(counts)))])
    picked = []
    for cluster in np.flatnonzero(counts > min_queries):
        members = order[starts[cluster] : starts[cluster + 1]]
        take = min(per_cluster, len(members))
        picked.append(members if take == len(members) else rng.choice(members, size=take, replace=False))
    picked = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    if len(picked) > cap:
        picked = rng.choice(picked, size=cap, replace=False)
    return np.sort(pool.original(picked))
