"""Adapting a trained backbone to new data (``adapt.*``): the head warm-up and the backbone learning-rate ramp.

When training starts from a backbone without its DINO/iBOT heads (``student.pretrained_weights``), fresh heads
produce arbitrary targets; letting the backbone follow them from the first step is how released models collapse
(dinov2#204). So:

- **phase A** (``adapt.head_warmup_iterations``): every parameter group of the student backbone gets lr 0 (the
  heads and the centring state learn; AdamW's moments of the backbone still accumulate, and with lr 0 its
  decoupled weight decay ``lr * wd`` is 0, so the backbone does not move). The teacher backbone is set equal to
  the student's after each step (an EMA with momentum 0), the teacher heads follow by EMA as usual;
- **phase B**: the backbone's lr ramps linearly from 0 to the schedule's value over
  ``adapt.backbone_lr_ramp_iterations``, then follows the schedule (``optim.*``; the presets lower it).

Both are functions of the global iteration and the optimizer state is checkpointed, so a run resumed on either
side of the phase boundary repeats the uninterrupted one exactly.
"""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from dinov2.train.ema import ema_update

__all__ = ["Adaptation"]


class Adaptation:
    """The head warm-up (backbone lr 0 for ``head_warmup_iterations``) and the following backbone lr ramp."""

    def __init__(self, head_warmup_iterations: int = 0, backbone_lr_ramp_iterations: int = 0):
        self.head_warmup_iterations = int(head_warmup_iterations)
        self.backbone_lr_ramp_iterations = int(backbone_lr_ramp_iterations)
        self._backbone_groups: list[int] | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Adaptation | None:
        """The adaptation of ``cfg.adapt``, or None when it changes nothing (the released training)."""
        section = cfg.adapt
        if not (section.head_warmup_iterations or section.backbone_lr_ramp_iterations):
            return None
        return cls(section.head_warmup_iterations, section.backbone_lr_ramp_iterations)

    def in_head_warmup(self, iteration: int) -> bool:
        return iteration < self.head_warmup_iterations

    def backbone_lr_factor(self, iteration: int) -> float:
        """Multiplier of the backbone's lr at ``iteration``: 0 in phase A, then a linear ramp to 1."""
        if self.in_head_warmup(iteration):
            return 0.0
        if self.backbone_lr_ramp_iterations <= 0:
            return 1.0
        return min(1.0, (iteration - self.head_warmup_iterations + 1) / self.backbone_lr_ramp_iterations)

    def backbone_groups(self, model: nn.Module, optimizer) -> list[int]:
        """Indices of the optimizer's parameter groups that hold student-backbone parameters (groups are built per
        student sub-module, so a group is all backbone or none)."""
        if self._backbone_groups is None:
            ids = {id(p) for p in model.student.backbone.parameters()}
            self._backbone_groups = [i for i, g in enumerate(optimizer.param_groups) if id(g["params"][0]) in ids]
        return self._backbone_groups

    def scale_backbone_lr(self, model: nn.Module, optimizer, iteration: int) -> None:
        """Multiply the backbone groups' lr (already set from the schedules) by :meth:`backbone_lr_factor`."""
        factor = self.backbone_lr_factor(iteration)
        if factor == 1.0:
            return
        for index in self.backbone_groups(model, optimizer):
            optimizer.param_groups[index]["lr"] *= factor

    def after_step(self, model: nn.Module, iteration: int) -> None:
        """In phase A: the EMA backbone becomes the (unchanged) student backbone again, bit for bit (an EMA with
        momentum ``m`` of two equal tensors need not round back to them)."""
        if self.in_head_warmup(iteration):
            ema = model.student_ema()
            ema_update(ema.backbone.parameters(), model.student.backbone.parameters(), 0.0)
