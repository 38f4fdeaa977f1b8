"""Hierarchical balanced sampling from a hierarchical k-means (Vo et al. 2024), seeded.

**Water-filling** (:func:`water_fill`): a budget ``T`` is split between clusters of sizes ``s_i`` max-min fairly:
every cluster gets ``min(s_i, c)`` with the largest cap ``c`` such that the total is at most ``T``; the
remainder (fewer than the clusters above the cap) goes one by one to randomly chosen clusters above the cap.
So an allocation never exceeds its cluster's size, sums to ``T`` (or to the total when ``T`` exceeds it), and
a cluster that is not full gets ``c`` or ``c + 1``: no cluster could get more without taking from a smaller one.

**Top-down** (:func:`hierarchical_sample`): the target is water-filled over the top-level clusters, then each
cluster's share over its children, down to level 1. Sizes are counted in original points times ``multiplier``
(the most times one point may be taken). A level-1 cluster with allocation ``a`` and ``s`` points takes every
point ``a // s`` times, then ``a % s`` more points: random ones (``random``, the paper's final choice) or the
closest to the centroid (``closest``). Output: int64 row numbers of the embedding file, sorted, repeated when
``multiplier > 1``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dinov2.curation.files import load_npy, read_json

logger = logging.getLogger("dinov2")

__all__ = ["Clustering", "load_clustering", "water_fill", "hierarchical_sample", "SAMPLING_STRATEGIES"]

SAMPLING_STRATEGIES = ("random", "closest")


def water_fill(sizes: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Max-min fair split of ``target`` over clusters of ``sizes`` (int64 [k]); see the module docstring."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if target < 0 or (sizes < 0).any():
        raise ValueError(f"water-filling needs target >= 0 and sizes >= 0, got {target} and min {sizes.min()}")
    if sizes.sum() <= target:
        return sizes.copy()
    ordered = np.sort(sizes)
    k = len(ordered)
    before = np.concatenate([[0], np.cumsum(ordered)[:-1]])  # sum of the j smallest sizes
    caps = (target - before) // (k - np.arange(k))  # the cap if clusters j.. were all above it
    cap = caps[int(np.argmax(ordered > caps))]  # first j whose size exceeds its cap
    allocation = np.minimum(sizes, cap)
    remainder = int(target - allocation.sum())
    if remainder:
        allocation[rng.choice(np.flatnonzero(sizes > cap), size=remainder, replace=False)] += 1
    return allocation


@dataclass
class Clustering:
    """Levels of a hierarchical k-means: ``assignments[t]`` maps the inputs of level t+1 to its clusters."""

    path: Path
    assignments: list[np.ndarray]
    n_clusters: list[int]
    distances: np.ndarray  # level-1 squared distances, per level-1 input row
    rows: np.ndarray | None  # original embedding row of each level-1 input row (None: identity)

    def flat_sizes(self) -> list[np.ndarray]:
        """Number of original points in every cluster of every level."""
        sizes = [np.bincount(self.assignments[0], minlength=self.n_clusters[0]).astype(np.int64)]
        for assignment, k in zip(self.assignments[1:], self.n_clusters[1:]):
            sizes.append(np.bincount(assignment, weights=sizes[-1], minlength=k).astype(np.int64))
        return sizes


def load_clustering(path: str | Path) -> Clustering:
    """Read a complete ``kmeans`` output folder; errors name a missing level or file and the fix."""
    path = Path(path)
    record = path / "kmeans.json"
    if not record.is_file():
        raise FileNotFoundError(
            f"--clustering {str(path)!r} has no kmeans.json: the k-means is incomplete or this is not a kmeans output "
            "folder; re-run the same kmeans command (it resumes) or pass the folder given to kmeans --output-dir"
        )
    n_clusters = list(read_json(record, "--clustering")["params"]["n_clusters"])
    assignments = []
    for level, k in enumerate(n_clusters, start=1):
        file = path / f"level{level}" / "assignment.npy"
        if not file.is_file():
            raise FileNotFoundError(
                f"--clustering {str(path)!r}: level {level} of {len(n_clusters)} is missing ({file}); re-run the "
                "kmeans command that made it (completed levels are kept)"
            )
        assignment = load_npy(file, f"level {level} assignment", mmap=False).astype(np.int64)
        expected = n_clusters[level - 2] if level > 1 else None
        if (expected is not None and len(assignment) != expected) or assignment.min() < 0 or assignment.max() >= k:
            raise ValueError(f"{file} does not fit level {level} ({k} clusters over the level below); re-run kmeans")
        assignments.append(assignment)
    distances = load_npy(path / "level1" / "distances.npy", "level 1 distances", mmap=False)
    rows_file = path / "rows.npy"
    rows = load_npy(rows_file, "clustered rows", mmap=False).astype(np.int64) if rows_file.is_file() else None
    return Clustering(path, assignments, n_clusters, distances, rows)


def clustered_embeddings(clustering_dir: str | Path) -> Path:
    """The embeddings (``.npy`` or ``embed`` folder) a ``kmeans`` output folder clustered, from its ``kmeans.json``
    (a relative path is taken from the working directory, as ``kmeans`` was given it)."""
    record = Path(clustering_dir) / "kmeans.json"
    embeddings = read_json(record, "--clustering").get("params", {}).get("embeddings")
    if not embeddings or not Path(embeddings).exists():
        raise FileNotFoundError(
            f"--clustering {str(clustering_dir)!r}: the embeddings it clustered ({embeddings!r}, from {record}) are "
            "not found; they tell which images the rows are: run from the folder kmeans was run in (relative "
            "paths) or put the embeddings back"
        )
    return Path(embeddings)


def _group(assignment: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """(members sorted by cluster, start offsets [K + 1]) of an assignment."""
    order = np.argsort(assignment, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(assignment, minlength=n_clusters))])
    return order, starts


def _allocate(clustering: Clustering, target: int, multiplier: int, rng: np.random.Generator) -> np.ndarray:
    """Allocation of every level-1 cluster, water-filled top-down."""
    sizes = clustering.flat_sizes()
    allocation = water_fill(sizes[-1] * multiplier, target, rng)
    for level in range(len(sizes) - 1, 0, -1):  # index of the level whose clusters are split
        members, starts = _group(clustering.assignments[level], clustering.n_clusters[level])
        below = np.zeros(clustering.n_clusters[level - 1], dtype=np.int64)
        for cluster in np.flatnonzero(allocation):
            children = members[starts[cluster] : starts[cluster + 1]]
            below[children] = water_fill(sizes[level - 1][children] * multiplier, int(allocation[cluster]), rng)
        allocation = below
    return allocation


def hierarchical_sample(
    clustering: Clustering | str | Path,
    target_size: int,
    *,
    multiplier: int = 1,
    strategy: str = "random",
    seed: int = 0,
) -> np.ndarray:
    """Balanced sample of ``target_size`` original rows (sorted int64; see the module docstring)."""
    if strategy not in SAMPLING_STRATEGIES:
        raise ValueError(f"--strategy must be one of {', '.join(SAMPLING_STRATEGIES)}, got {strategy!r}")
    if target_size < 0 or multiplier < 1:
        raise ValueError(f"need --target-size >= 0 and --multiplier >= 1, got {target_size} and {multiplier}")
    if not isinstance(clustering, Clustering):
        clustering = load_clustering(clustering)
    rng = np.random.default_rng(seed)
    allocation = _allocate(clustering, target_size, multiplier, rng)  # [K1]
    labels = clustering.assignments[0]
    n = len(labels)
    key = rng.random(n) if strategy == "random" else clustering.distances.astype(np.float64)
    order = np.lexsort((np.arange(n), key, labels))  # by cluster, then key, then row
    sizes = np.bincount(labels, minlength=len(allocation))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sorted_labels = labels[order]
    position = np.arange(n) - starts[sorted_labels]  # rank of each point inside its cluster
    whole, extra = np.divmod(allocation, np.maximum(sizes, 1))
    copies = whole[sorted_labels] + (position < extra[sorted_labels])
    picked = np.repeat(order, copies)
    if clustering.rows is not None:
        picked = clustering.rows[picked]
    if len(picked) < target_size:
        logger.warning(
            "sampling: only %d points available (%d points x multiplier %d) for a target of %d",
            len(picked),
            n,
            multiplier,
            target_size,
        )
    return np.sort(picked)
