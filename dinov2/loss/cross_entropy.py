"""Cross-entropy between teacher probabilities and the student's temperature-scaled log-softmax.

``cross_entropy_with_probs(s, [q_1, ..., q_T], temp)[i] = -sum_k (sum_t q_t[i, k]) * log_softmax(s[i] / temp)[k]``

At the released prototype counts (K = 65,536 or 131,072) the plain formulation keeps the whole
``log_softmax`` output [N, K] (float32) alive for backward and builds several more [N, K] temporaries
in the backward pass. The default *lean* path is a custom autograd function that works on row chunks
of at most ``CHUNK_ELEMENTS`` elements, saves nothing but its inputs for backward, and recomputes the
softmax there, chunk by chunk:

    d loss_i / d s_ik = (softmax(s_i / temp)_k * sum_k' q_ik' - q_ik) / temp

so beyond the logits and targets the only K-sized tensor per row is the gradient itself (in the
student's dtype), plus a few float32 temporaries of one chunk (<= 16 MiB each by default, whatever N).
All arithmetic is float32 whatever the input dtype (as under autocast, where ``log_softmax`` runs in
float32). The plain path (``lean=False``) is kept as the reference.

Non-finite values are not searched for here (that would cost a device sync per call): they propagate
into the loss, and the trainer checks the total loss once per step. The loss modules offer an
opt-in ``check_finite`` flag for debugging.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from dinov2.loss.centering import check_temperature

__all__ = ["CHUNK_ELEMENTS", "cross_entropy_with_probs", "raise_if_not_finite"]

CHUNK_ELEMENTS = 1 << 22  # rows per chunk * K; 16 MiB per float32 temporary


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs; float64 stays float64 (used by gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _rows_per_chunk(n_prototypes: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(n_prototypes, 1))


class _LeanCrossEntropy(torch.autograd.Function):
    """Row-chunked ``-(sum_t q_t * log_softmax(s / temp)).sum(-1)``; teachers get no gradient."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, temp: float, chunk_elements: int, *teachers: torch.Tensor):
        n_rows, n_prototypes = student.shape
        step = _rows_per_chunk(n_prototypes, chunk_elements)
        dtype = _compute_dtype(student.dtype)
        loss = torch.empty(n_rows, dtype=dtype, device=student.device)  # [N]
        with torch.autocast(device_type=student.device.type, enabled=False):
            for start in range(0, n_rows, step):
                rows = slice(start, start + step)
                log_probs = F.log_softmax(student[rows].to(dtype) / temp, dim=-1)  # [c, K]
                chunk_loss = -(teachers[0][rows] * log_probs).sum(dim=-1)  # [c]
                for teacher in teachers[1:]:
                    chunk_loss -= (teacher[rows] * log_probs).sum(dim=-1)
                loss[rows] = chunk_loss
        ctx.save_for_backward(student, *teachers)  # inputs only: nothing new is kept alive
        ctx.temp = temp
        ctx.step = step
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss: torch.Tensor):
        student, *teachers = ctx.saved_tensors
        temp, step = ctx.temp, ctx.step
        grad_student = torch.empty_like(student)  # [N, K], the student's dtype
        with torch.autocast(device_type=student.device.type, enabled=False):
            dtype = _compute_dtype(student.dtype)
            row_scale = grad_loss.to(dtype)[:, None] / temp  # [N, 1]
            for start in range(0, student.shape[0], step):
                rows = slice(start, start + step)
                target = teachers[0][rows]  # [c, K]
                for teacher in teachers[1:]:
                    target = target + teacher[rows]
                grad = torch.softmax(student[rows].to(dtype) / temp, dim=-1)  # [c, K], recomputed
                grad *= target.sum(dim=-1, keepdim=True, dtype=dtype)
                grad -= target
                torch.mul(grad, row_scale[rows], out=grad_student[rows])
        return (grad_student, None, None) + (None,) * len(teachers)


def _check_inputs(student_logits: torch.Tensor, teachers: Sequence[torch.Tensor]) -> None:
    if student_logits.dim() != 2:
        raise ValueError(f"student logits must be [N, K], got shape {tuple(student_logits.shape)}")
    if len(teachers) == 0:
        raise ValueError("at least one teacher probability tensor is needed, got an empty list")
    for i, teacher in enumerate(teachers):
        if teacher.shape != student_logits.shape:
            raise ValueError(
                f"teacher probabilities #{i} have shape {tuple(teacher.shape)} but the student logits have "
                f"{tuple(student_logits.shape)}; both must be [N, K] with the same N and number of prototypes K"
            )


def cross_entropy_with_probs(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor | Sequence[torch.Tensor],
    student_temp: float,
    lean: bool = True,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """Per-row cross-entropy ``-sum_k (sum_t q_t) * log_softmax(s / student_temp)``.

    Args:
        student_logits: student prototype logits [N, K] (any float dtype; gradients flow to it).
        teacher_probs: target probabilities [N, K], or a sequence of them that are summed (DINO's
            several teacher crops against one student crop). Treated as constants.
        student_temp: student temperature (> 0).
        lean: use the memory-lean chunked autograd function (default); ``False`` runs the plain
            ``log_softmax`` formulation (the reference).
        chunk_elements: elements per chunk of the lean path (rows per chunk = this // K, at least 1).
    Returns:
        loss per row [N], float32 (float64 for float64 logits).
    """
    student_temp = check_temperature("student_temp", student_temp)
    teachers = [teacher_probs] if isinstance(teacher_probs, torch.Tensor) else list(teacher_probs)
    _check_inputs(student_logits, teachers)
    if not lean:
        log_probs = F.log_softmax(student_logits.to(_compute_dtype(student_logits.dtype)) / student_temp, dim=-1)
        loss = -(teachers[0] * log_probs).sum(dim=-1)
        for teacher in teachers[1:]:
            loss = loss - (teacher * log_probs).sum(dim=-1)
        return loss
    if any(t.requires_grad for t in teachers):
        raise ValueError(
            "teacher probabilities require grad, but the lean cross-entropy treats them as constants; "
            "detach them (teacher targets are computed under no_grad) or pass lean=False"
        )
    return _LeanCrossEntropy.apply(student_logits, student_temp, int(chunk_elements), *teachers)


def raise_if_not_finite(
    loss: torch.Tensor, name: str, inputs: dict[str, torch.Tensor | Sequence[torch.Tensor]]
) -> None:
    """Raise ``FloatingPointError`` if ``loss`` is not finite, saying which ``inputs`` hold non-finite values.

    Costs one device sync per call (more only when it raises); used by the losses' ``check_finite`` flag.
    """
    if bool(torch.isfinite(loss).all()):
        return
    bad = []
    for key, value in inputs.items():
        tensors = [value] if isinstance(value, torch.Tensor) else list(value)
        if not all(bool(torch.isfinite(t).all()) for t in tensors):
            bad.append(key)
    where = (
        f"non-finite values in the {' and the '.join(bad)}" if bad else "its inputs are finite (overflow in the loss)"
    )
    raise FloatingPointError(
        f"{name} is {loss.item()}: {where}; lower the learning rate, check the fp16 grad scaler or the data"
    )
