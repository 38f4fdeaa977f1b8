"""How teacher logits become targets: a strategy object chosen once from ``train.centering``.

- :class:`SoftmaxCentering` (``centering``): softmax of the centred logits, then the deferred centre update of the
  DINO loss (``[1, K]`` centre) and of the iBOT loss (``[1, 1, K]`` centre, updated with the mean over the masked
  tokens);
- :class:`SinkhornKnoppCentering` (``sinkhorn_knopp``): 3 Sinkhorn-Knopp iterations over the global batch (for iBOT
  over the all-reduced number of masked patches).

The centres stay buffers of the loss modules (state-dict keys ``dino_loss.center``, ``ibot_patch_loss.center`` as
released); a strategy only holds references to those modules. New strategies register in :data:`CENTERINGS`.
"""

from __future__ import annotations

from typing import Protocol

import torch

from dinov2.loss.dino_clstoken_loss import DINOLoss
from dinov2.loss.ibot_patch_loss import iBOTPatchLoss

__all__ = ["CENTERINGS", "SinkhornKnoppCentering", "SoftmaxCentering", "TeacherCentering", "build_centering"]


class TeacherCentering(Protocol):
    """Teacher logits -> target probabilities for the DINO (class token) and iBOT (masked patch) losses."""

    def dino_targets(self, logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Class-token logits ``[N, K]`` -> targets ``[N, K]``."""
        ...

    def ibot_targets(self, logits: torch.Tensor, teacher_temp: float, n_masked_patches: torch.Tensor) -> torch.Tensor:
        """Masked-patch logits ``[M, K]`` (``n_masked_patches`` [1] int64 on this rank) -> targets ``[M, K]``."""
        ...


class _LossCentering:
    """A strategy bound to the DINO and iBOT loss modules that hold its state (the centres)."""

    name: str

    def __init__(self, dino_loss: DINOLoss, ibot_loss: iBOTPatchLoss) -> None:
        self.dino_loss, self.ibot_loss = dino_loss, ibot_loss


class SoftmaxCentering(_LossCentering):
    """``softmax((t - center) / temp)`` with the released one-step-late EMA centre update."""

    name = "centering"

    @torch.no_grad()
    def dino_targets(self, logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        targets = self.dino_loss.softmax_center_teacher(logits, teacher_temp=teacher_temp)
        self.dino_loss.update_center(logits)
        return targets

    @torch.no_grad()
    def ibot_targets(self, logits: torch.Tensor, teacher_temp: float, n_masked_patches: torch.Tensor) -> torch.Tensor:
        logits = logits.unsqueeze(0)  # [1, M, K]: the iBOT centre is the mean over the masked tokens
        targets = self.ibot_loss.softmax_center_teacher(logits, teacher_temp=teacher_temp)[0]
        self.ibot_loss.update_center(logits)
        return targets


class SinkhornKnoppCentering(_LossCentering):
    """Sinkhorn-Knopp targets (3 iterations, float32) over the samples of all ranks."""

    name = "sinkhorn_knopp"

    @torch.no_grad()
    def dino_targets(self, logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return self.dino_loss.sinkhorn_knopp_teacher(logits, teacher_temp=teacher_temp)

    @torch.no_grad()
    def ibot_targets(self, logits: torch.Tensor, teacher_temp: float, n_masked_patches: torch.Tensor) -> torch.Tensor:
        return self.ibot_loss.sinkhorn_knopp_teacher(
            logits, teacher_temp=teacher_temp, n_masked_patches_tensor=n_masked_patches
        )


#: ``train.centering`` value -> strategy class (the choices config validation accepts).
CENTERINGS: dict[str, type] = {"centering": SoftmaxCentering, "sinkhorn_knopp": SinkhornKnoppCentering}


def build_centering(name: str, dino_loss: DINOLoss, ibot_loss: iBOTPatchLoss) -> TeacherCentering:
    """The strategy for ``train.centering=name``; raises ``ValueError`` naming the key and the choices."""
    if name not in CENTERINGS:
        raise ValueError(f"train.centering must be one of {list(CENTERINGS)}, got {name!r}")
    return CENTERINGS[name](dino_loss, ibot_loss)
