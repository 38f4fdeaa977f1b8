"""Teacher strategies: what differs between SSL training, distillation and multi-student distillation.

A meta-architecture (:class:`dinov2.train.ssl_meta_arch.SSLMetaArch`) owns the student, the losses and the one
training step; its :class:`TeacherStrategy` decides everything about the teacher:

- :meth:`~TeacherStrategy.build`: the teacher-side modules, registered on the meta-architecture under their names
  (``teacher``; distillation also ``model_ema``), which fixes the state-dict keys;
- :meth:`~TeacherStrategy.batch_and_targets`: the batch the student trains on and its teacher targets (the crop
  swap, :func:`swap_global_crops`, is written once here);
- :meth:`~TeacherStrategy.after_optimizer_step`: the EMA of the student (the teacher itself in SSL, the spare
  ``model_ema`` beside a frozen teacher);
- :meth:`~TeacherStrategy.eval_exports` and :meth:`~TeacherStrategy.checkpoint_state`: what evaluation exports and
  training checkpoints hold;
- :meth:`~TeacherStrategy.parallel_roles`: which module groups ``dinov2/train/parallelize.py`` wraps, and how.

Strategies: :class:`EMATeacher` (SSL, here); ``FrozenTeacher`` (distillation,
:mod:`dinov2.train.distillation.meta_arch`) and ``SharedFrozenTeacher`` (several students sharing one frozen teacher,
:mod:`dinov2.train.distillation.multi_meta_arch`). The registry (``dinov2/train/meta_archs.py``) maps each
``MODEL.META_ARCHITECTURE`` to a meta-architecture with its strategy.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from dinov2.loss.teacher_centering import TeacherCentering
from dinov2.train.batch import N_GLOBAL_CROPS, Batch, TeacherTargets
from dinov2.train.heads import heads_for
from dinov2.train.parallelize import ParallelRole

__all__ = ["EMATeacher", "TeacherStrategy", "centred_targets", "ema_copy", "swap_global_crops", "teacher_logits"]


def swap_global_crops(x: torch.Tensor) -> torch.Tensor:
    """``[2B, ...]`` crop-major -> crop 1's rows, then crop 0's: each student crop is matched with the *other*
    crop's teacher output (DINO's cross-view prediction)."""
    crop0, crop1 = x.chunk(N_GLOBAL_CROPS)
    return torch.cat((crop1, crop0))


@torch.no_grad()
def teacher_logits(teacher: nn.ModuleDict, batch: Batch, with_ibot: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Teacher on the global crops: (swapped class-token logits ``[2B, K]``, iBOT logits ``[M, K']`` or None).

    With a shared head (no ``ibot_head``) the class tokens and the masked patch tokens go through the DINO head in
    one call.
    """
    out = teacher.backbone(batch.global_crops, is_training=True)
    cls_tokens = swap_global_crops(out["x_norm_clstoken"])  # [2B, D]
    if not with_ibot:
        return teacher.dino_head(cls_tokens), None
    patches = out["x_norm_patchtokens"].flatten(0, 1).index_select(0, batch.mask_indices)  # [M, D]
    if "ibot_head" in teacher:
        return teacher.dino_head(cls_tokens), teacher.ibot_head(patches)
    n_cls = cls_tokens.shape[0]
    logits = teacher.dino_head(torch.cat((cls_tokens, patches)))
    return logits[:n_cls], logits[n_cls:]


def centred_targets(
    centering: TeacherCentering,
    cls_logits: torch.Tensor,
    patch_logits: torch.Tensor | None,
    batch: Batch,
    teacher_temp: float,
) -> TeacherTargets:
    """Centred (or Sinkhorn-Knopp) probabilities of the teacher's logits."""
    dino = centering.dino_targets(cls_logits, teacher_temp)
    ibot = None
    if patch_logits is not None:
        ibot = centering.ibot_targets(patch_logits, teacher_temp, batch.n_masked_patches)
    return TeacherTargets(dino=dino.view(N_GLOBAL_CROPS, -1, dino.shape[-1]), ibot=ibot)


def ema_copy(student: nn.ModuleDict, backbone: nn.Module, heads: dict[str, nn.Module]) -> nn.ModuleDict:
    """A copy of ``student`` assembled from ``backbone`` and ``heads`` of the same architecture, loaded with the
    student's weights, without gradients: the starting point of an EMA of the student."""
    copy = nn.ModuleDict({"backbone": backbone, **heads})
    copy.load_state_dict(student.state_dict())
    copy.requires_grad_(False)
    return copy


