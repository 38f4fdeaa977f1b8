"""Hierarchical k-means with resampling (Vo et al. 2024, "Automatic data curation for self-supervised learning").

Level 1 clusters the embeddings into ``n_clusters[0]`` clusters; level t > 1 clusters the **centroids** of level
t - 1 into ``n_clusters[t-1]`` clusters (a level-t cluster is a set of level-(t-1) clusters). Within each level:

1. k-means (greedy k-means++, ``n_iters`` Lloyd iterations) on the whole level input;
2. ``n_resampling_steps[t-1]`` times: take ``sample_size[t-1]`` rows per cluster, the ``closest`` to the
   centroid (the paper's default) or ``random`` ones; run a fresh k-means (new k-means++) on that sample only;
   reassign the whole level input to the new centroids. Equal numbers per cluster pull the centroids towards
   an even coverage of the data instead of its dense modes.

``n_resampling_steps = 0`` is plain hierarchical k-means. (The paper's distributed script counts the first
k-means as one of its ``n_steps``; here the first run is not counted.) Every choice is seeded and made from
global row numbers, so the result does not depend on the number of processes.

Outputs (``output_dir``): ``level<t>/centroids.npy`` [K_t, D] (float32, or float64 with ``dtype=float64``),
``level<t>/assignment.npy`` [n_t] int64 (cluster of every level input row: embedding rows for level 1, level
t-1 clusters above), ``level<t>/distances.npy`` [n_t] float32 (squared distance to its centroid, for
``closest`` sampling), ``level<t>/step<s>/`` (k-means checkpoints, centroids of each step), ``rows.npy`` (the
original embedding row of every level-1 input row, when a subset was clustered) and ``kmeans.json`` (last).
Completed levels and steps are skipped on a re-run.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dinov2.curation import parallel
from dinov2.curation.arrays import Embeddings, RowSet, check_embeddings
from dinov2.curation.files import begin_step, load_npy, mark_done, save_npy, write_rows
from dinov2.curation.kmeans import assign, kmeans

logger = logging.getLogger("dinov2")

__all__ = ["STRATEGIES", "hierarchical_kmeans", "select_per_cluster", "hash_uniform"]

STRATEGIES = ("closest", "random")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def hash_uniform(seed: int, rows: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) per global row, a fixed function of (seed, row) (splitmix64)."""
    with np.errstate(over="ignore"):
        z = np.asarray(rows, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _first_per_cluster(cluster: np.ndarray, key: np.ndarray, row: np.ndarray, r: int) -> np.ndarray:
    """Positions of the first ``r`` entries of each cluster ordered by (key, row)."""
    order = np.lexsort((row, key, cluster))
    sorted_cluster = cluster[order]
    starts = np.flatnonzero(np.r_[True, sorted_cluster[1:] != sorted_cluster[:-1]])
    rank_in_cluster = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    return order[rank_in_cluster < r]


def select_per_cluster(labels: torch.Tensor, keys: np.ndarray, offset: int, n_clusters: int, r: int) -> np.ndarray:
    """Collective: sorted global rows of the ``r`` rows per cluster with the smallest (key, row).

    labels [n_local] and keys [n_local] belong to this rank's rows ``offset ..``. Each rank sends its own best
    ``r`` per cluster (padded to ``K * r`` entries), every rank merges the same candidates.
    """
    labels = labels.cpu().numpy()
    rows = offset + np.arange(len(labels), dtype=np.int64)
    mine = _first_per_cluster(labels, keys, rows, r)
    width = n_clusters * r
    cluster = np.full(width, n_clusters, dtype=np.int64)  # padding sorts after every real cluster
    key, row = np.full(width, np.inf), np.full(width, -1, dtype=np.int64)
    cluster[: len(mine)], key[: len(mine)], row[: len(mine)] = labels[mine], keys[mine], rows[mine]
    gathered = [parallel.all_gather(torch.from_numpy(a)).numpy() for a in (cluster, key, row)]
    cluster, key, row = gathered
    real = cluster < n_clusters
    chosen = _first_per_cluster(cluster[real], key[real], row[real], r)
    return np.sort(row[real][chosen])


def _level_input(level: int, source: RowSet, output_dir: Path) -> RowSet:
    if level == 1:
        return source
    previous = output_dir / f"level{level - 1}" / "centroids.npy"
    return RowSet(Embeddings(previous, f"level {level - 1} centroids"))


def _resample(x: torch.Tensor, offset: int, centroids: torch.Tensor, step: int, r: int, options: dict):
    """This rank's part of the ``r`` closest (or random) rows per cluster, in global row order."""
    labels, sqdist = assign(x, centroids, options["chunk"])
    if options["strategy"] == "closest":
        keys = sqdist.cpu().numpy()
    else:
        keys = hash_uniform(options["seed"] + 7919 * step, offset + np.arange(len(x)))
    chosen = select_per_cluster(labels, keys, offset, len(centroids), r)
    local = chosen[(chosen >= offset) & (chosen < offset + len(x))] - offset
    logger.info("resampling step %d: fresh k-means on %d points (%d per cluster at most)", step, len(chosen), r)
    return x[torch.from_numpy(local).to(x.device)]


def _run_level(
    rows: RowSet, level_dir: Path, n_clusters: int, steps: int, sample_size: int, options: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """k-means and resampling steps of one level; returns (centroids, local labels, local squared distances)."""
    x, offset = rows.load(options["dtype"], options["device"])
    if n_clusters > len(rows):
        raise ValueError(
            f"{level_dir.name}: {n_clusters} clusters requested but its input {str(rows.embeddings.path)!r} has "
            f"{len(rows)} rows; lower --n-clusters (each level needs K <= the number of clusters of the level below)"
        )
    seed = options["seed"]
    common = dict(n_iters=options["n_iters"], chunk=options["chunk"], checkpoint_every=options["checkpoint_every"])
    centroids = None
    for step in range(steps + 1):
        step_dir = level_dir / f"step{step}"
        done = step_dir / "centroids.npy"
        if done.is_file():
            centroids = torch.from_numpy(load_npy(done, "step centroids", mmap=False))
            continue
        sample = x if step == 0 else _resample(x, offset, centroids, step, sample_size, options)
        centroids = kmeans(sample, n_clusters, seed=seed + 1000 * step, checkpoint_dir=step_dir, **common).centroids
        if parallel.is_main():
            save_npy(done, centroids.numpy())
        parallel.barrier()
    labels, sqdist = assign(x, centroids, options["chunk"])
    return centroids, labels, sqdist


def _check_levels(source: RowSet, n_clusters, n_resampling_steps, sample_size, strategy: str, dtype: str) -> None:
    levels = len(n_clusters)
    if levels == 0 or len(n_resampling_steps) != levels or len(sample_size) != levels:
        raise ValueError(
            f"--n-clusters, --n-resampling-steps and --sample-size need one value per level, got {list(n_clusters)}, "
            f"{list(n_resampling_steps)}, {list(sample_size)}"
        )
    if strategy not in STRATEGIES or dtype not in _DTYPES:
        raise ValueError(f"strategy must be one of {STRATEGIES} and dtype one of {sorted(_DTYPES)}")
    if any(k < 1 for k in n_clusters) or any(s < 0 for s in n_resampling_steps) or any(r < 1 for r in sample_size):
        raise ValueError("need n_clusters >= 1, n_resampling_steps >= 0 and sample_size >= 1 at every level")
    if n_clusters[0] > len(source):
        raise ValueError(
            f"level1: {n_clusters[0]} clusters requested but {str(source.embeddings.path)!r} has {len(source)} rows "
            "(in the subset); lower --n-clusters"
        )
    if any(upper > lower for lower, upper in zip(n_clusters, n_clusters[1:])):
        raise ValueError(f"--n-clusters {list(n_clusters)}: each level needs at most the clusters of the level below")


def hierarchical_kmeans(
    source: RowSet,
    output_dir: str | Path,
    n_clusters: Sequence[int],
    n_resampling_steps: Sequence[int],
    sample_size: Sequence[int],
    *,
    n_iters: int = 50,
    strategy: str = "closest",
    seed: int = 0,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
    chunk: int | None = None,
    checkpoint_every: int = 5,
    params: dict | None = None,
) -> Path:
    """Collective: cluster ``source`` level by level (see the module docstring); returns ``output_dir``."""
    _check_levels(source, n_clusters, n_resampling_steps, sample_size, strategy, dtype)
    output_dir = Path(output_dir)
    params = dict(params or {}, n_clusters=list(n_clusters), n_resampling_steps=list(n_resampling_steps))
    params.update(sample_size=list(sample_size), n_iters=n_iters, strategy=strategy, seed=seed, dtype=dtype)
    if begin_step(output_dir, "kmeans", params):
        return output_dir
    check_embeddings(source, "--embeddings")
    if source.rows is not None and parallel.is_main():
        save_npy(output_dir / "rows.npy", source.rows)
    options = dict(dtype=_DTYPES[dtype], device=device, strategy=strategy, n_iters=n_iters, chunk=chunk)
    options["checkpoint_every"] = checkpoint_every
    objectives = []
    for level in range(1, len(n_clusters) + 1):
        level_dir = output_dir / f"level{level}"
        rows = _level_input(level, source, output_dir)
        options["seed"] = seed + 1_000_003 * level
        centroids, labels, sqdist = _run_level(
            rows, level_dir, n_clusters[level - 1], n_resampling_steps[level - 1], sample_size[level - 1], options
        )
        start, _ = rows.rank_slice()
        write_rows(level_dir / "assignment.npy", labels.cpu().numpy().astype(np.int64), start, len(rows))
        write_rows(level_dir / "distances.npy", sqdist.cpu().numpy().astype(np.float32), start, len(rows))
        total = float(parallel.all_reduce(sqdist.sum().double().reshape(1).cpu())[0])
        objectives.append(total)
        if parallel.is_main():
            save_npy(level_dir / "centroids.npy", centroids.numpy().astype(np.dtype(dtype)))
        parallel.barrier()
        logger.info(
            "level %d: %d clusters of %d points, objective %.6g", level, n_clusters[level - 1], len(rows), total
        )
    if parallel.is_main():
        mark_done(output_dir, "kmeans", params, objectives=objectives, rows=len(source))
    parallel.barrier()
    return output_dir
