"""The part of a checkpoint that ``torch.distributed.checkpoint`` (DCP) writes: modules and the optimizer.

A checkpoint's ``state`` mapping is split by kind (:func:`split_state`): modules and the one optimizer go through
``get_state_dict`` / ``set_state_dict`` (``torch.distributed.checkpoint.state_dict``) and DCP, so FSDP2 (DTensor)
and plain modules are saved alike and load with another number of processes; objects with
``state_dict``/``load_state_dict`` and plain values are the checkpointer's (rank 0, ``extra.pt``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dinov2 import distributed

__all__ = ["split_state", "dcp_state_dict", "dcp_save", "dcp_load_into"]

Optimizer = tuple[str, torch.optim.Optimizer]  # (its key in the state, the optimizer)


def split_state(state: Mapping[str, Any]) -> tuple[dict[str, nn.Module], Optimizer | None, dict, dict]:
    """-> (modules, (optimizer key, optimizer) or None, stateful objects, plain values)."""
    modules = {k: v for k, v in state.items() if isinstance(v, nn.Module)}
    optimizers = {k: v for k, v in state.items() if isinstance(v, torch.optim.Optimizer)}
    if len(optimizers) > 1 or (optimizers and len(modules) != 1):
        raise ValueError(
            f"checkpoint state holds modules {sorted(modules)} and optimizers {sorted(optimizers)}: "
            "an optimizer needs exactly one module (the model it optimises) and at most one optimizer is supported"
        )
    rest = {k: v for k, v in state.items() if k not in modules and k not in optimizers}
    stateful = {k: v for k, v in rest.items() if hasattr(v, "state_dict") and hasattr(v, "load_state_dict")}
    plain = {k: v for k, v in rest.items() if k not in stateful}
    return modules, next(iter(optimizers.items()), None), stateful, plain


def dcp_state_dict(modules: Mapping[str, nn.Module], optimizer: Optimizer | None) -> dict[str, Any]:
    """The state dict DCP reads or writes in place: ``{module key: ..., optimizer key: ...}``."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    out: dict[str, Any] = {}
    if optimizer is not None:
        (model_key, model), (optim_key, optim) = next(iter(modules.items())), optimizer
        out[model_key], out[optim_key] = get_state_dict(model, optim)
    else:
        out = {key: get_model_state_dict(module) for key, module in modules.items()}
    return out


def _dcp_call(fn: Callable, state_dict: dict, path: Path) -> None:
    from torch.distributed.checkpoint.api import CheckpointException

    with warnings.catch_warnings():  # DCP warns that it runs "in a single process" without a group
        warnings.filterwarnings("ignore", message=".*(single process|distributed is disabled|uninitialized).*")
        try:
            fn(state_dict, checkpoint_id=str(path), process_group=distributed.current_group())
        except CheckpointException as error:
            # DCP wraps whatever its writers raise, the SystemExit of a preemption handler included (submitit's
            # SIGUSR2 handler exits with its requeue code): let that exit through, or the job is not requeued.
            for exc, _ in error.failures.values():
                if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                    raise exc from None
            raise


def dcp_save(state_dict: dict[str, Any], path: Path) -> None:
    """Write ``state_dict`` (from :func:`dcp_state_dict`) to the folder ``path``; collective."""
    from torch.distributed.checkpoint import save

    _dcp_call(save, state_dict, path)


def dcp_load_into(modules: Mapping[str, nn.Module], optimizer: Optimizer | None, path: Path) -> None:
    """Read the modules (and optimizer) saved by :func:`dcp_save` in ``path`` back into them; collective."""
    from torch.distributed.checkpoint import load
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_state_dict

    state_dict = dcp_state_dict(modules, optimizer)
    _dcp_call(load, state_dict, path)
    if optimizer is not None:
        (model_key, model), (optim_key, optim) = next(iter(modules.items())), optimizer
        set_state_dict(model, optim, model_state_dict=state_dict[model_key], optim_state_dict=state_dict[optim_key])
    else:
        for key, module in modules.items():
            set_model_state_dict(module, state_dict[key])
