"""Sharded exact nearest-neighbour search for the k-NN protocol (see :mod:`dinov2.eval.knn`).

Sharding: every rank keeps one contiguous shard of the train set (``tensor_split`` in rank order).
For each source rank in turn, its queries are broadcast (in chunks, to bound memory); every rank
finds the top-k of that chunk within its shard; the candidates are all-gathered and merged into the
global top-k, kept by the source rank. The result equals a single-process search over the full set.

Tie-breaking (deterministic; ``torch.topk`` does not specify the order of equal values): neighbours
are ranked by (-similarity, train index), i.e. among equal similarities the lower train index comes
first, both inside a shard and when merging shards. The released code inherits ``topk``'s arbitrary
order, so on exact ties the two may pick different neighbours; without ties they agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dinov2 import distributed

__all__ = ["DEFAULT_MAX_BLOCK_ELEMENTS", "KnnIndex"]

# Elements of one [query chunk, train shard] similarity block when chunk_size is not given (512 MiB fp32).
DEFAULT_MAX_BLOCK_ELEMENTS = 1 << 27
_PAD_INDEX = torch.iinfo(torch.long).max


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
    """This rank's shard of the train set, searched together with the other ranks' shards.

    train_features: [n_local, D] this rank's shard (use :meth:`from_full` to shard a full set);
    train_labels: [n_local] int. Shards are numbered in rank order: global index = sum of the sizes
    of lower ranks' shards + local index. ``device`` holds the shard and runs the search (default:
    where the features are); with NCCL it must be this rank's GPU.
    """

    def __init__(
        self,
        train_features: torch.Tensor,
        train_labels: torch.Tensor,
        *,
        device: torch.device | str | None = None,
        normalize: bool = True,
        chunk_size: int | None = None,
    ):
        if train_features.ndim != 2 or train_labels.shape != train_features.shape[:1]:
            raise ValueError(
                f"train features must be [N, D] with labels [N], got {tuple(train_features.shape)} "
                f"and {tuple(train_labels.shape)}"
            )
        device = torch.device(device) if device is not None else train_features.device
        features = train_features.to(device)
        if normalize:
            features = F.normalize(features, dim=1, p=2)
        self.features = features  # [n_local, D]; searched as queries @ features.T without a transposed copy
        self.labels = train_labels.to(device=device, dtype=torch.long)  # [n_local]
        self.device = device
        self.chunk_size = chunk_size
        self.normalize = normalize
        sizes = distributed.all_gather(torch.tensor([features.shape[0]], device=device))  # [world]
        rank = distributed.get_global_rank()
        self.shard_sizes = sizes.tolist()
        self.offset = sum(self.shard_sizes[:rank])
        self.num_total = sum(self.shard_sizes)

    @classmethod
    def from_full(cls, train_features: torch.Tensor, train_labels: torch.Tensor, **kwargs) -> KnnIndex:
        """Keep this rank's contiguous shard of a train set that every rank holds in full."""
        world, rank = distributed.get_global_size(), distributed.get_global_rank()
        features = torch.tensor_split(train_features, world)[rank]
        labels = torch.tensor_split(train_labels, world)[rank]
        return cls(features, labels, **kwargs)

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
        index, labels = cols + self.offset, self.labels[cols]
        if k_local < k:  # a shard smaller than k: pad with candidates that always lose the merge
            pad = k - k_local
            vals = torch.cat([vals, vals.new_full((m, pad), float("-inf"))], dim=1)
            index = torch.cat([index, index.new_full((m, pad), _PAD_INDEX)], dim=1)
            labels = torch.cat([labels, labels.new_full((m, pad), -1)], dim=1)
        return vals, index, labels

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global top-k neighbours of this rank's queries (collective: every rank must call it with the same k).

        queries: [Q_local, D] (may differ per rank, may be empty). Returns similarities [Q_local, k]
        (sorted, best first), global train indices [Q_local, k] and their labels [Q_local, k].
        """
        if k > self.num_total:
            raise ValueError(
                f"k={k} nearest neighbours requested but the train set has only {self.num_total} samples; "
                "lower --nb_knn (or use more samples per class)"
            )
        queries = queries.to(device=self.device, dtype=self.features.dtype)
        if self.normalize:
            queries = F.normalize(queries, dim=1, p=2)
        world, rank = distributed.get_global_size(), distributed.get_global_rank()
        counts = distributed.all_gather(torch.tensor([queries.shape[0]], device=self.device)).tolist()
        chunk, dim = self._chunk_size(), self.features.shape[1]
        outputs = []
        for src in range(world):
            for start in range(0, counts[src], chunk):
                m = min(chunk, counts[src] - start)
                if rank == src:
                    block = queries[start : start + m].contiguous()
                else:
                    block = torch.empty(m, dim, dtype=queries.dtype, device=self.device)
                block = distributed.broadcast(block, src=src)
                result = self._local_search(block, k)
                if world > 1:
                    merged = [distributed.all_gather(t, dim=1) for t in result]  # [m, world * k] each
                    result = tuple(t[:, :k] for t in _sort_by_sim_then_index(*merged))
                if rank == src:
                    outputs.append(result)
        if not outputs:
            empty = torch.empty(0, k, device=self.device)
            return empty, empty.long(), empty.long()
        return tuple(torch.cat(parts) for parts in zip(*outputs))  # type: ignore[return-value]
