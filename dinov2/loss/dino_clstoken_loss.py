"""DINO loss on the class-token prototype logits (SPEC.md §2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dinov2.loss.centering import CenteredTeacherLoss, sinkhorn_knopp, softmax_center
from dinov2.loss.cross_entropy import cross_entropy_with_probs, raise_if_not_finite

__all__ = ["DINOLoss"]


class DINOLoss(CenteredTeacherLoss):
    """Cross-entropy between teacher targets and student class-token logits, with teacher centring.

    Args:
        out_dim: number of prototypes K; the centre buffer ``center`` has shape [1, K].
        student_temp: student temperature (0.1).
        center_momentum: EMA momentum of the centre (0.9).
        lean_cross_entropy: use the memory-lean chunked cross-entropy (default) instead of the plain one.
        check_finite: after each ``forward`` raise ``FloatingPointError`` if the loss is not finite (costs
            a device sync; off by default, the trainer checks the total loss).
    """

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        lean_cross_entropy: bool = True,
        check_finite: bool = False,
    ) -> None:
        super().__init__((1, out_dim), student_temp, center_momentum, lean_cross_entropy, check_finite)
        self.out_dim = out_dim

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_output: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Apply the pending centre update, then ``softmax((t - center) / teacher_temp)``: [n, K] -> [n, K]."""
        self.apply_center_update()
        return softmax_center(teacher_output, self.center, teacher_temp)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(
        self, teacher_output: torch.Tensor, teacher_temp: float, n_iterations: int = 3
    ) -> torch.Tensor:
        """Sinkhorn-Knopp targets [n, K] (float32) over all ranks' n * world_size samples."""
        self._check_prototypes(teacher_output)
        return sinkhorn_knopp(teacher_output, teacher_temp, n_iterations=n_iterations)

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """Start the deferred centre update with teacher logits [n, K] (sum over rows, async all-reduce)."""
        self._check_prototypes(teacher_output)
        if teacher_output.dim() != 2:
            raise ValueError(f"DINOLoss.update_center expects teacher logits [n, K], got {tuple(teacher_output.shape)}")
        batch_sum = torch.sum(teacher_output, dim=0, dtype=torch.float32)  # [K]
        self._start_center_update(batch_sum, teacher_output.shape[0])

    def forward(
        self,
        student_output_list: Sequence[torch.Tensor],
        teacher_out_softmaxed_centered_list: Sequence[torch.Tensor],
    ) -> torch.Tensor:
        """Sum over (student crop, teacher crop) pairs of ``-mean_b sum_k q * log_softmax(s / student_temp)``.

        Args:
            student_output_list: student logits, each [b, K].
            teacher_out_softmaxed_centered_list: teacher targets, each [b, K] (no gradient).
        Returns:
            0-d float32 loss.
        """
        if len(student_output_list) == 0 or len(teacher_out_softmaxed_centered_list) == 0:
            raise ValueError(
                f"DINOLoss needs at least one student and one teacher tensor, got {len(student_output_list)} "
                f"and {len(teacher_out_softmaxed_centered_list)}"
            )
        teachers = list(teacher_out_softmaxed_centered_list)
        for teacher in teachers:
            self._check_prototypes(teacher)
        total = None
        for student in student_output_list:
            self._check_prototypes(student)
            # The mean over rows is linear, so every teacher crop is folded into one pass over the student.
            per_row = cross_entropy_with_probs(student, teachers, self.student_temp, lean=self.lean_cross_entropy)
            total = per_row.mean() if total is None else total + per_row.mean()
        if self.check_finite:
            raise_if_not_finite(
                total, "DINO loss", {"student logits": student_output_list, "teacher targets": teachers}
            )
        return total
