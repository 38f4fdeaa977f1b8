"""Mixed-precision choices of the training step, from ``compute_precision`` in the config.

The released configs describe precision per sub-module as FSDP mixed-precision policies
(``compute_precision.{student,teacher}.{backbone,dino_head,ibot_head}.mixed_precision.param_dtype``) plus a
global ``compute_precision.grad_scaler`` switch. When the model is sharded, the FSDP policies apply them
(``dinov2.distributed``). On a single unsharded process the same settings map onto autocast: the compute dtype
is the student backbone's ``param_dtype`` (fp32 means no autocast), and the gradient scaler is used only when
that dtype is fp16 and ``grad_scaler`` is on (a scaler is pointless in bf16 or fp32).
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from dinov2.utils.dtype import parse_dtype


def dtype_from_str(name: str) -> torch.dtype:
    """``"fp32" | "fp16" | "bf16"`` to a torch dtype."""
    return parse_dtype(name)


def compute_dtype(cfg: DictConfig) -> torch.dtype:
    """The dtype the student backbone computes in (its ``mixed_precision.param_dtype``)."""
    return dtype_from_str(cfg.compute_precision.student.backbone.mixed_precision.param_dtype)


def autocast_dtype(cfg: DictConfig) -> torch.dtype | None:
    """Autocast dtype for an unsharded model, or None for plain fp32."""
    dtype = compute_dtype(cfg)
    return None if dtype == torch.float32 else dtype


def make_grad_scaler(cfg: DictConfig, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A gradient scaler when computing in fp16 with ``compute_precision.grad_scaler`` on, else None."""
    if not cfg.compute_precision.grad_scaler or compute_dtype(cfg) != torch.float16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)
