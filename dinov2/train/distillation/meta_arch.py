"""Distillation of a frozen, larger teacher into a student: the SSL step with another teacher (paper §5).

:class:`DistillationMetaArch` is :class:`dinov2.train.ssl_meta_arch.SSLMetaArch` with the :class:`FrozenTeacher`
strategy, which differs from SSL's EMA teacher in four ways:

1. a **frozen teacher** of its own architecture and trained heads, loaded from ``distillation.checkpoint_path``
   (:mod:`dinov2.train.distillation.teacher`): eval mode, no gradients, not in the optimizer, never updated;
2. a **spare EMA of the student** (``model_ema``: backbone and heads, the usual momentum schedule), which is the
   final model: it is exported as ``eval/<it>/teacher_checkpoint.pth`` = ``{"teacher": <student EMA>}`` (DINOv3's
   convention: every evaluation command and hub constructor takes it unchanged), next to
   ``student_checkpoint.pth`` with the raw student in the same format;
3. **no masking** of the student's global crops (``distillation.mask_student: false``; its mask token gets no
   gradient) while iBOT still compares patch tokens: at the sampled mask positions (``ibot_tokens: masked``,
   DINOv3's code) or at every patch (``all``);
4. **no stochastic depth** (``student.drop_path_rate: 0`` in the recipes; a warning otherwise).

Teacher targets (crop swap, heads, Sinkhorn-Knopp or softmax centring), the student forward, the loss terms and
their weights are the SSL step's. Training checkpoints hold the student, its EMA, the loss centres and the teacher
file's fingerprint, never the teacher (a ViT-g is ~4.5 GB); a resumed run reloads the teacher and refuses one whose
file changed.
"""

from __future__ import annotations

import copy

from omegaconf import DictConfig
from torch import nn

from dinov2.train.batch import Batch, all_patch_batch
from dinov2.train.distillation.teacher import TeacherFileCheck, TeacherPlan, build_teacher, plan_teacher
from dinov2.train.ssl_meta_arch import SSLMetaArch
from dinov2.train.teachers import TeacherStrategy, ema_copy

__all__ = ["DistillationMetaArch", "FrozenTeacher", "all_patch_batch"]


class FrozenTeacher(TeacherStrategy):
    """A frozen pretrained teacher (backbone and heads) beside the student and its EMA ``model_ema``."""

    student_ema_name = "model_ema"

    def __init__(self, cfg: DictConfig) -> None:
        if not cfg.distillation.enabled:
            raise ValueError(
                f"MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE} has a frozen teacher: it needs "
                "distillation.enabled=true (and the teacher's keys)"
            )
        # Every check that needs only the configs and the teacher file's key names, before any model is built.
        self.plan: TeacherPlan = plan_teacher(cfg)
        self.mask_student = bool(cfg.distillation.mask_student)
        self.ibot_tokens = cfg.distillation.ibot_tokens
        self.teacher_file: TeacherFileCheck | None = None

    @classmethod
    def check_inputs(cls, cfg: DictConfig) -> None:
        """The teacher config and file (:func:`plan_teacher`: paths, keys, shapes; no model is built)."""
        if cfg.distillation.enabled:
            plan_teacher(cfg)

    def build(self, arch: SSLMetaArch, template: nn.Module | None) -> dict[str, nn.ModuleDict]:
        """``model_ema`` (the template backbone with copies of the student's heads), then the frozen teacher."""
        if not self.mask_student:
            # An unmasked student never uses its mask token: freeze it, so that it is not in the optimizer either
            # (AdamW would hold no state for it, and a resumed optimizer would expect some).
            mask_token = getattr(arch.student.backbone, "mask_token", None)  # a ConvNeXt student has none
            if mask_token is not None:
                mask_token.requires_grad_(False)
        heads = {k: copy.deepcopy(v) for k, v in arch.student.items() if k != "backbone"}
        model_ema = ema_copy(arch.student, template, heads)
        teacher = build_teacher(self.plan)
        self.teacher_file = TeacherFileCheck(self.plan.path)
        return {"model_ema": model_ema, "teacher": teacher}

    def student_batch(self, loaded: Batch) -> Batch:
        """The batch whose mask fields select the iBOT positions: as collated, or every patch (``all``)."""
        return all_patch_batch(loaded) if self.ibot_tokens == "all" else loaded

    def eval_exports(self, arch: SSLMetaArch) -> dict[str, nn.Module]:
        """``teacher_checkpoint.pth``: the student EMA, the final model; ``student_checkpoint.pth``: the student."""
        return {"teacher_checkpoint.pth": arch.model_ema, "student_checkpoint.pth": arch.student}

    def checkpoint_state(self, arch: SSLMetaArch) -> dict[str, object]:
        """Student, student EMA and loss centres (never the teacher), and the teacher file's fingerprint."""
        checkpointed = nn.ModuleDict(
            {
                "student": arch.student,
                "model_ema": arch.model_ema,
                "dino_loss": arch.dino_loss,
                "ibot_patch_loss": arch.ibot_patch_loss,
            }
        )
        return {"model": checkpointed, "distillation_teacher": self.teacher_file}


class DistillationMetaArch(SSLMetaArch):
    """SSLMetaArch with a :class:`FrozenTeacher` (registered as ``DistillationMetaArch``; also built for
    ``SSLMetaArch`` with ``distillation.enabled``)."""

    default_teacher = FrozenTeacher

    def ibot_batch(self, batch: Batch) -> Batch:
        """The batch whose mask fields select the iBOT positions (:meth:`FrozenTeacher.student_batch`)."""
        return self.teacher_strategy.student_batch(batch)
