"""Rank slices and collectives for the curation steps (thin layer over :mod:`dinov2.distributed`).

Every multi-process step splits its rows into contiguous rank slices (:func:`rank_bounds`), computes on its
slice and combines per-rank sums with :func:`all_reduce`. The helpers are no-ops on one process. With NCCL the
collectives need CUDA tensors: they are moved to this rank's GPU and back, so callers may compute on the CPU.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from dinov2 import distributed

__all__ = ["rank_bounds", "world", "all_reduce", "all_gather", "barrier", "is_main"]


def world() -> tuple[int, int]:
    """(rank, world size) of this process (0, 1 without a process group)."""
    return distributed.get_global_rank(), distributed.get_global_size()


def is_main() -> bool:
    return distributed.is_main_process()


def rank_bounds(n: int, rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Rows ``[start, stop)`` of rank ``rank`` among ``world_size`` contiguous slices of ``n`` rows.

    Slice sizes differ by at most one (``floor(n * r / W)`` boundaries); every rank's slice may be empty.
    """
    if rank is None or world_size is None:
        rank, world_size = world()
    return n * rank // world_size, n * (rank + 1) // world_size


def _comm_device() -> torch.device | None:
    if distributed.is_enabled() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return None


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """All-reduce ``tensor`` (returns the reduced tensor on the input's device; in place when possible)."""
    if distributed.get_global_size() == 1:
        return tensor
    device = _comm_device()
    if device is None or tensor.device == device:
        distributed.all_reduce(tensor, op=op)
        return tensor
    moved = tensor.to(device)
    distributed.all_reduce(moved, op=op)
    tensor.copy_(moved)
    return tensor


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped ``tensor`` of every rank along dim 0 (rank order), on the input's device."""
    if distributed.get_global_size() == 1:
        return tensor
    device = _comm_device()
    if device is None or tensor.device == device:
        return distributed.all_gather(tensor)
    return distributed.all_gather(tensor.to(device)).to(tensor.device)


def barrier() -> None:
    distributed.barrier()
