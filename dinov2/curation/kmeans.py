"""Distributed k-means: greedy k-means++ initialisation and a fixed number of Lloyd iterations.

The algorithm of Vo et al. 2024 (and scikit-learn's k-means++), reimplemented for rows split over ranks:

- **Data.** Each rank holds a contiguous slice ``x`` [n_local, D] of the rows, in rank order. Squared Euclidean
  distances ``|x|^2 - 2 x.c + |c|^2`` are computed in ``x``'s dtype in row chunks; every sum (centroid sums,
  counts, potentials) is accumulated in float64 and all-reduced.
- **k-means++ (greedy).** The first centre is a uniformly drawn row; every later centre draws
  ``2 + floor(ln K)`` candidates with probability proportional to the squared distance D^2 to the closest centre
  so far, and keeps the candidate that lowers the potential (sum of D^2) most. The random numbers come from one
  generator seeded identically on every rank; a draw finds its rank from the all-gathered per-rank sums of D^2,
  then its row inside that rank. The picks are therefore those of a single process (up to float64 rounding of
  the sums at interval boundaries).
- **Lloyd.** ``n_iters`` iterations exactly (no tolerance stop, as in the paper's code); a cluster that receives
  no row keeps its centroid.
- **Checkpoints** (``checkpoint_dir``): k-means++ progress every ``checkpoint_every`` centres and Lloyd progress
  every ``checkpoint_every`` iterations (``state.npz``, no pickle), written atomically by rank 0; a restarted run
  continues from them and ends with the same result as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dinov2.curation import parallel
from dinov2.utils.io import atomic_write

logger = logging.getLogger("dinov2")

__all__ = ["KMeansResult", "assign", "kmeans", "kmeans_plusplus", "lloyd", "objective", "squared_distances"]

BLOCK_ELEMENTS = 1 << 24  # distance-matrix elements per chunk (128 MiB in float64)


@dataclasses.dataclass
class KMeansResult:
    centroids: torch.Tensor  # [K, D] float64, on the CPU
    assignment: torch.Tensor  # [n_local] int64, cluster of each local row
    sqdist: torch.Tensor  # [n_local] float64, squared distance to its centroid
    objective: float  # sum of squared distances over every rank
    init_indices: np.ndarray  # [K] int64 global rows picked by k-means++


def _chunk_rows(n_clusters: int, chunk: int | None) -> int:
    return max(1, int(chunk) if chunk else BLOCK_ELEMENTS // max(1, n_clusters))


def squared_distances(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[n, K] squared Euclidean distances (clamped at 0) in ``x``'s dtype."""
    c = centroids.to(x.dtype)
    d2 = torch.addmm((c * c).sum(1)[None, :], x, c.t(), alpha=-2.0)
    return d2.add_((x * x).sum(1, keepdim=True)).clamp_(min=0)


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Closest centroid of every local row (ties to the lower centroid) and its squared distance (float64)."""
    rows = _chunk_rows(len(centroids), chunk)
    labels = torch.empty(len(x), dtype=torch.long, device=x.device)
    dist = torch.empty(len(x), dtype=torch.float64, device=x.device)
    centroids = centroids.to(x.device)
    for start in range(0, len(x), rows):
        d2 = squared_distances(x[start : start + rows], centroids)
        best, labels[start : start + rows] = d2.min(dim=1)
        dist[start : start + rows] = best.double()
    return labels, dist


def objective(sqdist: torch.Tensor) -> float:
    """Collective: the k-means objective (sum of squared distances) over every rank."""
    return float(parallel.all_reduce(sqdist.sum().double().reshape(1).cpu())[0])


def _offsets(n_local: int) -> tuple[int, int]:
    """(first global row of this rank, total rows) from the ranks' slice sizes."""
    sizes = parallel.all_gather(torch.tensor([n_local], dtype=torch.long))
    rank, _ = parallel.world()
    return int(sizes[:rank].sum()), int(sizes.sum())


def _fetch_rows(x: torch.Tensor, offset: int, rows: torch.Tensor) -> torch.Tensor:
    """[len(rows), D] float64 copies of global ``rows`` (each held by one rank), on every rank."""
    out = torch.zeros(len(rows), x.shape[1], dtype=torch.float64)
    mine = (rows >= offset) & (rows < offset + len(x))
    if mine.any():
        out[mine] = x[(rows[mine] - offset).to(x.device)].double().cpu()
    return parallel.all_reduce(out)


