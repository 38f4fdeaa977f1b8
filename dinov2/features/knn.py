"""Exact nearest-neighbour search by inner product (cosine after L2 normalisation), optionally sharded over ranks.

:func:`exact_knn` searches a database matrix held by this process; :class:`KnnIndex` keeps a database (optionally
labelled) and searches it repeatedly, either locally or sharded over the ranks of the default process group.

Sharding: every rank keeps one contiguous shard of the database (``tensor_split`` in rank order, see
:meth:`KnnIndex.from_full`). For each source rank in turn, its queries are broadcast in chunks (to bound memory);
every rank finds the top-k of that chunk within its shard; the candidates are all-gathered and merged into the
global top-k, kept by the source rank. The result equals a single-process search over the full database.

Tie-breaking (deterministic; ``torch.topk`` does not specify the order of equal values): neighbours are ranked by
(-similarity, database index), i.e. among equal similarities the lower index comes first, inside a shard and when
merging shards. The released k-NN inherits ``topk``'s arbitrary order, so on exact ties the two may pick different
neighbours; without ties they agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from dinov2 import distributed

__all__ = ["DEFAULT_MAX_BLOCK_ELEMENTS", "KnnIndex", "check_k", "exact_knn"]

# Elements of one [query chunk, database shard] similarity block when chunk_size is not given (512 MiB fp32).
DEFAULT_MAX_BLOCK_ELEMENTS = 1 << 27
_PAD_INDEX = torch.iinfo(torch.long).max


def check_k(nb_knn: int | Sequence[int], train_count: int, flag: str = "--nb_knn", name: str | None = None) -> None:
    """Refuse, before any feature is extracted, a k-NN evaluation whose largest k exceeds its train set of
    ``train_count`` images (``name``: the dataset; ``flag``: the option, or config key, that set the k's), naming
    the k's that fit."""
    ks = [nb_knn] if isinstance(nb_knn, int) else [int(k) for k in nb_knn]
    if ks and max(ks) > train_count:
        fits = [str(k) for k in ks if k <= train_count] or ["1"]
        example = f"{flag} {' '.join(fits)}" if flag.startswith("-") else f"{flag}=[{','.join(fits)}]"
        where = f" in {name!r}" if name else ""
        raise ValueError(
            f"{flag} {max(ks)} is larger than the train set ({train_count} images{where}); use k <= {train_count}, "
            f"e.g. {example}"
        )


def _sort_by_sim_then_index(sims: torch.Tensor, index: torch.Tensor, *extra: torch.Tensor):
    """Sort each row by (-sims, index). sims, index, extra: [Q, M]. Returns the permuted tensors."""
    order = torch.sort(index, dim=1, stable=True).indices  # [Q, M]
    sims, index = sims.gather(1, order), index.gather(1, order)
    extra = tuple(e.gather(1, order) for e in extra)
    order = torch.sort(sims, dim=1, descending=True, stable=True).indices  # stable keeps index order on ties
    return (sims.gather(1, order), index.gather(1, order), *(e.gather(1, order) for e in extra))


def _exact_topk(sims: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best columns per row by (-sim, column), sorted. sims: [Q, N]; returns ([Q, k], [Q, k]).

    ``topk`` returns the right values but may pick any of several columns tied at the k-th value;
    rows where that happens (detected by counting) are redone by taking the lowest tied columns.
    """
    vals, cols = sims.topk(k, dim=1, sorted=False)  # [Q, k], re-sorted below
    kth = vals.min(dim=1, keepdim=True).values  # [Q, 1] the k-th largest value
    ambiguous = (sims == kth).sum(dim=1) > (vals == kth).sum(dim=1)  # [Q]
    if ambiguous.any():
        rows = ambiguous.nonzero().squeeze(1)
        s, t = sims[rows], kth[rows]  # [R, N], [R, 1]
        above = s > t
        tied = s == t
        keep = above | (tied & (tied.cumsum(dim=1) <= k - above.sum(dim=1, keepdim=True)))
        picked = keep.nonzero()[:, 1].view(len(rows), k)  # row-major: exactly k per row
        cols[rows] = picked
        vals[rows] = s.gather(1, picked)
    return _sort_by_sim_then_index(vals, cols)


class KnnIndex:
    """A database of vectors (this rank's shard when sharded), searched for the k most similar rows of queries.

    database: [n, D] float (on a sharded index: this rank's shard; :meth:`from_full` shards a full matrix);
    labels: optional [n] int, returned for the neighbours (-1 where absent). Global index of a row = sum of the
    sizes of lower ranks' shards + local index. ``device`` holds the database and runs the search (default: where
    the database is; with NCCL it must be this rank's GPU). ``normalize``: L2-normalise database and queries
    (cosine similarity); otherwise plain inner products. ``sharded`` (default: when a process group exists) makes
    construction and :meth:`search` collective; ``sharded=False`` searches this process's database alone.
    """

    def __init__(
        self,
        database: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        device: torch.device | str | None = None,
        normalize: bool = True,
        chunk_size: int | None = None,
        sharded: bool | None = None,
    ):
        if database.ndim != 2 or (labels is not None and labels.shape != database.shape[:1]):
            labels_shape = None if labels is None else tuple(labels.shape)
            raise ValueError(
                f"the database must be [N, D] with labels [N] (or None), got {tuple(database.shape)} and {labels_shape}"
            )
        device = torch.device(device) if device is not None else database.device
        features = database.to(device)
        if normalize:
            features = F.normalize(features, dim=1, p=2)
        self.features = features  # [n_local, D]; searched as queries @ features.T without a transposed copy
        self.labels = None if labels is None else labels.to(device=device, dtype=torch.long)  # [n_local]
        self.device = device
        self.chunk_size = chunk_size
        self.normalize = normalize
        self.sharded = distributed.is_enabled() if sharded is None else bool(sharded)
        self.world, self.rank = (
            (distributed.get_global_size(), distributed.get_global_rank()) if self.sharded else (1, 0)
        )
        if self.world > 1:
            self.shard_sizes = distributed.all_gather(torch.tensor([features.shape[0]], device=device)).tolist()
        else:
            self.shard_sizes = [features.shape[0]]
        self.offset = sum(self.shard_sizes[: self.rank])
        self.num_total = sum(self.shard_sizes)

    @classmethod
    def from_full(cls, database: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> KnnIndex:
        """A sharded index keeping this rank's contiguous shard of a database that every rank holds in full."""
        world, rank = distributed.get_global_size(), distributed.get_global_rank()
        shard_labels = None if labels is None else torch.tensor_split(labels, world)[rank]
        return cls(torch.tensor_split(database, world)[rank], shard_labels, **kwargs)

    def _chunk_size(self) -> int:
        if self.chunk_size is not None:
            return max(1, int(self.chunk_size))
        return max(1, DEFAULT_MAX_BLOCK_ELEMENTS // max(1, max(self.shard_sizes)))

    def _local_search(self, queries: torch.Tensor, k: int):
        """Top-k of queries [m, D] in this shard, padded to k. Returns sims, global indices, labels [m, k]."""
        m, n_local = queries.shape[0], self.features.shape[0]
        k_local = min(k, n_local)
        sims = queries @ self.features.t()  # [m, n_local]
        vals, cols = _exact_topk(sims, k_local)
        labels = self.labels[cols] if self.labels is not None else torch.full_like(cols, -1)
        index = cols + self.offset
        if k_local < k:  # a shard smaller than k: pad with candidates that always lose the merge
            pad = k - k_local
            vals = torch.cat([vals, vals.new_full((m, pad), float("-inf"))], dim=1)
            index = torch.cat([index, index.new_full((m, pad), _PAD_INDEX)], dim=1)
            labels = torch.cat([labels, labels.new_full((m, pad), -1)], dim=1)
        return vals, index, labels

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global top-k neighbours of this rank's queries (collective when sharded: same k on every rank).

        queries: [Q_local, D] (may differ per rank, may be empty). Returns similarities [Q_local, k] (sorted, best
        first), global database indices [Q_local, k] and their labels [Q_local, k] (-1 without labels).
        """
        if k > self.num_total:
            raise ValueError(
                f"k={k} nearest neighbours requested but the database (the train set in k-NN evaluation) has only "
                f"{self.num_total} samples; lower k (--nb_knn) or add samples"
            )
        queries = queries.to(device=self.device, dtype=self.features.dtype)
        if self.normalize:
            queries = F.normalize(queries, dim=1, p=2)
        counts = [queries.shape[0]]
        if self.world > 1:
            counts = distributed.all_gather(torch.tensor(counts, device=self.device)).tolist()
        chunk, dim = self._chunk_size(), self.features.shape[1]
        outputs = []
        for src in range(self.world):
            for start in range(0, counts[src], chunk):
                m = min(chunk, counts[src] - start)
                if self.rank == src:
                    block = queries[start : start + m].contiguous()
                else:
                    block = torch.empty(m, dim, dtype=queries.dtype, device=self.device)
                if self.world > 1:
                    block = distributed.broadcast(block, src=src)
                result = self._local_search(block, k)
                if self.world > 1:
                    merged = [distributed.all_gather(t, dim=1) for t in result]  # [m, world * k] each
                    result = tuple(t[:, :k] for t in _sort_by_sim_then_index(*merged))
                if self.rank == src:
                    outputs.append(result)
        if not outputs:
            empty = torch.empty(0, k, device=self.device, dtype=self.features.dtype)
            return empty, empty.long(), empty.long()
        return tuple(torch.cat(parts) for parts in zip(*outputs))  # type: ignore[return-value]


def exact_knn(
    queries: torch.Tensor,
    database: torch.Tensor,
    k: int,
    *,
    normalize: bool = False,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    sharded: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` rows of ``database`` with the largest inner product with each query, ties to the lower index.

    queries: [Q, D]; database: [N, D] (with ``sharded=True``: this rank's contiguous shard, rank order; the call
    is then collective and indices are global). ``normalize``: cosine similarity instead of inner products.
    ``chunk_size``: queries per similarity block (default: blocks of at most 2^27 elements). Returns
    (similarities [Q, k] best first, database indices [Q, k] int64), on ``device`` (default: the database's).
    """
    index = KnnIndex(database, device=device, normalize=normalize, chunk_size=chunk_size, sharded=sharded)
    sims, indices, _ = index.search(queries, k)
    return sims, indices
