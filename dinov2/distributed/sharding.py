"""FSDP2 sharding of the student and teacher, and gradient clipping on sharded parameters.

One function, :func:`shard_model`, wraps the model from outside (the model code knows nothing of
FSDP), in a fixed order for every sub-module X of ``student`` and ``teacher``
(``backbone``, ``dino_head``, ``ibot_head``), configured by ``compute_precision.<role>.<X>``:

1. move X to the training device (and, optionally, broadcast rank 0's weights and buffers);
2. cast floating buffers to ``buffer_dtype`` (FSDP2 leaves buffers alone, see below);
3. ``fully_shard`` each element of ``X.blocks`` (a block, or a block chunk when ``block_chunks > 0``),
   so that only one block's full weights are alive at a time;
4. ``fully_shard`` X itself (patch embedding, tokens, final norm, head layers).

Mapping of the released FSDP1 settings onto FSDP2 (``torch.distributed.fsdp.fully_shard``, public
since torch 2.6):

================ =====================================================================
FSDP1            FSDP2 here
================ =====================================================================
FULL_SHARD       1-D mesh over all ranks, ``reshard_after_forward=True``
SHARD_GRAD_OP    1-D mesh over all ranks, ``reshard_after_forward=False`` (student); the
                 teacher never runs backward, so it always reshards after forward (else
                 its parameters would stay gathered, and stale once the EMA updates them)
NO_SHARD         2-D mesh ``(replicate=world, shard=1)``: HSDP with shard groups of one
                 rank, i.e. every rank keeps full parameters and gradients are all-reduced
param_dtype      ``MixedPrecisionPolicy.param_dtype`` (compute dtype of the gathered weights)
reduce_dtype     ``MixedPrecisionPolicy.reduce_dtype`` (dtype of the gradient reduction)
buffer_dtype     no FSDP2 equivalent: floating buffers are cast once, when sharding
================ =====================================================================

Every parameter is then a ``DTensor`` whether sharded or not, so the EMA (``dinov2/train/ema.py``),
clipping, the gradient scaler and ``torch.distributed.checkpoint`` follow one code path. Sharded gradients are averaged
over ranks (each rank's loss must be the mean over its part of the global batch).

Gradient scaler: FSDP2 keeps gradients in the parameters' dtype (fp32), and
``torch.amp.GradScaler`` accepts DTensor gradients and all-reduces its inf/NaN flag across the
mesh (pytorch#132816, torch >= 2.5): use it as is; FSDP1's ``ShardedGradScaler`` is not needed.

Torch versions: ``fully_shard``, ``MixedPrecisionPolicy`` and DTensor-aware ``clip_grad_norm_`` /
``GradScaler`` are public in torch 2.6, which is enough on CUDA/NCCL. On CPU/gloo, FSDP2 reduces fp32
gradients with ``ReduceOp.AVG``, which gloo supports from torch 2.7 (pytorch#149781) and which
averaged wrongly in some releases (pytorch#162338); where ``set_force_sum_reduction_for_comms``
exists (public, torch >= 2.8) gloo meshes therefore reduce with SUM and FSDP divides. Tested here on
torch 2.15 (CPU, gloo).

Without a process group (one process) nothing is wrapped: modules are moved to the device and stay
in fp32; use ``torch.autocast`` for mixed precision there.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dinov2.utils.dtype import parse_dtype

logger = logging.getLogger("dinov2")

SHARDING_STRATEGIES = ("SHARD_GRAD_OP", "FULL_SHARD", "NO_SHARD")  # the released default first
ROLES = ("student", "teacher")


@dataclasses.dataclass(frozen=True)
class ShardingPolicy:
    """Sharding strategy and mixed-precision dtypes of one sub-module (one config section)."""

    sharding_strategy: str = "SHARD_GRAD_OP"
    param_dtype: torch.dtype = torch.float32
    reduce_dtype: torch.dtype = torch.float32
    buffer_dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if self.sharding_strategy not in SHARDING_STRATEGIES:
            raise ValueError(
                f"sharding_strategy must be one of {list(SHARDING_STRATEGIES)}, got {self.sharding_strategy!r}"
            )

    @classmethod
    def from_config(cls, section: Mapping[str, Any], name: str = "compute_precision") -> ShardingPolicy:
        """Read ``{sharding_strategy, mixed_precision: {param_dtype, reduce_dtype, buffer_dtype}}``."""
        unknown = set(section) - {"sharding_strategy", "mixed_precision"}
        if unknown:
            raise ValueError(f"{name} has unknown keys {sorted(unknown)}; expected sharding_strategy, mixed_precision")
        precision = section.get("mixed_precision") or {}
        unknown = set(precision) - {"param_dtype", "reduce_dtype", "buffer_dtype"}
        if unknown:
            raise ValueError(f"{name}.mixed_precision has unknown keys {sorted(unknown)}")
        return cls(
            sharding_strategy=str(section.get("sharding_strategy", "SHARD_GRAD_OP")),
            param_dtype=parse_dtype(precision.get("param_dtype", "fp32"), f"{name}.mixed_precision.param_dtype"),
            reduce_dtype=parse_dtype(precision.get("reduce_dtype", "fp32"), f"{name}.mixed_precision.reduce_dtype"),
            buffer_dtype=parse_dtype(precision.get("buffer_dtype", "fp32"), f"{name}.mixed_precision.buffer_dtype"),
        )


class _Meshes:
    """The two device meshes of one process group (built on first use, identically on every member rank).

    ``group`` None means every process of the job. A subgroup (multi-student distillation) gets meshes over its
    ranks only; its NO_SHARD mesh pairs it with a one-rank group of this process (created locally, no collective).
    """

    def __init__(self, device_type: str, shard_mesh=None, group: dist.ProcessGroup | None = None) -> None:
        self.device_type = device_type
        self.group = group
        self._shard = shard_mesh
        self._replicate = None

    def for_strategy(self, strategy: str):
        if self.group is not None:
            return self._subgroup_mesh(strategy)
        from torch.distributed.device_mesh import init_device_mesh

        world = dist.get_world_size()
        if strategy == "NO_SHARD":
            if self._replicate is None:
                self._replicate = init_device_mesh(
                    self.device_type, (world, 1), mesh_dim_names=("dp_replicate", "dp_shard")
                )
            return self._replicate
        if self._shard is None:
            self._shard = init_device_mesh(self.device_type, (world,), mesh_dim_names=("dp_shard",))
        return self._shard

    def _subgroup_mesh(self, strategy: str):
        from torch.distributed.device_mesh import DeviceMesh

        if strategy == "NO_SHARD":
            if self._replicate is None:
                ranks = dist.get_process_group_ranks(self.group)
                own = dist.new_group([dist.get_rank()], use_local_synchronization=True)
                self._replicate = DeviceMesh.from_group(
                    [self.group, own],
                    self.device_type,
                    mesh=torch.tensor(ranks).view(-1, 1),
                    mesh_dim_names=("dp_replicate", "dp_shard"),
                )
            return self._replicate
        if self._shard is None:
            self._shard = DeviceMesh.from_group(self.group, self.device_type, mesh_dim_names=("dp_shard",))
        return self._shard


def _broadcast_states(module: nn.Module, group: dist.ProcessGroup | None = None) -> None:
    src = 0 if group is None else dist.get_global_rank(group, 0)  # the group's first rank
    for tensor in [*module.parameters(), *module.buffers()]:
        dist.broadcast(tensor.data, src=src, group=group)


def _cast_buffers(module: nn.Module, dtype: torch.dtype) -> None:
    for sub in module.modules():
        for name, buffer in sub.named_buffers(recurse=False):
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != dtype:
                setattr(sub, name, buffer.to(dtype))


def shard_module(module: nn.Module, policy: ShardingPolicy, mesh, *, reshard_after_forward: bool | None = None):
    """Wrap ``module.blocks[i]`` (if any) then ``module`` with ``fully_shard``; returns ``module``."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp_policy = MixedPrecisionPolicy(param_dtype=policy.param_dtype, reduce_dtype=policy.reduce_dtype)
    if reshard_after_forward is None:
        reshard_after_forward = policy.sharding_strategy == "FULL_SHARD"
    blocks = getattr(module, "blocks", None)
    units = list(blocks) if isinstance(blocks, nn.ModuleList) else []  # blocks, or chunks of blocks
    for unit in [*units, module]:  # each block first, then the root (it owns the remaining parameters)
        fully_shard(unit, mesh=mesh, mp_policy=mp_policy, reshard_after_forward=reshard_after_forward)
        # Gloo's AVG reduction is missing before torch 2.7 and was wrong in some later releases
        # (pytorch#162338): on CPU, reduce with SUM and let FSDP divide (public API, torch >= 2.8).
        if dist.get_backend() == "gloo" and hasattr(unit, "set_force_sum_reduction_for_comms"):
            unit.set_force_sum_reduction_for_comms(True)
    return module


