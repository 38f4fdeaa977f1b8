"""Process subgroups: several models trained side by side in one job, each on its own range of ranks.

Multi-student distillation (DINOv3's ``multidistillation``) runs one student per half-open rank range
``[first, last)``. Every rank of the job computes the frozen teacher on its own share of the global batch; each
student then trains on the whole global batch within its subgroup. Three pieces make that work:

- :func:`new_subgroups` creates one process group per range (a collective: every rank calls it with the same
  ranges) and returns this rank's :class:`ProcessSubgroup`;
- :func:`scope` makes a subgroup the group of the :mod:`dinov2.distributed` helpers (``all_reduce``,
  ``get_global_rank``, ``is_main_process``, ``barrier`` ...), so that Sinkhorn-Knopp, loss averaging, logging,
  checkpoints and exports run per student unchanged. Code that must span the whole job uses
  :func:`whole_job` (the data stream) or ``torch.distributed`` with the default group (the teacher);
- :func:`broadcast_to_subgroups` gathers a per-rank tensor over the whole job and hands each rank its part of
  the global batch within its subgroup (DINOv3's name).

Without a process group everything degenerates to one process: one subgroup ``(0,)`` and no communication.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import torch
import torch.distributed as dist

__all__ = [
    "ProcessSubgroup",
    "broadcast_to_subgroups",
    "check_rank_ranges",
    "current_group",
    "current_subgroup",
    "new_subgroups",
    "scope",
    "whole_job",
    "world_rank",
    "world_size",
]

# The group the dinov2.distributed helpers use (None: the default group). A context variable rather than a
# module global: it is set and reset by `scope` only, and a value set in one context does not leak into another.
_GROUP: ContextVar[dist.ProcessGroup | None] = ContextVar("dinov2_process_group", default=None)


def _enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes of the whole job (the default group), whatever the current scope (1 without one)."""
    return dist.get_world_size() if _enabled() else 1


def world_rank() -> int:
    """Rank in the whole job (the default group), whatever the current scope (0 without one)."""
    return dist.get_rank() if _enabled() else 0


def current_group() -> dist.ProcessGroup | None:
    """The group of the :mod:`dinov2.distributed` helpers: a subgroup inside :func:`scope`, else None (all)."""
    return _GROUP.get()


@contextlib.contextmanager
def scope(group: dist.ProcessGroup | None) -> Iterator[None]:
    """Within this block the :mod:`dinov2.distributed` helpers work on ``group`` (None: the whole job)."""
    token = _GROUP.set(group)
    try:
        yield
    finally:
        _GROUP.reset(token)


def whole_job():
    """A block in which the :mod:`dinov2.distributed` helpers span every process again (e.g. data sharding)."""
    return scope(None)


def check_rank_ranges(ranges: Sequence[Sequence[int]], n_ranks: int, key: str = "ranks_range") -> list[range]:
    """Validate half-open ``[first, last)`` ranges: integers, non-empty, disjoint, together exactly ``[0, n_ranks)``.

    Returns them as ``range`` objects; raises ``ValueError`` naming ``key`` and the offending values.
    """
    out = []
    for i, value in enumerate(ranges):
        if (
            len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not 0 <= value[0] < value[1]
        ):
            raise ValueError(f"{key} #{i} is {list(value)}: expected [first, last) with 0 <= first < last")
        out.append(range(value[0], value[1]))
    covered = sorted(r for rng in out for r in rng)
    if covered != list(range(n_ranks)):
        listing = [[rng.start, rng.stop] for rng in out]
        raise ValueError(
            f"{key} values {listing} must be disjoint and cover the {n_ranks} processes of the job exactly "
            f"([0, {n_ranks})): adjust the ranges or launch {len(covered)} processes"
        )
    return out


@dataclasses.dataclass(frozen=True)
class ProcessSubgroup:
    """This rank's subgroup: which range holds it, its ranks and the process group (None without one)."""

    index: int
    ranks: tuple[int, ...]
    group: dist.ProcessGroup | None

    @property
    def size(self) -> int:
        return len(self.ranks)

    @property
    def rank(self) -> int:
        """Rank within the subgroup."""
        return self.ranks.index(world_rank())


def new_subgroups(ranges: Sequence[Sequence[int]]) -> ProcessSubgroup:
    """Create one process group per ``[first, last)`` range and return this rank's (collective on every rank).

    The ranges must cover the job's processes exactly (:func:`check_rank_ranges`). Without a process group the
    only valid ranges are ``[[0, 1]]`` and no group is created.
    """
    checked = check_rank_ranges(ranges, world_size())
    rank = world_rank()
    index = next(i for i, rng in enumerate(checked) if rank in rng)
    group = None
    if _enabled():
        for i, rng in enumerate(checked):  # every rank creates every group, in the same order
            created = dist.new_group(list(rng))
            if i == index:
                group = created
    return ProcessSubgroup(index=index, ranks=tuple(checked[index]), group=group)


def broadcast_to_subgroups(tensor: torch.Tensor, dim: int, total: int, subgroup: ProcessSubgroup) -> torch.Tensor:
    """Gather ``tensor`` from every process of the job along ``dim`` (rank order), keep the first ``total``
    entries (the global batch), split them into ``subgroup.size`` equal chunks and return chunk ``subgroup.rank``.

    Every rank must pass a tensor of the same shape. ``total`` must be divisible by the subgroup size. The result
    is a new tensor without gradient. On one process it is ``tensor.narrow(dim, 0, total)``.
    """
    if total % subgroup.size:
        raise ValueError(f"global batch of {total} is not divisible by the subgroup size {subgroup.size}")
    if world_size() > 1:
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())  # default group: the whole job, whatever the scope
        tensor = torch.cat(parts, dim=dim)
    if tensor.shape[dim] < total:
        raise ValueError(f"gathered {tensor.shape[dim]} entries along dim {dim}, fewer than the global batch {total}")
    chunk = total // subgroup.size
    return tensor.narrow(dim, subgroup.rank * chunk, chunk).clone()


def current_subgroup(index: int = 0) -> ProcessSubgroup:
    """The subgroup of the current :func:`scope` as a :class:`ProcessSubgroup` (outside a scope: the whole job);
    ``index`` is recorded as its position among the job's subgroups."""
    group = current_group()
    ranks = tuple(dist.get_process_group_ranks(group)) if group is not None else tuple(range(world_size()))
    return ProcessSubgroup(index=index, ranks=ranks, group=group)