def _draw(d2: torch.Tensor, u: torch.Tensor, offset: int) -> torch.Tensor:
    """Global rows whose cumulated D^2 interval (in global row order) contains each value of ``u`` [L]."""
    rank, world_size = parallel.world()
    totals = parallel.all_gather(d2.sum().double().reshape(1).cpu())  # [W]
    ends = totals.cumsum(0)
    owner = torch.searchsorted(ends, u, right=True).clamp_(max=world_size - 1)
    positive = torch.nonzero(totals > 0).flatten()
    owner = torch.where(totals[owner] > 0, owner, positive[-1] if len(positive) else owner)  # rounding past the end
    picked = torch.full((len(u),), -1, dtype=torch.long)
    mine = owner == rank
    if mine.any():
        local_u = (u[mine] - (ends[owner[mine]] - totals[owner[mine]])).to(d2.device)
        row = torch.searchsorted(torch.cumsum(d2, 0), local_u, right=True).clamp_(max=len(d2) - 1)
        picked[mine] = row.cpu() + offset
    return parallel.all_reduce(picked, op="max")


def _save_state(path: Path | None, **arrays) -> None:
    if path is None or not parallel.is_main():
        return
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    with atomic_write(path) as f:
        f.write(buffer.getvalue())


def _load_state(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _min_sqdist(x: torch.Tensor, centres: torch.Tensor, chunk: int | None) -> torch.Tensor:
    return assign(x, centres, chunk)[1] if len(centres) else torch.full((len(x),), math.inf, dtype=torch.float64)


def kmeans_plusplus(
    x: torch.Tensor,
    n_clusters: int,
    *,
    seed: int = 0,
    n_local_trials: int | None = None,
    chunk: int | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 1000,
) -> tuple[torch.Tensor, np.ndarray]:
    """Collective greedy k-means++ over the ranks' slices ``x``: ([K, D] float64 centres, [K] global rows)."""
    offset, total = _offsets(len(x))
    if not 1 <= n_clusters <= total:
        raise ValueError(f"cannot make {n_clusters} clusters of {total} points: need 1 <= K <= number of points")
    trials = n_local_trials or 2 + int(math.log(n_clusters))
    generator = torch.Generator().manual_seed(seed)
    state = _load_state(checkpoint)
    if state is not None and int(state["phase"]) == 0:
        picked = state["indices"].tolist()
        generator.set_state(torch.from_numpy(state["rng"]))
        potential = float(state["potential"])
        centres = _fetch_rows(x, offset, torch.tensor(picked, dtype=torch.long))
        d2 = _min_sqdist(x, centres, chunk)
        logger.info("k-means++: resumed at centre %d of %d", len(picked), n_clusters)
    else:
        first = int(torch.randint(total, (1,), generator=generator))
        picked, centres = [first], _fetch_rows(x, offset, torch.tensor([first]))
        d2 = _min_sqdist(x, centres, chunk)
        potential = objective(d2)
    centres = torch.cat([centres, centres.new_zeros(n_clusters - len(centres), x.shape[1])])
    while len(picked) < n_clusters:
        u = torch.rand(trials, generator=generator, dtype=torch.float64) * potential
        candidates = _draw(d2, u, offset)
        rows = _fetch_rows(x, offset, candidates)  # [L, D]
        new_d2 = torch.minimum(d2[:, None], _pairwise(x, rows, chunk))  # [n_local, L]
        potentials = parallel.all_reduce(new_d2.sum(0).cpu())  # [L]
        best = int(torch.argmin(potentials))
        centres[len(picked)] = rows[best]
        picked.append(int(candidates[best]))
        d2, potential = new_d2[:, best].contiguous(), float(potentials[best])
        if len(picked) % checkpoint_every == 0 and len(picked) < n_clusters:
            _save_state(checkpoint, phase=0, indices=picked, rng=generator.get_state().numpy(), potential=potential)
    return centres, np.asarray(picked, dtype=np.int64)


def _pairwise(x: torch.Tensor, rows: torch.Tensor, chunk: int | None) -> torch.Tensor:
    out = torch.empty(len(x), len(rows), dtype=torch.float64, device=x.device)
    step = _chunk_rows(len(rows), chunk)
    for start in range(0, len(x), step):
        out[start : start + step] = squared_distances(x[start : start + step], rows.to(x.device)).double()
    return out


def lloyd(
    x: torch.Tensor,
    centroids: torch.Tensor,
    n_iters: int,
    *,
    chunk: int | None = None,
    start_iteration: int = 0,
    checkpoint: Path | None = None,
    checkpoint_every: int = 5,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    indices: np.ndarray | None = None,
) -> torch.Tensor:
    """Collective: ``n_iters`` Lloyd iterations from ``centroids`` [K, D]; returns float64 centroids on the CPU.

    ``callback(iteration, centroids)`` runs after each iteration (progress, tests); ``indices`` (the k-means++
    rows) are stored with the checkpoints.
    """
    centroids = centroids.double().cpu().clone()
    n_clusters, rows = len(centroids), _chunk_rows(len(centroids), chunk)
    for iteration in range(start_iteration, n_iters):
        tic = time.perf_counter()
        sums = torch.zeros(n_clusters, x.shape[1], dtype=torch.float64, device=x.device)
        counts = torch.zeros(n_clusters, dtype=torch.float64, device=x.device)
        device_centroids = centroids.to(x.device)
        for start in range(0, len(x), rows):
            block = x[start : start + rows]
            labels = squared_distances(block, device_centroids).argmin(dim=1)
            # index_put_ with accumulate: the sums of index_add_, which is hundreds of times slower on CPU
            sums.index_put_((labels,), block.double(), accumulate=True)
            counts += torch.bincount(labels, minlength=n_clusters).double()
        sums, counts = parallel.all_reduce(sums.cpu()), parallel.all_reduce(counts.cpu())
        filled = counts > 0  # an empty cluster keeps its centroid
        centroids[filled] = sums[filled] / counts[filled, None]
        logger.debug(
            "Lloyd iteration %d/%d: %.2f s, %d empty",
            iteration + 1,
            n_iters,
            time.perf_counter() - tic,
            int((~filled).sum()),
        )
        if (iteration + 1) % checkpoint_every == 0 and iteration + 1 < n_iters:
            _save_state(
                checkpoint,
                phase=1,
                iteration=iteration + 1,
                centroids=centroids.numpy(),
                indices=np.zeros(0, dtype=np.int64) if indices is None else indices,
            )
        if callback is not None:
            callback(iteration, centroids)
    return centroids


def kmeans(
    x: torch.Tensor,
    n_clusters: int,
    *,
    n_iters: int = 50,
    seed: int = 0,
    init: torch.Tensor | None = None,
    chunk: int | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 5,
    init_checkpoint_every: int = 1000,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> KMeansResult:
    """Collective k-means of the rows split over ranks (``x``: this rank's slice [n_local, D]).

    ``init`` [K, D] replaces k-means++ (e.g. the same initial centroids as another implementation). Returns the
    float64 centroids, each local row's cluster and squared distance after the last iteration, the objective
    and the k-means++ rows (empty with ``init``). Checkpoints go to ``checkpoint_dir/state.npz``.
    """
    if init is not None and len(init) != n_clusters:
        raise ValueError(f"init has {len(init)} centroids but n_clusters={n_clusters}")
    path = Path(checkpoint_dir) / "state.npz" if checkpoint_dir is not None else None
    state = _load_state(path)
    if state is not None and int(state["phase"]) == 1:
        centroids, start, picked = torch.from_numpy(state["centroids"]), int(state["iteration"]), state["indices"]
        logger.info("k-means: resumed at iteration %d of %d", start, n_iters)
    else:
        start = 0
        if init is not None:
            centroids, picked = init.double().cpu(), np.zeros(0, dtype=np.int64)
        else:
            centroids, picked = kmeans_plusplus(
                x, n_clusters, seed=seed, chunk=chunk, checkpoint=path, checkpoint_every=init_checkpoint_every
            )
        _save_state(path, phase=1, iteration=0, centroids=centroids.numpy(), indices=picked)
    centroids = lloyd(
        x,
        centroids,
        n_iters,
        chunk=chunk,
        start_iteration=start,
        checkpoint=path,
        checkpoint_every=checkpoint_every,
        callback=callback,
        indices=picked,
    )
    labels, sqdist = assign(x, centroids, chunk)
    return KMeansResult(centroids, labels, sqdist, objective(sqdist), np.asarray(picked, dtype=np.int64))
