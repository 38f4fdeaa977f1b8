"""Copy-detection deduplication (DINOv2 paper, App. A.3): k-NN graph, threshold, connected components.

**Self-deduplication** (``reference=None``): every row's ``k`` nearest rows by cosine similarity (the row itself
included, as a search of the set against itself returns it); an undirected edge for each pair with similarity
strictly above ``threshold`` (paper: k = 64, 0.6); connected components by union-find. One row per component is
kept: **the lowest row number** (deterministic, independent of the number of processes; the paper does not say
which). A group of more than ``k`` near-copies is still one component as long as its k-NN edges connect it.

**Relative deduplication** (``reference`` given; paper: threshold 0.45): the graph holds the pool rows and the
reference rows (e.g. evaluation images), with pool-pool edges, reference -> pool edges (each reference row's k
nearest pool rows) and pool -> reference edges (each pool row's k nearest reference rows). Every pool row whose
component contains a reference row is dropped; every other pool row is kept (no one-per-component here: run a
self-deduplication first, then a relative one on its ``kept_indices.npy`` with ``--subset``).

Outputs in ``output_dir``: ``kept_indices.npy`` (sorted int64 row numbers of the embedding file),
``components.npy`` (int64, one per row of the embedding file: the smallest pool row of its component, -1 for rows
outside ``--subset``), ``edges/part-<rank>-of-<world>.npy`` (``[E, 2]`` int64 node pairs per rank: pool rows are
nodes ``0..n-1`` of the view, reference rows ``n..n+m-1``) and ``dedup.json`` (parameters and counts, written
last). A rank's edge file is reused when the step is re-run with the same number of processes.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch

from dinov2.curation import parallel
from dinov2.curation.arrays import RowSet, check_embeddings, check_same_dim
from dinov2.curation.files import begin_step, load_npy, mark_done, read_json, save_npy
from dinov2.curation.knn import SearchOptions, check_k, knn_search
from dinov2.curation.unionfind import connected_components

logger = logging.getLogger("dinov2")

__all__ = ["DedupResult", "edges_above", "deduplicate"]


@dataclasses.dataclass
class DedupResult:
    kept: np.ndarray  # sorted int64 original rows
    components: np.ndarray  # int64 per original row (-1 outside the view)
    n_edges: int


def edges_above(sims: torch.Tensor, neighbours: torch.Tensor, first_query: int, threshold: float, node_offset: int = 0):
    """``[E, 2]`` int64 (query node, neighbour node) pairs with similarity > ``threshold``, self pairs dropped.

    sims, neighbours: [q, k] for queries ``first_query .. first_query + q - 1``; neighbour nodes are shifted by
    ``node_offset`` (reference rows sit after the pool rows in the graph).
    """
    queries = torch.arange(first_query, first_query + sims.shape[0], dtype=torch.long)[:, None].expand_as(neighbours)
    keep = (sims > threshold) & (neighbours >= 0)
    pairs = torch.stack([queries[keep], neighbours[keep] + node_offset], dim=1)
    return pairs[pairs[:, 0] != pairs[:, 1]].numpy()


def _local_edges(pool: RowSet, reference: RowSet | None, k: int, threshold: float, options: SearchOptions):
    """This rank's edges: its pool rows against the pool (and the reference), its reference rows against the pool."""
    n = len(pool)
    queries, start = pool.load()
    parts = [edges_above(*knn_search(pool, queries, k, options, "the pool"), start, threshold)]
    if reference is not None:
        k_ref = min(k, len(reference))
        parts.append(edges_above(*knn_search(reference, queries, k_ref, options, "--reference"), start, threshold, n))
        ref_queries, ref_start = reference.load()
        sims, found = knn_search(pool, ref_queries, k, options, "the pool")
        parts.append(edges_above(sims, found, n + ref_start, threshold))  # (reference node, pool row)
    return np.concatenate(parts).astype(np.int64)


def _edge_chunks(files: list[Path], chunk: int = 1 << 22):
    def chunks():
        for path in files:
            edges = load_npy(path, "edge file")
            for start in range(0, len(edges), chunk):
                yield np.asarray(edges[start : start + chunk])

    return chunks


def deduplicate(
    pool: RowSet,
    output_dir: str | Path,
    *,
    k: int = 64,
    threshold: float = 0.6,
    reference: RowSet | None = None,
    options: SearchOptions | None = None,
    params: dict | None = None,
) -> DedupResult:
    """Collective: self- or relative deduplication of ``pool`` (see the module docstring); writes the outputs."""
    options = options or SearchOptions()
    output_dir = Path(output_dir)
    params = dict(params or {}, k=k, threshold=threshold, relative=reference is not None)
    if not -1.0 <= threshold < 1.0:
        raise ValueError(f"--threshold must be a cosine similarity in [-1, 1), got {threshold}")
    check_k(k, pool, "--embeddings")
    if begin_step(output_dir, "dedup", params):
        return load_dedup(output_dir)
    check_embeddings(pool, "--embeddings")
    if reference is not None:
        check_same_dim(pool, reference, "--embeddings", "--reference")
        check_embeddings(reference, "--reference")
    rank, world = parallel.world()
    part = output_dir / "edges" / f"part-{rank:05d}-of-{world:05d}.npy"
    if not part.is_file():
        save_npy(part, _local_edges(pool, reference, k, threshold, options))
    parallel.barrier()
    result = None
    if parallel.is_main():
        files = [output_dir / "edges" / f"part-{r:05d}-of-{world:05d}.npy" for r in range(world)]
        result = _components(pool, reference, files)
        save_npy(output_dir / "components.npy", result.components)
        save_npy(output_dir / "kept_indices.npy", result.kept)
        counts = {"rows": len(pool), "kept": len(result.kept), "edges": result.n_edges}
        if reference is not None:
            counts["reference_rows"] = len(reference)
        mark_done(output_dir, "dedup", params, counts=counts)
        logger.info(
            "dedup: kept %d of %d rows (%d edges) in %s", len(result.kept), len(pool), result.n_edges, output_dir
        )
    parallel.barrier()
    return result if result is not None else load_dedup(output_dir)


def _components(pool: RowSet, reference: RowSet | None, files: list[Path]) -> DedupResult:
    n, m = len(pool), 0 if reference is None else len(reference)
    chunks = _edge_chunks(files)
    n_edges = sum(len(c) for c in chunks())
    labels = connected_components(n + m, chunks)
    pool_labels = labels[:n]  # smallest pool position of each component (pool nodes come first)
    if reference is None:
        kept_positions = np.flatnonzero(pool_labels == np.arange(n))
    else:
        touched = np.unique(labels[n:])
        kept_positions = np.flatnonzero(~np.isin(pool_labels, touched))
    components = np.full(len(pool.embeddings), -1, dtype=np.int64)
    components[pool.original(np.arange(n))] = pool.original(pool_labels)
    return DedupResult(pool.original(kept_positions), components, n_edges)


def load_dedup(output_dir: str | Path) -> DedupResult:
    """The outputs of a complete dedup step."""
    output_dir = Path(output_dir)
    kept = load_npy(output_dir / "kept_indices.npy", "dedup output", mmap=False)
    components = load_npy(output_dir / "components.npy", "dedup output")
    counts = read_json(output_dir / "dedup.json", "dedup output")["counts"]
    return DedupResult(kept, components, int(counts["edges"]))