def shard_model(
    modules: Mapping[str, Mapping[str, nn.Module]],
    precision_cfg: Mapping[str, Any],
    *,
    device: torch.device | str,
    mesh=None,
    sync_module_states: bool = True,
    single_process: bool = False,
    sections: Mapping[str, str] | None = None,
    inference_only: Collection[str] = ("teacher",),
    group: dist.ProcessGroup | None = None,
) -> bool:
    """Shard ``modules[role][X]`` in place, per ``precision_cfg[section of role][X]``.

    Returns whether the modules were wrapped: with a process group of two or more processes, or of one
    process when ``single_process`` is set (what the release does on one GPU: the FSDP mixed-precision
    policies then apply instead of autocast). Without a process group nothing is wrapped.

    Args:
        modules: e.g. ``{"student": model.student, "teacher": model.teacher}`` (``nn.ModuleDict`` of
            ``backbone``, ``dino_head``, ``ibot_head``); without ``sections`` roles other than student and
            teacher are ignored.
        precision_cfg: the ``compute_precision`` config section.
        device: training device; modules are moved there first.
        mesh: a 1-D ``DeviceMesh`` over all ranks for FULL_SHARD / SHARD_GRAD_OP (default: built
            from the default process group). NO_SHARD always uses a ``(world, 1)`` mesh.
        sync_module_states: broadcast rank 0's parameters and buffers first, so that all ranks
            start from the same weights whatever their seeds.
        sections: role -> ``compute_precision`` section that configures it (default: ``student`` and
            ``teacher`` configure themselves); e.g. a student EMA follows the ``teacher`` section.
        inference_only: roles that never run backward: they reshard right after their (no-grad) forward.
        group: shard over this process group's ranks only (a student's subgroup in multi-student distillation);
            None: every process of the job. ``mesh`` is ignored when a group is given.
    """
    device = torch.device(device)
    initialised = dist.is_available() and dist.is_initialized()
    distributed = initialised and (dist.get_world_size() > 1 or single_process)
    meshes = _Meshes(device.type, None if group is not None else mesh, group)
    sections = dict(sections) if sections is not None else {role: role for role in ROLES}
    for role, section_name in sections.items():
        for name, module in (modules.get(role) or {}).items():
            section = (precision_cfg.get(section_name) or {}).get(name)
            if section is None:
                raise ValueError(
                    f"compute_precision.{section_name}.{name} is missing: add sharding_strategy and mixed_precision "
                    "for it"
                )
            policy = ShardingPolicy.from_config(section, f"compute_precision.{section_name}.{name}")
            module.to(device)
            _cast_buffers(module, policy.buffer_dtype)
            if not distributed:
                continue
            if sync_module_states:
                _broadcast_states(module, group)
            # A teacher only runs forward (under no_grad): reshard right after it.
            reshard = True if role in inference_only else None
            shard_module(module, policy, meshes.for_strategy(policy.sharding_strategy), reshard_after_forward=reshard)
            logger.info("sharded %s.%s: %s", role, name, policy)
    if not distributed:
        logger.info("one process: student/teacher left unsharded in their parameters' dtype")
    return distributed


def clip_grad_norm_(parameters: Iterable[torch.Tensor], max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
    """Clip the gradients of sharded or plain parameters to a total norm of ``max_norm``.

    The norm is over the full (global) gradients: for DTensor gradients torch reduces the partial
    norms over the mesh. Call it once per student sub-module (backbone, heads) as the release does.
    Returns the total norm before clipping as a plain scalar tensor (same on every rank).
    """
    from torch.distributed.tensor import DTensor

    parameters = [p for p in parameters if p.grad is not None]
    if not parameters:
        return torch.zeros(())
    total_norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm, norm_type=norm_type)
    if isinstance(total_norm, DTensor):
        total_norm = total_norm.full_tensor()
    return total_norm
