"""Distillation of a frozen, larger teacher into a student: the SSL step with four changes (paper §5).

:class:`DistillationMetaArch` is :class:`dinov2.train.ssl_meta_arch.SSLMetaArch` with

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
import dataclasses

import torch
from omegaconf import DictConfig
from torch import nn

from dinov2.train.distillation.teacher import TeacherFileCheck, TeacherPlan, build_teacher, plan_teacher
from dinov2.train.parallelize import ParallelRole
from dinov2.train.ssl_meta_arch import N_GLOBAL_CROPS, Batch, SSLMetaArch, TeacherTargets

__all__ = ["DistillationMetaArch", "all_patch_batch"]


def all_patch_batch(batch: Batch) -> Batch:
    """``batch`` with every patch token of the global crops as an iBOT position (``ibot_tokens: all``).

    Each image then weighs its ``N`` tokens ``1 / N``, so the iBOT term is the per-image mean over all tokens,
    averaged over the ``2B`` global crops (the masked term's normalisation with a full mask).
    """
    masks = torch.ones_like(batch.masks, dtype=torch.bool)  # [2B, N]
    n_total = masks.numel()
    return dataclasses.replace(
        batch,
        masks=masks,
        mask_indices=torch.arange(n_total, device=masks.device),
        masks_weight=torch.full((n_total,), 1.0 / masks.shape[1], device=masks.device),
        n_masked_patches=torch.tensor([n_total], device=masks.device),
    )


class DistillationMetaArch(SSLMetaArch):
    """Student, its EMA (``model_ema``) and a frozen external teacher (see the module docstring)."""

    def __init__(self, cfg: DictConfig):
        if not cfg.distillation.enabled:
            raise ValueError(f"{type(self).__name__} needs distillation.enabled=true (and the teacher's keys)")
        # Every check that needs only the configs and the teacher file's key names, before any model is built.
        self.teacher_plan: TeacherPlan = plan_teacher(cfg)
        super().__init__(cfg)
        self.mask_student = bool(cfg.distillation.mask_student)
        self.ibot_tokens = cfg.distillation.ibot_tokens
        if not self.mask_student:
            # An unmasked student never uses its mask token: freeze it, so that it is not in the optimizer either
            # (AdamW would hold no state for it, and a resumed optimizer would expect some).
            self.student.backbone.mask_token.requires_grad_(False)

    # ----------------------------------------------------------------------------------------------------------
    # Construction
    # ----------------------------------------------------------------------------------------------------------

    def build_teacher(self, cfg: DictConfig, teacher_backbone: nn.Module | None) -> nn.ModuleDict:
        """The frozen teacher; also builds ``model_ema``, the student's EMA, from the template backbone."""
        self.model_ema = nn.ModuleDict(
            {"backbone": teacher_backbone, **{k: copy.deepcopy(v) for k, v in self.student.items() if k != "backbone"}}
        )
        self.model_ema.load_state_dict(self.student.state_dict())
        self.model_ema.requires_grad_(False)
        teacher = build_teacher(self.teacher_plan)
        self.teacher_file = TeacherFileCheck(self.teacher_plan.path)
        self.teacher_ibot_head = "ibot_head" if "ibot_head" in teacher else "dino_head"
        return teacher

    # ----------------------------------------------------------------------------------------------------------
    # The step
    # ----------------------------------------------------------------------------------------------------------

    def forward_backward(self, images: dict | Batch, teacher_temp: float) -> dict[str, torch.Tensor]:
        batch = images if isinstance(images, Batch) else Batch.from_collated(images, self.device)
        return super().forward_backward(self.ibot_batch(batch), teacher_temp)

    def ibot_batch(self, batch: Batch) -> Batch:
        """The batch whose mask fields select the iBOT positions: as collated, or every patch (``all``)."""
        return all_patch_batch(batch) if self.ibot_tokens == "all" else batch

    def student_masks(self, batch: Batch) -> torch.Tensor | None:
        """No masking of the student's global crops unless ``distillation.mask_student``."""
        return batch.masks if self.mask_student else None

    @torch.no_grad()
    def teacher_logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frozen teacher on the global crops: (swapped class-token logits ``[2B, K]``, iBOT logits ``[M, K']``).

        As in the SSL step: crop 1's output is crop 0's target and vice versa; with a shared head the class tokens
        and the selected patch tokens go through the DINO head together.
        """
        out = self.teacher.backbone(batch.global_crops, is_training=True)
        crop0, crop1 = out["x_norm_clstoken"].chunk(N_GLOBAL_CROPS)
        cls_tokens = torch.cat((crop1, crop0))  # [2B, D_teacher]
        if not self.do_ibot:
            return self.teacher.dino_head(cls_tokens), None
        patches = out["x_norm_patchtokens"].flatten(0, 1).index_select(0, batch.mask_indices)  # [M, D_teacher]
        if self.teacher_ibot_head == "ibot_head":
            return self.teacher.dino_head(cls_tokens), self.teacher.ibot_head(patches)
        logits = self.teacher.dino_head(torch.cat((cls_tokens, patches)))
        return logits[: cls_tokens.shape[0]], logits[cls_tokens.shape[0] :]

    @torch.no_grad()
    def teacher_targets(self, batch: Batch, teacher_temp: float) -> TeacherTargets:
        """Centred (or Sinkhorn-Knopp) probabilities of the frozen teacher's logits."""
        cls_logits, patch_logits = self.teacher_logits(batch)
        return self.targets_from_logits(cls_logits, patch_logits, batch, teacher_temp)

    def targets_from_logits(
        self, cls_logits: torch.Tensor, patch_logits: torch.Tensor | None, batch: Batch, teacher_temp: float
    ) -> TeacherTargets:
        dino = self.centering.dino_targets(cls_logits, teacher_temp)
        ibot = None
        if patch_logits is not None:
            ibot = self.centering.ibot_targets(patch_logits, teacher_temp, batch.n_masked_patches)
        return TeacherTargets(dino=dino.view(N_GLOBAL_CROPS, -1, dino.shape[-1]), ibot=ibot)

    # ----------------------------------------------------------------------------------------------------------
    # EMA, checkpoints, exports, parallelism, modes
    # ----------------------------------------------------------------------------------------------------------

    def student_ema(self) -> nn.ModuleDict:
        """The spare EMA of the student (the frozen teacher is never updated)."""
        return self.model_ema

    def checkpoint_state(self) -> dict[str, object]:
        """Student, student EMA and loss centres (never the teacher), and the teacher file's fingerprint."""
        checkpointed = nn.ModuleDict(
            {
                "student": self.student,
                "model_ema": self.model_ema,
                "dino_loss": self.dino_loss,
                "ibot_patch_loss": self.ibot_patch_loss,
            }
        )
        return {"model": checkpointed, "distillation_teacher": self.teacher_file}

    def eval_exports(self) -> dict[str, nn.Module]:
        """``teacher_checkpoint.pth``: the student EMA, the final model; ``student_checkpoint.pth``: the student."""
        return {"teacher_checkpoint.pth": self.model_ema, "student_checkpoint.pth": self.student}

    def parallel_roles(self) -> dict[str, ParallelRole]:
        """Student (trained), its EMA and the frozen teacher (both inference only, ``compute_precision.teacher``)."""
        return {
            "student": ParallelRole(self.student, precision_section="student", trains=True),
            "model_ema": ParallelRole(self.model_ema, precision_section="teacher", trains=False),
            "teacher": ParallelRole(self.teacher, precision_section="teacher", trains=False),
        }

    def train(self, mode: bool = True):
        """Set the student's mode; the frozen teacher and the student EMA always stay in eval mode."""
        super().train(mode)
        self.model_ema.eval()
        return self
