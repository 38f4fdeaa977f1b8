"""Process-group helpers and collectives that are no-ops on a single process.

Every collective in the library goes through this module, so layers, losses and evaluation code run
unchanged with or without ``torch.distributed`` initialised. The helper names follow the released
``dinov2.distributed`` module. Process-group set-up (``enable``/``disable``) lives in
:mod:`dinov2.distributed.env`; FSDP sharding, EMA and clipping on sharded parameters in
:mod:`dinov2.distributed.sharding`.

The helpers work on the default group (every process of the job), or, inside
``dinov2.distributed.subgroups.scope(group)``, on that subgroup: ranks, sizes and collectives are then those of
the subgroup (multi-student distillation runs each student's training in its subgroup this way).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from dinov2.distributed.env import (
    DistributedEnvironment,
    MainProcessFilter,
    detect_environment,
    disable,
    enable,
    restrict_logging_to_main_process,
)
from dinov2.distributed.subgroups import current_group

__all__ = [
    "enable",
    "disable",
    "detect_environment",
    "DistributedEnvironment",
    "MainProcessFilter",
    "restrict_logging_to_main_process",
    "is_enabled",
    "get_global_rank",
    "get_global_size",
    "get_local_rank",
    "get_local_size",
    "is_main_process",
    "all_reduce",
    "all_gather",
    "all_gather_with_grad",
    "broadcast",
    "broadcast_object",
    "all_gather_object",
    "barrier",
    "CompletedWork",
    "current_group",
]


def is_enabled() -> bool:
    """True when a default process group exists (torchrun, SLURM or a test's gloo group)."""
    return dist.is_available() and dist.is_initialized()


def get_global_size() -> int:
    """Number of processes in the default group, or in the current subgroup scope (1 without a group)."""
    return dist.get_world_size(current_group()) if is_enabled() else 1


def get_global_rank() -> int:
    """Rank of this process in the default group, or in the current subgroup scope (0 without a group)."""
    return dist.get_rank(current_group()) if is_enabled() else 0


def get_local_rank() -> int:
    """Rank of this process on its node (0 without a process group)."""
    if not is_enabled():
        return 0
    return int(os.environ.get("LOCAL_RANK", get_global_rank()))


def get_local_size() -> int:
    """Number of processes on this node (1 without a process group)."""
    if not is_enabled():
        return 1
    return int(os.environ.get("LOCAL_WORLD_SIZE", get_global_size()))


def is_main_process() -> bool:
    """True on rank 0 of the default group or of the current subgroup scope (and on a single process)."""
    return get_global_rank() == 0


class CompletedWork:
    """Stand-in for a ``torch.distributed.Work`` handle when there is nothing to wait for."""

    def wait(self) -> bool:
        return True

    def is_completed(self) -> bool:
        return True


_REDUCE_OPS = {
    "sum": dist.ReduceOp.SUM,
    "max": dist.ReduceOp.MAX,
    "min": dist.ReduceOp.MIN,
}


def all_reduce(tensor: torch.Tensor, op: str = "sum", async_op: bool = False):
    """In-place all-reduce of ``tensor`` over the default group (or the scope's subgroup); a no-op on one process.

    Returns a handle with ``wait()`` when ``async_op`` is true (a :class:`CompletedWork` without a
    process group or with world size 1), else None.
    """
    if op not in _REDUCE_OPS:
        raise ValueError(f"all_reduce op must be one of {sorted(_REDUCE_OPS)}, got {op!r}")
    if get_global_size() == 1:
        return CompletedWork() if async_op else None
    work = dist.all_reduce(tensor, op=_REDUCE_OPS[op], group=current_group(), async_op=async_op)
    return work if async_op else None


def all_gather(tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along ``dim`` (rank order); returns ``tensor`` on one process.

    Tensors must have the same shape on every rank. The result carries no gradient.
    """
    world = get_global_size()
    if world == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor.contiguous(), group=current_group())
    return torch.cat(parts, dim=dim)


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` ``[n, ...]`` from every rank along dim 0 (rank order), differentiably: the gradient
    of each part flows back to the rank that sent it. Returns ``tensor`` on one process."""
    if get_global_size() == 1:
        return tensor
    # torch's functional collective (backward: a reduce-scatter of the gradients); torch >= 2.14 names it
    # all_gather_single_autograd, earlier releases all_gather_tensor_autograd. torch.distributed.nn.functional's
    # all_gather computes the same but is deprecated (a FutureWarning on every call).
    from torch.distributed import _functional_collectives as collectives

    gather = getattr(collectives, "all_gather_single_autograd", None) or collectives.all_gather_tensor_autograd
    return gather(tensor.contiguous(), gather_dim=0, group=current_group() or dist.group.WORLD)


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Broadcast ``tensor`` in place from rank ``src`` (of the current group); a no-op on one process."""
    if get_global_size() > 1:
        group = current_group()
        dist.broadcast(tensor, src=src if group is None else dist.get_global_rank(group, src), group=group)
    return tensor


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s (of the current group) picklable ``obj`` on every rank (``obj`` itself on one process)."""
    if get_global_size() == 1:
        return obj
    holder = [obj]
    group = current_group()
    dist.broadcast_object_list(holder, src=src if group is None else dist.get_global_rank(group, src), group=group)
    return holder[0]


def all_gather_object(obj) -> list:
    """Every rank's (of the current group) picklable ``obj``, in rank order (``[obj]`` on one process)."""
    if get_global_size() == 1:
        return [obj]
    out: list = [None] * get_global_size()
    dist.all_gather_object(out, obj, group=current_group())
    return out


def barrier() -> None:
    """Synchronise all processes; a no-op on one process."""
    if get_global_size() > 1:
        dist.barrier(group=current_group())
