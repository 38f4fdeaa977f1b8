"""Exponential moving averages of parameters: the DINOv2 teacher (and a distilled student's spare EMA).

``ema_update(targets, sources, m)`` computes ``target = m * target + (1 - m) * source`` in place, in one pair of
``torch._foreach`` calls over all parameters. Parameters may be FSDP2 ``DTensor`` s: the update then touches only
the local shards (no communication when both sides are sharded alike), so the same function serves one process,
torchrun and SLURM.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["ema_update"]


def _local(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _matching_local(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The part of ``source`` that ``target`` holds locally (no communication when sharded alike)."""
    from torch.distributed.tensor import DTensor, Shard

    is_dt_s, is_dt_t = isinstance(source, DTensor), isinstance(target, DTensor)
    if not is_dt_s and not is_dt_t:
        return source
    if is_dt_s != is_dt_t:
        raise RuntimeError(
            "EMA between a sharded and an unsharded parameter: shard the EMA copy like the model it follows "
            "(the same compute_precision sharding_strategy for both)"
        )
    if source.device_mesh == target.device_mesh and source.placements == target.placements:
        return source.to_local()
    # Different strategies on the two sides (slow path): gather, then slice like the target.
    full = source.full_tensor()
    coordinate = target.device_mesh.get_coordinate()
    for mesh_dim, placement in enumerate(target.placements):
        if isinstance(placement, Shard):
            size = target.device_mesh.size(mesh_dim)
            chunks = torch.chunk(full, size, dim=placement.dim)
            index = coordinate[mesh_dim]
            full = chunks[index] if index < len(chunks) else full.narrow(placement.dim, 0, 0)
    return full


@torch.no_grad()
def ema_update(teacher_params: Iterable[torch.Tensor], student_params: Iterable[torch.Tensor], momentum: float) -> None:
    """``teacher = momentum * teacher + (1 - momentum) * student`` in place, on local shards.

    Both iterables must list matching parameters in the same order (e.g. ``teacher.parameters()`` and
    ``student.parameters()`` of the same architecture). With identical sharding this touches only local shards.
    """
    teacher_local, student_local = [], []
    teacher_params, student_params = list(teacher_params), list(student_params)
    if len(teacher_params) != len(student_params):
        raise ValueError(
            f"EMA needs as many teacher as student parameters: {len(teacher_params)} vs {len(student_params)}"
        )
    for teacher, student in zip(teacher_params, student_params):
        if teacher.shape != student.shape:
            raise ValueError(
                f"EMA parameter shapes differ: teacher {tuple(teacher.shape)}, student {tuple(student.shape)}"
            )
        teacher_local.append(_local(teacher))
        student_local.append(_matching_local(student, teacher).to(teacher_local[-1].dtype))
    if teacher_local:
        torch._foreach_mul_(teacher_local, momentum)
        torch._foreach_add_(teacher_local, student_local, alpha=1.0 - momentum)
