"""Teacher-target maths shared by the DINO and iBOT losses: softmax centring and Sinkhorn-Knopp.

Both centring modes turn teacher prototype logits [N, K] into target probabilities [N, K]:

- ``centering``: ``softmax((t - center) / teacher_temp)`` with an EMA ``center`` that is updated from
  the teacher logits one step late (the all-reduce of the batch statistics runs asynchronously and is
  folded in at the next call that needs the centre), see :class:`CenteredTeacherLoss`.
- ``sinkhorn_knopp``: a few Sinkhorn-Knopp iterations that make every sample's target sum to 1 and
  every prototype receive the same total mass over the global batch, see :func:`sinkhorn_knopp`.

Every collective goes through :mod:`dinov2.distributed`, so all of this runs with or without a
process group (without one it computes the world-size-1 result).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from dinov2 import distributed

__all__ = ["CenteredTeacherLoss", "check_temperature", "sinkhorn_knopp", "softmax_center"]

logger = logging.getLogger(__name__)


def check_temperature(name: str, value: float) -> float:
    """Return ``value`` as a float; raise ``ValueError`` naming ``name`` unless it is a finite number > 0."""
    value = float(value)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}; check the temperature schedule/config")
    return value


def softmax_center(teacher_output: torch.Tensor, center: torch.Tensor, teacher_temp: float) -> torch.Tensor:
    """``softmax((teacher_output - center) / teacher_temp)`` over the last (prototype) dimension.

    Args:
        teacher_output: teacher logits [..., K].
        center: centre broadcastable to ``teacher_output`` ([1, K] or [1, 1, K]).
        teacher_temp: teacher temperature (> 0).
    Returns:
        probabilities [..., K] (float32 when ``teacher_output`` is float32; the dtype follows type promotion).
    """
    teacher_temp = check_temperature("teacher_temp", teacher_temp)
    if teacher_output.shape[-1] != center.shape[-1]:
        raise ValueError(
            f"teacher output has {teacher_output.shape[-1]} prototypes but the centre has {center.shape[-1]}; "
            "build the loss with out_dim equal to the head's number of prototypes"
        )
    return torch.softmax((teacher_output - center) / teacher_temp, dim=-1)


@torch.no_grad()
def sinkhorn_knopp(
    teacher_output: torch.Tensor,
    teacher_temp: float,
    n_iterations: int = 3,
    n_samples: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """Sinkhorn-Knopp teacher targets, computed in float32 over the samples of all ranks.

    ``Q = exp(t / temp).T`` [K, N] is divided by its (all-reduced) total; each iteration divides every
    prototype row by its (all-reduced) sum and by K, then every sample column by its sum and by the
    global sample count B; finally ``Q * B`` is returned transposed. After the last iteration each
    sample's target sums to 1 exactly (up to rounding); the prototype marginals are uniform
    (``B / K`` each) up to the accuracy reached after ``n_iterations``.

    Args:
        teacher_output: teacher logits [N, K] of this rank (any float dtype; cast to float32).
        teacher_temp: teacher temperature (> 0).
        n_iterations: number of Sinkhorn iterations (3 in the release).
        n_samples: global sample count B. ``None`` (DINO): ``N * world_size``. A tensor (iBOT): this
            rank's count, all-reduced here (on a copy: the caller's tensor is not modified, unlike the
            release, which all-reduces it in place). An int is used as the global count as is.
    Returns:
        targets [N, K] float32; rows sum to 1.

    As in the release, ``exp`` is taken without subtracting a maximum: logits above ~88 * teacher_temp
    overflow to inf and give NaN targets. That is not checked here (it would need a device sync); it shows
    up as a non-finite loss, which the trainer checks.
    """
    teacher_temp = check_temperature("teacher_temp", teacher_temp)
    if teacher_output.dim() != 2:
        raise ValueError(f"sinkhorn_knopp expects teacher logits [N, K], got shape {tuple(teacher_output.shape)}")
    if n_iterations < 0:
        raise ValueError(f"n_iterations must be >= 0, got {n_iterations}")
    q = torch.exp(teacher_output.float() / teacher_temp).t()  # [K, N]
    n_prototypes = q.shape[0]
    if n_samples is None:
        total = q.shape[1] * distributed.get_global_size()
    elif isinstance(n_samples, torch.Tensor):
        total = n_samples.detach().clone()
        distributed.all_reduce(total)
    else:
        total = n_samples

    sum_q = q.sum()
    distributed.all_reduce(sum_q)
    q /= sum_q
    for _ in range(n_iterations):
        row_sums = q.sum(dim=1, keepdim=True)  # [K, 1], prototype mass over all ranks' samples
        distributed.all_reduce(row_sums)
        q /= row_sums
        q /= n_prototypes
        q /= q.sum(dim=0, keepdim=True)  # [1, N], per-sample mass (local: each column lives on one rank)
        q /= total
    q *= total
    return q.t()  # [N, K]


class CenteredTeacherLoss(nn.Module):
    """Base for the DINO and iBOT losses: the ``center`` buffer and its deferred EMA update.

    ``update_center`` sums the batch statistic, packs it with its row count and launches an
    asynchronous all-reduce; the centre is folded in, ``center * m + mean * (1 - m)`` with
    ``mean = global sum / global count``, at the next :meth:`apply_center_update`, which
    ``softmax_center_teacher`` calls first. With equal per-rank batches the global count is
    ``n * world_size`` as in the release; ranks whose batch is empty contribute nothing, and a step
    where every rank is empty leaves the centre unchanged (the release would make it NaN).

    A pending update is also applied before ``state_dict()`` saves ``center`` (so a checkpoint taken
    between ``update_center`` and the next call holds the same centre the next step would use), and
    dropped by ``load_state_dict()`` (a loaded centre replaces whatever was pending).

    It also keeps what both losses share: ``lean_cross_entropy`` (chunked cross-entropy), ``check_finite``
    (raise on a non-finite loss) and the check of the prototype count (the ``prototypes_arg`` attribute).
    """

    #: the constructor argument holding the number of prototypes K (named in shape errors)
    prototypes_arg = "out_dim"

    def __init__(
        self,
        center_shape: tuple[int, ...],
        student_temp: float,
        center_momentum: float,
        lean_cross_entropy: bool = True,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        self.student_temp = check_temperature("student_temp", student_temp)
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum!r}")
        self.center_momentum = float(center_momentum)
        self.lean_cross_entropy = lean_cross_entropy
        self.check_finite = check_finite
        self.register_buffer("center", torch.zeros(center_shape))
        self._pending: torch.Tensor | None = None  # [K + 1]: batch sum, then row count
        self._pending_work = None

    def _check_prototypes(self, tensor: torch.Tensor) -> None:
        """Raise unless the last dimension of ``tensor`` is the number of prototypes the loss was built for."""
        n_prototypes = getattr(self, self.prototypes_arg)
        if tensor.shape[-1] != n_prototypes:
            raise ValueError(
                f"{type(self).__name__} was built for {n_prototypes} prototypes but got a tensor of shape "
                f"{tuple(tensor.shape)}; set {self.prototypes_arg} to the head's out_dim"
            )

    @property
    def has_pending_center_update(self) -> bool:
        """True between ``update_center`` and the next ``apply_center_update``."""
        return self._pending is not None

    @torch.no_grad()
    def _start_center_update(self, batch_sum: torch.Tensor, count: int) -> None:
        """Launch the all-reduce of ``batch_sum`` [K] (float32) and its row ``count``; apply later."""
        if self._pending is not None:
            # The release would drop the earlier update; folding it in first loses nothing.
            self.apply_center_update()
        packed = torch.cat([batch_sum.float().reshape(-1), batch_sum.new_full((1,), count, dtype=torch.float32)])
        self._pending_work = distributed.all_reduce(packed, async_op=True)
        self._pending = packed

    def reduce_center_update(self, *args, **kwargs) -> None:
        """The release's name for what ``update_center`` does first (there, all of it): start the centre's
        all-reduce; :meth:`apply_center_update` folds it in."""
        self.update_center(*args, **kwargs)

    @torch.no_grad()
    def apply_center_update(self) -> None:
        """Wait for the pending all-reduce (if any) and fold it into ``center``; a no-op otherwise."""
        if self._pending is None:
            return
        self._pending_work.wait()
        batch_sum, count = self._pending[:-1], self._pending[-1]
        batch_mean = (batch_sum / count.clamp(min=1.0)).reshape(self.center.shape).to(self.center.dtype)
        m = self.center_momentum
        updated = self.center * m + batch_mean * (1 - m)
        self.center.copy_(torch.where(count > 0, updated, self.center))
        self._pending = None
        self._pending_work = None

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self.apply_center_update()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        if self._pending is not None:
            self._pending_work.wait()  # the collective was launched on every rank; let it finish
            self._pending = None
            self._pending_work = None
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors)
