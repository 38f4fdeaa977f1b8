"""The precision policy of a run, built once from ``compute_precision`` in the config.

The released configs describe precision per sub-module as FSDP mixed-precision policies
(``compute_precision.{student,teacher}.{backbone,dino_head,ibot_head}.mixed_precision.param_dtype``) plus a global
``compute_precision.grad_scaler`` switch. :class:`PrecisionPolicy` turns them into what a step needs:

- ``compute_dtype``: the dtype the student backbone computes in (its ``param_dtype``);
- ``autocast_dtype``: the autocast dtype of an *unsharded* model (None for fp32). When the model is sharded, the
  FSDP mixed-precision policies cast the weights instead, and autocast is off;
- ``grad_scaler``: a ``torch.amp.GradScaler`` when computing in fp16 with ``grad_scaler`` on (pointless in bf16 or
  fp32), else None.

The trainer builds the policy once the device and the sharding are known and hands it to the meta-architecture
(``model.precision``); evaluation builds its own from the teacher's ``param_dtype`` with :meth:`for_eval`.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from omegaconf import DictConfig

from dinov2.utils.dtype import DTYPES, parse_dtype

__all__ = ["DTYPES", "PrecisionPolicy", "autocast_dtype", "compute_dtype", "dtype_from_str", "make_grad_scaler"]


def dtype_from_str(name: str) -> torch.dtype:
    """``"fp32" | "fp16" | "bf16"`` to a torch dtype."""
    return parse_dtype(name)


def compute_dtype(cfg: DictConfig) -> torch.dtype:
    """The dtype the student backbone computes in (its ``mixed_precision.param_dtype``)."""
    key = "compute_precision.student.backbone.mixed_precision.param_dtype"
    return parse_dtype(cfg.compute_precision.student.backbone.mixed_precision.param_dtype, key)


def autocast_dtype(cfg: DictConfig) -> torch.dtype | None:
    """Autocast dtype for an unsharded model, or None for plain fp32."""
    dtype = compute_dtype(cfg)
    return None if dtype == torch.float32 else dtype


def make_grad_scaler(cfg: DictConfig, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A gradient scaler when computing in fp16 with ``compute_precision.grad_scaler`` on, else None."""
    if not cfg.compute_precision.grad_scaler or compute_dtype(cfg) != torch.float16:
        return None
    return torch.amp.GradScaler(torch.device(device).type)


@dataclasses.dataclass
class PrecisionPolicy:
    """Compute dtype, autocast and optional fp16 gradient scaler of a training step (or an evaluation)."""

    compute_dtype: torch.dtype = torch.float32
    autocast_dtype: torch.dtype | None = None
    grad_scaler: torch.amp.GradScaler | None = None

    @classmethod
    def from_config(
        cls, cfg: DictConfig, device: torch.device | str | None = None, *, sharded: bool = False
    ) -> PrecisionPolicy:
        """The training policy; ``device`` None builds no gradient scaler (before the device is chosen)."""
        scaler = make_grad_scaler(cfg, device) if device is not None else None
        return cls(compute_dtype(cfg), None if sharded else autocast_dtype(cfg), scaler)

    @classmethod
    def for_eval(cls, cfg: DictConfig) -> PrecisionPolicy:
        """Evaluation of the teacher: autocast to the teacher backbone's ``param_dtype`` (fp32: none)."""
        key = "compute_precision.teacher.backbone.mixed_precision.param_dtype"
        dtype = parse_dtype(cfg.compute_precision.teacher.backbone.mixed_precision.param_dtype, key)
        return cls(dtype, None if dtype == torch.float32 else dtype, None)

    def autocast(self, device_type: str):
        """Autocast context for ``device_type`` in the compute dtype (a no-op without an autocast dtype)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device_type, dtype=self.autocast_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()``, through the gradient scaler when there is one."""
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
        else:
            loss.backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Unscale the gradients before clipping (no-op without a scaler)."""
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, skipped by the scaler on inf/NaN gradients, then the scale update."""
        if self.grad_scaler is not None:
            self.grad_scaler.step(optimizer)
            self.grad_scaler.update()
        else:
            optimizer.step()
