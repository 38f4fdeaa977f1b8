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
4. the teacher's prototype layers, Sinkhorn-Knopp over the subgroup, then the student step of
   :class:`DistillationMetaArch` on the student's share.

So every student gets the same teacher targets (up to the order of reductions) and the same iBOT positions.
Deviation from DINOv3, deliberate: the masks are drawn by the rank that loads an image and travel with it, so all
students share them (DINOv3 draws them per student rank); a student's step then equals a single-student step on
the global batch with those masks.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from dinov2.distributed.subgroups import ProcessSubgroup, broadcast_to_subgroups, current_subgroup, world_size
from dinov2.train.distillation.meta_arch import DistillationMetaArch
from dinov2.train.parallelize import ParallelRole
from dinov2.train.ssl_meta_arch import N_GLOBAL_CROPS, Batch, TeacherTargets

__all__ = ["MultiDistillationMetaArch", "batch_from_crops"]


def batch_from_crops(global_crops: torch.Tensor, local_crops: torch.Tensor, masks: torch.Tensor) -> Batch:
    """A :class:`Batch` from crop-major crops and masks ``[2B, N]``, with the collate's mask indices and weights."""
    masks = masks.bool()
    counts = masks.sum(dim=-1, keepdim=True).clamp(min=1).float()  # [2B, 1] masked tokens per image
    indices = masks.flatten().nonzero().flatten()  # [M], row-major like collate_data_and_cast
    return Batch(
        global_crops=global_crops,
        local_crops=local_crops,
        masks=masks,
        mask_indices=indices,
        masks_weight=(1.0 / counts).expand_as(masks)[masks],
        n_masked_patches=torch.tensor([indices.numel()], device=masks.device),
    )


class StudentProgress:
    """Checkpoint entry counting a student's completed steps, so that students resumed at different iterations
    (e.g. one folder lost its newest checkpoint) stop with a message instead of waiting on each other forever."""

    def __init__(self) -> None:
        self.steps = 0

    def state_dict(self) -> dict[str, int]:
        return {"steps": self.steps}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.steps = int(state["steps"])


class MultiDistillationMetaArch(DistillationMetaArch):
    """One of several students of a multi-distillation run (see the module docstring)."""

    def __init__(self, cfg: DictConfig):
        if not cfg.multidistillation.enabled:
            raise ValueError("MultiDistillationMetaArch needs multidistillation.enabled=true (and its students)")
        super().__init__(cfg)
        self.global_batch_size = int(cfg.multidistillation.global_batch_size)
        self.subgroup: ProcessSubgroup = current_subgroup()
        self.progress = StudentProgress()
        self._progress_checked = False

    def parallel_roles(self) -> dict[str, ParallelRole]:
        """The student and its EMA are sharded over the student's subgroup, the teacher over the whole job."""
        roles = super().parallel_roles()
        for name in ("student", "model_ema"):
            role = roles[name]
            roles[name] = ParallelRole(role.modules, role.precision_section, role.trains, group=self.subgroup.group)
        return roles

    def checkpoint_state(self) -> dict[str, object]:
        return {**super().checkpoint_state(), "student_progress": self.progress}

    def images_per_process(self) -> int:
        """This process's share of the global batch within its student's subgroup."""
        return self.global_batch_size // self.subgroup.size

    def after_optimizer_step(self, *, momentum: float) -> None:
        super().after_optimizer_step(momentum=momentum)
        self.progress.steps += 1

    def forward_backward(self, images: dict | Batch, teacher_temp: float) -> dict[str, torch.Tensor]:
        """Teacher once per rank on its loaded images, then this student's step on its share of the global batch."""
        loaded = images if isinstance(images, Batch) else Batch.from_collated(images, self.device)
        if not self._progress_checked:
            self._check_progress(loaded.global_crops.device)
        with self.precision.autocast(self.device.type):
            batch, targets = self.shared_teacher_targets(loaded, teacher_temp)
            outputs = self.student_outputs(batch)
            loss_dict, loss = self.loss_terms(outputs, targets, batch)
        self.backprop_loss(loss)
        return {k: v.detach() for k, v in loss_dict.items()}

    def _share(self, tensor: torch.Tensor, n_crops: int) -> torch.Tensor:
        """``[n_crops * n, ...]`` crop-major per rank -> this rank's ``[n_crops * b, ...]`` of the global batch."""
        per_crop = tensor.unflatten(0, (n_crops, -1))  # [n_crops, n, ...]
        return broadcast_to_subgroups(per_crop, 1, self.global_batch_size, self.subgroup).flatten(0, 1)

    @torch.no_grad()
    def shared_teacher_targets(self, loaded: Batch, teacher_temp: float) -> tuple[Batch, TeacherTargets]:
        """(this student's batch, its teacher targets) from the images this rank loaded."""
        out = self.teacher.backbone(loaded.global_crops, is_training=True)
        crop0, crop1 = out["x_norm_clstoken"].chunk(N_GLOBAL_CROPS)
        cls_bottleneck = self.teacher.dino_head(torch.cat((crop1, crop0)), no_last_layer=True)  # swapped, [2n, C]
        n_local = loaded.n_local_crops
        batch = batch_from_crops(
            self._share(loaded.global_crops, N_GLOBAL_CROPS),
            self._share(loaded.local_crops, n_local) if n_local else loaded.local_crops[:0],
            self._share(loaded.masks.to(torch.uint8), N_GLOBAL_CROPS),  # uint8: gloo gathers no bool
        )
        batch = self.ibot_batch(batch)
        cls_logits = self.teacher.dino_head(self._share(cls_bottleneck, N_GLOBAL_CROPS), only_last_layer=True)
        patch_logits = None
        if self.do_ibot:
            head = self.teacher[self.teacher_ibot_head]
            patches = head(out["x_norm_patchtokens"], no_last_layer=True)  # [2n, N, C'] every patch: positions
            patches = self._share(patches, N_GLOBAL_CROPS).flatten(0, 1)  # [2b * N, C'] are known after the gather
            patch_logits = head(patches.index_select(0, batch.mask_indices), only_last_layer=True)  # [M, K']
        return batch, self.targets_from_logits(cls_logits, patch_logits, batch, teacher_temp)

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