class TeacherStrategy:
    """The teacher of a meta-architecture (see the module docstring). Holds no modules: those it builds are
    registered on the meta-architecture, so state-dict keys, ``.to()`` and parallelism see them there. ``arch`` is
    the :class:`dinov2.train.ssl_meta_arch.SSLMetaArch` the strategy serves."""

    #: attribute of the meta-architecture that follows the student by EMA (``teacher`` in SSL)
    student_ema_name = "teacher"
    #: whether the student's global crops are masked (iBOT); distillation may train an unmasked student
    mask_student = True
    #: process group the student (and its EMA) is sharded over; None: every process of the job
    student_group: Any = None

    @classmethod
    def check_inputs(cls, cfg: DictConfig) -> None:
        """What the strategy checks from the config and its input files alone, before a process group, a log or an
        output folder exists (command lines turn a failure into a usage error). Nothing for an EMA teacher."""

    def build(self, arch: nn.Module, template: nn.Module | None) -> dict[str, nn.ModuleDict]:
        """The teacher-side modules by attribute name, in registration order (``teacher`` among them), built after
        the student; ``template`` is a second student backbone (``build_model_from_cfg``'s teacher)."""
        raise NotImplementedError

    def batch_and_targets(self, arch: nn.Module, loaded: Batch, teacher_temp: float) -> tuple[Batch, TeacherTargets]:
        """(the batch the student trains on, its teacher targets) from the batch this process loaded."""
        batch = self.student_batch(loaded)
        return batch, arch.teacher_targets(batch, teacher_temp)

    def student_batch(self, loaded: Batch) -> Batch:
        """The batch the student trains on, when it is made from the loaded one alone (here: unchanged)."""
        return loaded

    @torch.no_grad()
    def targets(self, arch: nn.Module, batch: Batch, teacher_temp: float) -> TeacherTargets:
        """Teacher targets for ``batch``: the teacher's logits (crop swap, heads), centred."""
        cls_logits, patch_logits = teacher_logits(arch.teacher, batch, arch.do_ibot)
        return centred_targets(arch.centering, cls_logits, patch_logits, batch, teacher_temp)

    def after_optimizer_step(self, arch: nn.Module, momentum: float) -> None:
        """The EMA of the student with this iteration's ``momentum``."""
        arch.update_teacher(momentum)

    def eval_exports(self, arch: nn.Module) -> dict[str, nn.Module]:
        """File name -> module exported as ``{"teacher": state_dict}`` for the eval scripts."""
        return {"teacher_checkpoint.pth": arch.student_ema()}

    def checkpoint_state(self, arch: nn.Module) -> dict[str, object]:
        """What training checkpoints hold besides the optimizer (values follow ``Checkpointer``'s ``state``)."""
        return {"model": arch}

    def parallel_roles(self, arch: nn.Module, names: list[str]) -> dict[str, ParallelRole]:
        """The student (trained), then the teacher-side modules ``names`` (inference only, ``compute_precision
        .teacher``); the student's EMA is sharded like the student, anything else over the whole job."""
        roles = {
            "student": ParallelRole(arch.student, precision_section="student", trains=True, group=self.student_group)
        }
        for name in names:
            group = self.student_group if name == self.student_ema_name else None
            roles[name] = ParallelRole(getattr(arch, name), precision_section="teacher", trains=False, group=group)
        return roles

    def images_per_process(self, cfg: DictConfig) -> int:
        """Images one iteration trains on in each process (the throughput log multiplies by the process count)."""
        return cfg.train.batch_size_per_gpu


class EMATeacher(TeacherStrategy):
    """DINOv2's teacher: an EMA of the student (backbone and heads), which starts as its exact copy and is
    updated after each optimizer step. The released checkpoints and exports hold it as ``teacher``."""

    def __init__(self, cfg: DictConfig | None = None) -> None:
        pass

    def build(self, arch: nn.Module, template: nn.Module | None) -> dict[str, nn.ModuleDict]:
        # Fresh heads, then the student's weights (the release's order of random draws).
        return {"teacher": ema_copy(arch.student, template, heads_for(arch.cfg).build(arch.embed_dim))}
