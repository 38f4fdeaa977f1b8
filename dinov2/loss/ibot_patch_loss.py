"""iBOT masked-patch loss on the patch-token prototype logits (SPEC.md §2)."""

from __future__ import annotations

import torch

from dinov2.loss.centering import CenteredTeacherLoss, sinkhorn_knopp, softmax_center
from dinov2.loss.cross_entropy import cross_entropy_with_probs, raise_if_not_finite

__all__ = ["iBOTPatchLoss", "lossfunc"]


def lossfunc(t: torch.Tensor, s: torch.Tensor, temp: float) -> torch.Tensor:
    """The release's per-token term ``sum_k t * log_softmax(s / temp)`` over the last dim (the negative of the
    cross-entropy; in float32, as its xformers path): ``[..., K] -> [...]``. The loss itself uses
    :func:`~dinov2.loss.cross_entropy.cross_entropy_with_probs`, the same value in bounded memory."""
    return -cross_entropy_with_probs(s.reshape(-1, s.shape[-1]), t.reshape(-1, t.shape[-1]), temp).view(s.shape[:-1])


class iBOTPatchLoss(CenteredTeacherLoss):  # noqa: N801 (released name)
    """Cross-entropy between teacher and student prototype distributions of the masked patch tokens.

    Args:
        patch_out_dim: number of prototypes K; the centre buffer ``center`` has shape [1, 1, K].
        student_temp: student temperature (0.1).
        center_momentum: EMA momentum of the centre (0.9).
        lean_cross_entropy: use the memory-lean chunked cross-entropy (default) instead of the plain one.
        check_finite: after each forward raise ``FloatingPointError`` if the loss is not finite (one device
            sync; off by default, the trainer checks the total loss).
    """

    prototypes_arg = "patch_out_dim"

    def __init__(
        self,
        patch_out_dim: int,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        lean_cross_entropy: bool = True,
        check_finite: bool = False,
    ) -> None:
        super().__init__((1, 1, patch_out_dim), student_temp, center_momentum, lean_cross_entropy, check_finite)
        self.patch_out_dim = patch_out_dim

    @torch.no_grad()
    def softmax_center_teacher(self, teacher_patch_tokens: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Apply the pending centre update, then ``softmax((t - center) / teacher_temp)``.

        ``teacher_patch_tokens`` [..., K] is broadcast against the [1, 1, K] centre (so [1, M, K] -> [1, M, K],
        and, as in the release, [M, K] -> [1, M, K]).
        """
        self.apply_center_update()
        return softmax_center(teacher_patch_tokens, self.center, teacher_temp)

    @torch.no_grad()
    def sinkhorn_knopp_teacher(
        self,
        teacher_output: torch.Tensor,
        teacher_temp: float,
        n_masked_patches_tensor: torch.Tensor,
        n_iterations: int = 3,
    ) -> torch.Tensor:
        """Sinkhorn-Knopp targets [M, K] (float32) for this rank's masked-token logits [M, K].

        ``n_masked_patches_tensor`` ([1] int) holds this rank's number of masked tokens; its all-reduced sum
        is the global sample count. Works without a process group (the release needs one); the caller's
        tensor is not modified.
        """
        self._check_prototypes(teacher_output)
        if not isinstance(n_masked_patches_tensor, torch.Tensor):
            n_masked_patches_tensor = torch.tensor([n_masked_patches_tensor], device=teacher_output.device)
        return sinkhorn_knopp(
            teacher_output, teacher_temp, n_iterations=n_iterations, n_samples=n_masked_patches_tensor
        )

    @torch.no_grad()
    def update_center(self, teacher_patch_tokens: torch.Tensor) -> None:
        """Start the deferred centre update with teacher logits [b, M, K]: mean over the M tokens, summed over b.

        The trainer passes the masked tokens as [1, M, K]. A rank with M = 0 contributes nothing.
        """
        self._check_prototypes(teacher_patch_tokens)
        if teacher_patch_tokens.dim() != 3:
            raise ValueError(
                "iBOTPatchLoss.update_center expects teacher logits [b, M, K] (the masked tokens as [1, M, K]: "
                f"use .unsqueeze(0)), got shape {tuple(teacher_patch_tokens.shape)}"
            )
        b, n_tokens, _ = teacher_patch_tokens.shape
        if n_tokens == 0:
            batch_sum = teacher_patch_tokens.new_zeros(self.patch_out_dim, dtype=torch.float32)
            self._start_center_update(batch_sum, 0)
            return
        token_means = torch.mean(teacher_patch_tokens, dim=1, dtype=torch.float32)  # [b, K]
        self._start_center_update(token_means.sum(dim=0), b)

    def forward(
        self,
        student_patch_tokens: torch.Tensor,
        teacher_patch_tokens: torch.Tensor,
        student_masks_flat: torch.Tensor,
    ) -> torch.Tensor:
        """Dense iBOT loss: per-image mean of the token cross-entropy over masked tokens, then mean over images.

        Args:
            student_patch_tokens: student logits [B, N, K].
            teacher_patch_tokens: teacher targets [B, N, K].
            student_masks_flat: masks [B, N] (bool); an image without masked tokens contributes 0.
        Returns:
            0-d float32 loss.
        """
        self._check_prototypes(student_patch_tokens)
        shapes = tuple(student_patch_tokens.shape), tuple(teacher_patch_tokens.shape), tuple(student_masks_flat.shape)
        if len(shapes[0]) != 3 or shapes[1] != shapes[0] or shapes[2] != shapes[0][:2]:
            raise ValueError(
                "iBOTPatchLoss.forward expects student and teacher tokens [B, N, K] and masks [B, N], got "
                f"{shapes[0]}, {shapes[1]} and {shapes[2]}"
            )
        b, n, k = shapes[0]
        per_token = cross_entropy_with_probs(
            student_patch_tokens.reshape(b * n, k),
            teacher_patch_tokens.reshape(b * n, k),
            self.student_temp,
            lean=self.lean_cross_entropy,
        ).reshape(b, n)  # [B, N]
        masks = student_masks_flat.float()  # [B, N]
        per_image = (per_token * masks).sum(dim=-1) / masks.sum(dim=-1).clamp(min=1.0)  # [B]
        loss = per_image.mean()
        if self.check_finite:
            raise_if_not_finite(loss, "iBOT loss", {"student logits": student_patch_tokens})
        return loss

    def forward_masked(
        self,
        student_patch_tokens_masked: torch.Tensor,
        teacher_patch_tokens_masked: torch.Tensor,
        student_masks_flat: torch.Tensor,
        n_masked_patches: int | torch.Tensor | None = None,
        masks_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """iBOT loss on the gathered masked tokens: ``sum_i w_i * CE_i / B``.

        Args:
            student_patch_tokens_masked: student logits of the masked tokens [M', K] (M' >= M: padding allowed).
            teacher_patch_tokens_masked: teacher targets [M', K].
            student_masks_flat: masks [B, N] (bool) of the global crops; B divides the sum (images with no
                masked token count too). A batch without any masked token gives 0.
            n_masked_patches: number M of real masked tokens; rows beyond it are padding and ignored.
            masks_weight: per-token weights [M]; default ``1 / (#masked tokens of the token's image)``
                computed from ``student_masks_flat``.
        Returns:
            0-d float32 loss.
        """
        student, teacher = student_patch_tokens_masked, teacher_patch_tokens_masked
        self._check_prototypes(student)
        if n_masked_patches is not None:
            n = int(n_masked_patches)
            if not 0 <= n <= student.shape[0]:
                raise ValueError(f"n_masked_patches={n} is outside [0, {student.shape[0]}] (the number of rows given)")
            student, teacher = student[:n], teacher[:n]
        if masks_weight is None:
            masks = student_masks_flat.bool()
            per_image = 1.0 / masks.sum(dim=-1).clamp(min=1).float()  # [B]
            masks_weight = per_image.unsqueeze(-1).expand_as(masks)[masks]  # [M], row-major like the gather
        if masks_weight.shape != student.shape[:1]:
            raise ValueError(
                f"masks_weight has shape {tuple(masks_weight.shape)} but there are {student.shape[0]} masked tokens; "
                "pass n_masked_patches to drop padding rows, or a weight per masked token"
            )
        per_token = cross_entropy_with_probs(student, teacher, self.student_temp, lean=self.lean_cross_entropy)  # [M]
        loss = (per_token * masks_weight).sum() / student_masks_flat.shape[0]
        if self.check_finite:
            raise_if_not_finite(loss, "iBOT loss", {"student logits": student, "teacher targets": teacher})
        return loss
