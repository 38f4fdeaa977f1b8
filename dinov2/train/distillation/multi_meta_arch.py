"""Several students distilled at once from one frozen teacher (DINOv3's ``MultiDistillationMetaArch``).

Each student trains in its process subgroup (``multidistillation.students[i].ranks_range``; set up by
:mod:`dinov2.train.distillation.multi_setup`); every student trains on the whole global batch
(``multidistillation.global_batch_size``). One step, on every rank:

1. the rank's loader gave it its own ``ceil(G / world)`` images (the data stream is sharded over the whole job);
2. the frozen teacher (sharded over the whole job) runs on them once, and its heads stop at the L2-normalised
   bottleneck (:class:`dinov2.train.distillation.teacher.TeacherHead`);
3. crops, masks and bottleneck vectors are gathered over the job and each rank keeps its share of the global batch
   within its subgroup (:func:`dinov2.distributed.subgroups.broadcast_to_subgroups`): only bottleneck vectors
   travel, never prototype logits;
4. the teacher's prototype layers, Sinkhorn-Knopp over the subgroup, then the student step (the one of
   :class:`dinov2.train.ssl_meta_arch.SSLMetaArch`) on the student's share.

:class:`MultiDistillationMetaArch` is :class:`dinov2.train.ssl_meta_arch.SSLMetaArch` with the
:class:`SharedFrozenTeacher` strategy (a :class:`~dinov2.train.distillation.meta_arch.FrozenTeacher` whose outputs
are shared by the students).

So every student gets the same teacher targets (up to the order of reductions) and the same iBOT positions.
Deviation from DINOv3, deliberate: the masks are drawn by the rank that loads an image and travel with it, so all
students share them (DINOv3 draws them per student rank); a student's step then equals a single-student step on
the global batch with those masks.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from dinov2 import distributed
from dinov2.distributed.subgroups import (
    ProcessSubgroup,
    broadcast_to_subgroups,
    current_subgroup,
    whole_job,
    world_rank,
    world_size,
)
from dinov2.train.batch import N_GLOBAL_CROPS, Batch, TeacherTargets, batch_from_crops
from dinov2.train.distillation.meta_arch import DistillationMetaArch, FrozenTeacher
from dinov2.train.rank_agreement import run_agreed
from dinov2.train.ssl_meta_arch import SSLMetaArch
from dinov2.train.teachers import centred_targets, swap_global_crops

__all__ = ["MultiDistillationMetaArch", "SharedFrozenTeacher", "batch_from_crops"]


class StudentProgress:
    """Checkpoint entry counting a student's completed steps, so that students resumed at different iterations
    (e.g. one folder lost its newest checkpoint) stop with a message instead of waiting on each other forever."""

    def __init__(self) -> None:
        self.steps = 0

    def state_dict(self) -> dict[str, int]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.steps = int(state["steps"])


def _student_name(cfg: DictConfig, rank: int) -> str:
    """The name of the student whose ``ranks_range`` holds job rank ``rank``."""
    for student in cfg.multidistillation.students:
        first, last = student.ranks_range
        if first <= rank < last:
            return str(student.name)
    return f"rank {rank}"  # ranges are checked at set-up; a hand-built config may still miss a rank


class SharedFrozenTeacher(FrozenTeacher):
    """One frozen teacher, sharded over the whole job, whose targets this process's student (in its subgroup)
    shares with the other students (see the module docstring)."""

    def __init__(self, cfg: DictConfig) -> None:
        if not cfg.multidistillation.enabled:
            raise ValueError("MultiDistillationMetaArch needs multidistillation.enabled=true (and its students)")
        super().__init__(cfg)
        self.global_batch_size = int(cfg.multidistillation.global_batch_size)
        self.subgroup: ProcessSubgroup = current_subgroup()
        self.student_name = _student_name(cfg, world_rank())
        self.student_group = self.subgroup.group  # the student and its EMA are sharded over the subgroup
        self.progress = StudentProgress()
        self._progress_checked = False

    @classmethod
    def check_inputs(cls, cfg: DictConfig) -> None:
        """Nothing from the launch config alone: each student's config and the teacher are checked at set-up
        (``multi_setup``), where the student files are read."""

    def images_per_process(self, cfg: DictConfig) -> int:
        """This process's share of the global batch within its student's subgroup."""
        return self.global_batch_size // self.subgroup.size

    def after_optimizer_step(self, arch: SSLMetaArch, momentum: float) -> None:
        super().after_optimizer_step(arch, momentum)
        self.progress.steps += 1

    def checkpoint_state(self, arch: SSLMetaArch) -> dict[str, object]:
        return {**super().checkpoint_state(arch), "student_progress": self.progress}

    def batch_and_targets(self, arch: SSLMetaArch, loaded: Batch, teacher_temp: float) -> tuple[Batch, TeacherTargets]:
        """Teacher once per rank on its loaded images; this student's share of the global batch and its targets."""
        if not self._progress_checked:
            self._check_progress(loaded.global_crops.device)
        return self.shared_targets(arch, loaded, teacher_temp)

    def _share(self, tensor: torch.Tensor, n_crops: int) -> torch.Tensor:
        """``[n_crops * n, ...]`` crop-major per rank -> this rank's ``[n_crops * b, ...]`` of the global batch."""
        per_crop = tensor.unflatten(0, (n_crops, -1))  # [n_crops, n, ...]
        return broadcast_to_subgroups(per_crop, 1, self.global_batch_size, self.subgroup).flatten(0, 1)

    @torch.no_grad()
    def shared_targets(self, arch: SSLMetaArch, loaded: Batch, teacher_temp: float) -> tuple[Batch, TeacherTargets]:
        """(this student's batch, its teacher targets) from the images this rank loaded."""
        teacher = arch.teacher
        out = teacher.backbone(loaded.global_crops, is_training=True)
        cls_tokens = swap_global_crops(out["x_norm_clstoken"])  # [2n, D]
        cls_bottleneck = teacher.dino_head(cls_tokens, no_last_layer=True)  # [2n, C]
        n_local = loaded.n_local_crops
        batch = batch_from_crops(
            self._share(loaded.global_crops, N_GLOBAL_CROPS),
            self._share(loaded.local_crops, n_local) if n_local else loaded.local_crops[:0],
            self._share(loaded.masks.to(torch.uint8), N_GLOBAL_CROPS),  # uint8: gloo gathers no bool
        )
        batch = self.student_batch(batch)
        cls_logits = teacher.dino_head(self._share(cls_bottleneck, N_GLOBAL_CROPS), only_last_layer=True)
        patch_logits = None
        if arch.do_ibot:
            head = teacher["ibot_head" if "ibot_head" in teacher else "dino_head"]
            patches = head(out["x_norm_patchtokens"], no_last_layer=True)  # [2n, N, C'] every patch: positions
            patches = self._share(patches, N_GLOBAL_CROPS).flatten(0, 1)  # [2b * N, C'] are known after the gather
            patch_logits = head(patches.index_select(0, batch.mask_indices), only_last_layer=True)  # [M, K']
        return batch, centred_targets(arch.centering, cls_logits, patch_logits, batch, teacher_temp)

    def stop_together_if_not_finite(self, losses: dict[str, torch.Tensor]) -> None:
        """Collective over the whole job: raise on every rank when any student's loss terms are not finite.

        A student that stopped alone would leave the others waiting in the teacher's collectives until the
        timeout. Called after the backward, before the optimizer step: no weights change and no checkpoint is
        written at this iteration, so every student's last checkpoint stays intact.
        """
        values = torch.stack([value.float() for value in losses.values()])  # [terms], on the training device
        flag = (~torch.isfinite(values)).any().float().reshape(1)  # one small all-reduce per step
        with whole_job():
            distributed.all_reduce(flag)
            if flag.item() == 0:
                return
            terms = dict(zip(losses, values.tolist()))  # details only on failure
            bad = {name: value for name, value in terms.items() if not math.isfinite(value)}
            iteration = self.progress.steps  # completed steps: the iteration that failed (all students agree)

            def check() -> None:
                if bad:
                    raise FloatingPointError(f"student {self.student_name!r}: {bad} (all terms: {terms})")

            _, failures, _ = run_agreed(check)
        found: dict[str, str] = {}  # one line per student (its first failing rank's)
        for failure in failures:
            text = failure.message.split(": ", 1)[1]  # "FloatingPointError: student 'name': ..."
            found.setdefault(text.split(": ", 1)[0], text)
        students = "; ".join(found.values())
        raise FloatingPointError(
            f"non-finite loss at iteration {iteration} of this multi-distillation run: {students}. Every "
            "student stops here; their checkpoints up to the previous one are intact. Lower optim.base_lr of that "
            "student, check the data, or use fp32/bf16 instead of fp16 (compute_precision.*.mixed_precision)"
        )

    def _check_progress(self, device: torch.device) -> None:
        """Every student must resume at the same iteration (all of them meet in the teacher's collectives)."""
        self._progress_checked = True
        if world_size() == 1:
            return
        steps = torch.tensor([self.progress.steps], device=device)
        everyone = [torch.empty_like(steps) for _ in range(world_size())]
        dist.all_gather(everyone, steps)  # the whole job
        found = sorted({int(t) for t in everyone})
        if len(found) > 1:
            raise RuntimeError(
                f"the students of this multi-distillation run resumed after different numbers of steps {found}: every "
                "student folder must hold a checkpoint of the same iteration; remove the newer checkpoints (or "
                "restore the missing ones) so that all students resume together"
            )


class MultiDistillationMetaArch(DistillationMetaArch):
    """A distillation meta-architecture with a :class:`SharedFrozenTeacher`: one of several students of a
    multi-distillation run."""

    default_teacher = SharedFrozenTeacher

    @property
    def subgroup(self) -> ProcessSubgroup:
        """This student's process subgroup."""
        return self.teacher_strategy.subgroup

    @property
    def progress(self) -> StudentProgress:
        return self.teacher_strategy.progress

    def forward_backward(self, images, teacher_temp: float) -> dict[str, torch.Tensor]:
        """The student's step, then a job-wide check that every student's loss is finite (all stop together)."""
        losses = super().forward_backward(images, teacher_temp)
        self.teacher_strategy.stop_together_if_not_finite(losses)
        return losses

    def shared_teacher_targets(self, loaded: Batch, teacher_temp: float) -> tuple[Batch, TeacherTargets]:
        """(this student's batch, its teacher targets) from the images this rank loaded."""
        return self.teacher_strategy.shared_targets(self, loaded, teacher_temp)
