"""Parallelism applied to a meta-architecture from outside, in one fixed order (torchtitan style).

The model files know nothing of any of this. :func:`parallelize` takes the roles a meta-architecture declares
(:meth:`SSLMetaArch.parallel_roles`: which ``ModuleDict`` s exist, which ``compute_precision`` section configures
each, whether it runs backward) and, for every sub-module (backbone, heads):

1. **activation checkpointing** (``train.checkpointing``, trained roles only): each element of ``blocks`` (a block,
   or a chunk of blocks) is wrapped with torch's non-reentrant checkpoint wrapper, so its activations are
   recomputed in backward instead of stored;
2. **compile** (``train.compile``): each element of ``blocks`` gets a ``torch.compile`` d ``forward``; the module
   hooks (activation checkpointing above, FSDP below) stay outside the compiled region, and parameter names and
   state-dict keys are unchanged;
3. **shard each block, then the root** with FSDP2 (``dinov2.distributed.sharding.shard_model``, per
   ``compute_precision``), when a process group exists, over the role's ``group`` (every process by default; a
   student's subgroup in multi-student distillation).

State-dict keys are not affected by any step (the checkpoint wrapper strips its prefix from state dicts, and
``torch.distributed.checkpoint`` strips it from parameter names). Parameter names seen by ``named_parameters``
gain ``_checkpoint_wrapped_module`` with activation checkpointing; the parameter-group rules ignore it.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from dinov2.distributed.sharding import shard_model
from dinov2.utils.utils import has_batchnorms

logger = logging.getLogger("dinov2")

__all__ = ["ParallelRole", "apply_activation_checkpointing", "apply_compile", "parallelize"]


@dataclasses.dataclass(frozen=True)
class ParallelRole:
    """One group of sub-modules of a meta-architecture, as the parallelism sees it."""

    modules: nn.ModuleDict  # backbone, dino_head, ibot_head, ...
    precision_section: str  # the compute_precision section that configures it ("student" or "teacher")
    trains: bool  # runs backward (activation checkpointing applies; FSDP keeps gathered weights for backward)
    group: Any = None  # torch.distributed ProcessGroup to shard over; None: every process of the job


def _block_units(module: nn.Module) -> nn.ModuleList | None:
    blocks = getattr(module, "blocks", None)
    return blocks if isinstance(blocks, nn.ModuleList) else None


def apply_activation_checkpointing(module: nn.Module) -> int:
    """Wrap every element of ``module.blocks`` with non-reentrant activation checkpointing; returns the count."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    units = _block_units(module)
    if units is None:
        return 0
    for i, unit in enumerate(units):
        units[i] = checkpoint_wrapper(unit, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
    return len(units)


def apply_compile(module: nn.Module, **compile_kwargs) -> int:
    """``torch.compile`` the ``forward`` of every element of ``module.blocks`` in place; returns the count.

    Only ``forward`` is compiled, so hooks registered on the unit (activation checkpointing, FSDP) run eagerly
    around it, and the module tree (parameter names, state-dict keys) is untouched. Blocks share one compiled
    code object, so the compilation cost is paid once per input layout, not per block.
    """
    units = _block_units(module)
    if units is None:
        return 0
    for unit in units:
        unit.forward = torch.compile(unit.forward, **compile_kwargs)
    return len(units)


def parallelize(model: nn.Module, cfg: DictConfig, device: torch.device | str, *, single_process: bool = False) -> bool:
    """Apply activation checkpointing -> compile -> sharding to ``model.parallel_roles()``; returns "sharded".

    Call after the weights are loaded and before the optimizer is built. ``single_process`` shards even on a
    one-process group (what the release does on one GPU; FSDP mixed precision then replaces autocast).
    """
    roles: dict[str, ParallelRole] = model.parallel_roles()
    for name, role in roles.items():
        if role.trains and has_batchnorms(role.modules):
            raise NotImplementedError(f"sharded training of models with batch norms is not supported ({name})")
    model.to(device)
    checkpointing, compile_blocks = bool(cfg.train.checkpointing), bool(cfg.train.compile)
    for name, role in roles.items():
        for sub_name, module in role.modules.items():
            if checkpointing and role.trains:
                count = apply_activation_checkpointing(module)
                if count:
                    logger.info("activation checkpointing on %d block units of %s.%s", count, name, sub_name)
            if compile_blocks:
                count = apply_compile(module)
                if count:
                    logger.info("compiled the forward of %d block units of %s.%s", count, name, sub_name)
    # One shard_model call per process group (in the order roles are declared, the same on every rank), so
    # that roles sharing a group share its meshes: the EMA then follows the student shard by shard.
    by_group: dict[int, list[str]] = {}
    for name, role in roles.items():
        by_group.setdefault(id(role.group), []).append(name)
    sharded = False
    for names in by_group.values():
        sharded |= shard_model(
            {name: roles[name].modules for name in names},
            cfg.compute_precision,
            device=device,
            single_process=single_process,
            sections={name: roles[name].precision_section for name in names},
            inference_only=[name for name in names if not roles[name].trains],
            group=roles[names[0]].group,
        )
    return sharded
