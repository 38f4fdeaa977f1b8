"""Student/teacher meta-architecture of DINOv2 self-supervised training (SPEC.md §3).

One training step (:meth:`SSLMetaArch.forward_backward`, the only step body) reads as a list of named parts, each a
method that can be tested alone:

1. :meth:`SSLMetaArch.teacher_targets`  - teacher forward on the global crops, crop swap, heads, centring;
2. :meth:`SSLMetaArch.student_outputs`  - packed multi-crop student forward, heads;
3. :meth:`SSLMetaArch.loss_terms`       - DINO (local, global), KoLeo and iBOT terms and their weighted sum;
4. :meth:`SSLMetaArch.backprop_loss`    - backward (through the gradient scaler in fp16).

Before each step the training loop calls :meth:`SSLMetaArch.begin_iteration`: the RoPE augmentations of a DINOv3
student are seeded for that rank and step (``dinov2/train/rope_seeding.py``) and, with ``gram.use_loss``, the Gram
teacher is loaded or refreshed on its schedule (``dinov2/train/gram.py``, DINOv3's Gram anchoring).

The optimizer step and gradient clipping are driven by the training loop (``dinov2/train/train.py``), which then
calls :meth:`SSLMetaArch.after_optimizer_step` (here: the teacher EMA, :meth:`SSLMetaArch.update_teacher`).

Everything about the teacher is the meta-architecture's :class:`dinov2.train.teachers.TeacherStrategy`
(``teacher_strategy``): SSL's :class:`~dinov2.train.teachers.EMATeacher` by default; distillation picks a frozen
teacher (``dinov2/train/distillation/``). Which heads the networks get is :func:`dinov2.train.heads.heads_for`. The
centring mode is a strategy object resolved once (``dinov2/loss/teacher_centering.py``), and the precision policy
(``dinov2/train/precision.py``) is set by the trainer as ``model.precision``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import ClassVar

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dinov2.distributed import get_global_rank
from dinov2.loss import DINOLoss, KoLeoLoss, KoLeoLossDistributed, iBOTPatchLoss
from dinov2.loss.teacher_centering import build_centering
from dinov2.models import build_model_from_cfg
from dinov2.train.batch import N_GLOBAL_CROPS, Batch, StudentOutputs, TeacherTargets
from dinov2.train.ema import ema_update
from dinov2.train.gram import GramAnchoring
from dinov2.train.heads import heads_for
from dinov2.train.parallelize import ParallelRole, parallelize
from dinov2.train.precision import PrecisionPolicy
from dinov2.train.rope_seeding import seed_rope_augmentations
from dinov2.train.teachers import EMATeacher, TeacherStrategy
from dinov2.utils.param_groups import fuse_params_groups, get_params_groups_with_decay
from dinov2.utils.schedules import local_loss_weight_schedule

logger = logging.getLogger("dinov2")

# The step's data types lived here in the release-compatible surface; they stay importable from this module.
__all__ = ["N_GLOBAL_CROPS", "Batch", "SSLMetaArch", "StudentOutputs", "TeacherTargets"]


class SSLMetaArch(nn.Module):
    """DINOv2 student and teacher (each a ModuleDict of ``backbone``, ``dino_head``, optional ``ibot_head``).

    ``teacher_strategy`` decides the teacher (default: ``default_teacher(cfg)``, the EMA of the student).
    """

    #: the strategy a class builds when none is given (subclasses that only pick a strategy set this)
    default_teacher: ClassVar[Callable[[DictConfig], TeacherStrategy]] = EMATeacher

    def __init__(self, cfg: DictConfig, teacher_strategy: TeacherStrategy | None = None):
        # The strategy first: a frozen teacher checks its configs and file before any model is built.
        strategy = teacher_strategy if teacher_strategy is not None else self.default_teacher(cfg)
        super().__init__()
        self.cfg = cfg
        self.teacher_strategy = strategy
        self.teacher_side: tuple[str, ...] = ("teacher",)  # teacher-side attributes, set by build_teacher
        student_backbone, teacher_backbone, embed_dim = self.build_backbones(cfg)
        self.embed_dim = embed_dim
        self.student = nn.ModuleDict({"backbone": student_backbone, **heads_for(cfg).build(embed_dim)})
        self.teacher = self.build_teacher(cfg, teacher_backbone)
        for p in self.teacher.parameters():
            p.requires_grad = False
        # DINOv3's Gram anchoring: None unless gram.use_loss; its own teacher is one more teacher-side module.
        self.gram = GramAnchoring(cfg) if GramAnchoring.enabled(cfg) else None
        # DINOv3's dino.reweight_dino_local_loss: the local DINO term times a per-iteration weight (set each step)
        self.local_weight_schedule = local_loss_weight_schedule(cfg)
        self.local_loss_weight = 1.0
        gram_teacher = self.gram.build_teacher(self) if self.gram is not None else None
        if gram_teacher is not None:
            self.gram_teacher = gram_teacher
            self.teacher_side += ("gram_teacher",)

        self.do_dino = cfg.dino.loss_weight > 0
        self.do_koleo = cfg.dino.koleo_loss_weight > 0
        self.do_ibot = cfg.ibot.loss_weight > 0
        self.ibot_separate_head = bool(cfg.ibot.separate_head)
        self.dino_loss = DINOLoss(cfg.dino.head_n_prototypes)
        if OmegaConf.select(cfg, "dino.koleo_loss_distributed", default=False):  # DINOv3: neighbours across ranks
            group_size = cfg.dino.koleo_distributed_loss_group_size
            self.koleo_loss = KoLeoLossDistributed(int(cfg.dino.koleo_topk), group_size)
        else:
            self.koleo_loss = KoLeoLoss()
        self.ibot_patch_loss = iBOTPatchLoss(heads_for(cfg).ibot_prototypes)
        # Resolved once: softmax centring (with the losses' centre buffers) or Sinkhorn-Knopp.
        self.centering = build_centering(cfg.train.centering, self.dino_loss, self.ibot_patch_loss)

        # Precision of an unsharded model on an unknown device; the trainer replaces it once the device and the
        # sharding are known (fp16 gradient scaler, FSDP mixed precision instead of autocast).
        self.precision = PrecisionPolicy.from_config(cfg)
        logger.info(
            "%s: %s student, embed_dim %d, dino=%s koleo=%s ibot=%s (separate head: %s), centering=%s",
            type(self).__name__,
            cfg.student.arch,
            embed_dim,
            self.do_dino,
            self.do_koleo,
            self.do_ibot,
            self.ibot_separate_head,
            cfg.train.centering,
        )

    # ----------------------------------------------------------------------------------------------------------
    # Construction hooks
    # ----------------------------------------------------------------------------------------------------------

    def build_backbones(self, cfg: DictConfig) -> tuple[nn.Module, nn.Module | None, int]:
        """(student backbone, template for the teacher backbone or None, embed dim) from ``cfg.student``."""
        return build_model_from_cfg(cfg)

    def build_teacher(self, cfg: DictConfig, teacher_backbone: nn.Module | None) -> nn.ModuleDict:
        """The teacher, built by the teacher strategy from the template backbone; any other module the strategy
        builds beside it (distillation: ``model_ema``) is registered here first, in the strategy's order."""
        modules = self.teacher_strategy.build(self, teacher_backbone)
        self.teacher_side = tuple(modules)  # attribute names, in registration order
        for name, module in modules.items():
            if name != "teacher":
                setattr(self, name, module)
        return modules["teacher"]

    # ----------------------------------------------------------------------------------------------------------
    # The training step
    # ----------------------------------------------------------------------------------------------------------

    def forward(self, inputs):
        raise NotImplementedError("SSLMetaArch is trained with forward_backward(images, teacher_temp)")

    def forward_backward(self, images: dict | Batch, teacher_temp: float) -> dict[str, torch.Tensor]:
        """One forward and backward pass; returns the (detached) loss terms for logging.

        The teacher strategy turns the loaded batch into the one the student trains on (unchanged in SSL) and its
        teacher targets (through :meth:`teacher_targets`, except for a teacher shared by several students).
        """
        loaded = images if isinstance(images, Batch) else Batch.from_collated(images, self.device)
        with self.precision.autocast(self.device.type):
            batch, targets = self.teacher_strategy.batch_and_targets(self, loaded, teacher_temp)
            if self.gram is not None:
                targets = dataclasses.replace(targets, gram=self.gram.teacher_patches(self, batch))
            outputs = self.student_outputs(batch)
            loss_dict, loss = self.loss_terms(outputs, targets, batch)
        self.backprop_loss(loss)
        return {k: v.detach() for k, v in loss_dict.items()}

    @torch.no_grad()
    def teacher_targets(self, batch: Batch, teacher_temp: float) -> TeacherTargets:
        """Teacher forward on the global crops and its centred (or Sinkhorn-Knopp) probabilities."""
        return self.teacher_strategy.targets(self, batch, teacher_temp)

    def student_outputs(self, batch: Batch) -> StudentOutputs:
        """Packed student forward on global (masked) and local crops, then the heads in one call."""
        n_local = batch.n_local_crops
        crops, masks = [batch.global_crops], [self.student_masks(batch)]
        if n_local > 0:
            crops.append(batch.local_crops)
            masks.append(None)
        outs = self.student.backbone(crops, masks=masks, is_training=True)
        global_cls = outs[0]["x_norm_clstoken"]  # [2B, D]

        # Rows of every head input go through the DINO head together: [local cls | global cls | masked patches].
        head_inputs = [global_cls]
        if n_local > 0:
            head_inputs.insert(0, outs[1]["x_norm_clstoken"])  # [L*B, D]
        masked_tokens = None
        if self.do_ibot:
            masked_tokens = outs[0]["x_norm_patchtokens"].flatten(0, 1).index_select(0, batch.mask_indices)  # [M, D]
            if not self.ibot_separate_head:
                head_inputs.append(masked_tokens)
        sizes = [t.shape[0] for t in head_inputs]
        logits = self.student.dino_head(torch.cat(head_inputs)).split(sizes)

        local_logits = logits[0] if n_local > 0 else None
        global_logits = logits[1 if n_local > 0 else 0]
        masked_logits = None
        if self.do_ibot:
            masked_logits = self.student.ibot_head(masked_tokens) if self.ibot_separate_head else logits[-1]
        patches = outs[0]["x_norm_patchtokens"] if self.gram is not None else None  # [2B, P, D]
        return StudentOutputs(global_cls, global_logits, local_logits, masked_logits, patches)

    def student_masks(self, batch: Batch) -> torch.Tensor | None:
        """Masks of the student's global crops (``[2B, N]`` bool, or None: unmasked): the iBOT masks unless the
        teacher strategy trains an unmasked student."""
        return batch.masks if self.teacher_strategy.mask_student else None

    def loss_terms(
        self, outputs: StudentOutputs, targets: TeacherTargets, batch: Batch
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The weighted loss terms (SPEC.md §3.4); returns (terms for display, total for backward)."""
        cfg = self.cfg
        n_local = batch.n_local_crops
        # Normalise by the number of (student crop, teacher crop) pairs: 2 global pairs + 2L local ones.
        n_terms = (N_GLOBAL_CROPS - 1) * N_GLOBAL_CROPS + max(n_local * N_GLOBAL_CROPS, 1)
        loss_dict: dict[str, torch.Tensor] = {}
        total = outputs.global_cls_logits.new_zeros(())

        if self.do_dino:
            if n_local > 0:
                local = self.dino_loss(outputs.local_cls_logits.chunk(n_local), list(targets.dino)) / n_terms
                local = local * self.local_loss_weight if self.local_weight_schedule is not None else local
                loss_dict["dino_local_crops_loss"] = local
                total = total + cfg.dino.loss_weight * local
            # Both global crops are processed as one chunk (hence the factor 2), against the swapped targets.
            glob = self.dino_loss([outputs.global_cls_logits], [targets.dino.flatten(0, 1)]) * 2 / n_terms
            loss_dict["dino_global_crops_loss"] = glob
            total = total + cfg.dino.loss_weight * glob
            if self.do_koleo:
                # KoLeo within each global crop's batch, never between two crops of the same image.
                koleo = cfg.dino.koleo_loss_weight * sum(
                    self.koleo_loss(p) for p in outputs.global_cls.chunk(N_GLOBAL_CROPS)
                )
                loss_dict["koleo_loss"] = koleo / 2  # displayed per global crop, as in the release
                total = total + koleo

        if self.do_ibot:
            # forward_masked divides by all 2B global-crop images (masked or not); the release's extra
            # factors (x2 for processing both crops together, x1/2 as the iBOT loss scale) cancel.
            ibot = self.ibot_patch_loss.forward_masked(
                outputs.masked_patch_logits,
                targets.ibot,
                student_masks_flat=batch.masks,
                n_masked_patches=int(batch.mask_indices.shape[0]),
                masks_weight=batch.masks_weight,
            )
            loss_dict["ibot_loss"] = ibot / 2
            total = total + cfg.ibot.loss_weight * ibot

        if self.gram is not None:
            loss_dict.update(self.gram.loss_terms(outputs.global_patch_tokens, targets.gram, batch))
            total = total + self.gram.weight * loss_dict["gram_loss"]
        return loss_dict, total

    def backprop_loss(self, loss: torch.Tensor) -> None:
        """Backward of the total loss (through the fp16 gradient scaler when the precision policy has one)."""
        self.precision.backward(loss)

    # ----------------------------------------------------------------------------------------------------------
    # Teacher EMA, optimisation helpers, modes
    # ----------------------------------------------------------------------------------------------------------

    def student_ema(self) -> nn.ModuleDict:
        """The module that follows the student by EMA (the teacher in SSL; beside a frozen teacher, ``model_ema``)."""
        return getattr(self, self.teacher_strategy.student_ema_name)

    @torch.no_grad()
    def update_teacher(self, m: float) -> None:
        """EMA of every parameter: ``ema = m * ema + (1 - m) * student`` (on local shards when sharded), where
        ``ema`` is :meth:`student_ema` (the teacher in SSL training; the released method name is kept)."""
        ema = self.student_ema()
        for key in self.student.keys():
            ema_update(ema[key].parameters(), self.student[key].parameters(), m)

    def begin_iteration(self, iteration: int) -> None:
        """Before the step of ``iteration``: seed the student's RoPE augmentations for this rank and step, and (Gram
        anchoring) load or refresh the Gram teacher and set the Gram weight; both depend on ``iteration`` alone,
        so a resumed run replays them."""
        seed_rope_augmentations(self.student, int(self.cfg.train.seed), get_global_rank(), iteration)
        if self.local_weight_schedule is not None:
            self.local_loss_weight = float(self.local_weight_schedule[iteration])
        if self.gram is not None:
            self.gram.before_iteration(self, iteration)

    def after_optimizer_step(self, *, momentum: float) -> None:
        """What follows each optimizer step (the teacher strategy's): the EMA with this iteration's ``momentum``."""
        self.teacher_strategy.after_optimizer_step(self, momentum)

    def checkpoint_state(self) -> dict[str, object]:
        """What training checkpoints hold besides the optimizer: ``{"model": <module>, ...}`` (SSL: the whole
        meta-architecture); values follow :class:`dinov2.train.checkpointing.Checkpointer`'s ``state``."""
        return self.teacher_strategy.checkpoint_state(self)

    def images_per_process(self) -> int:
        """Images one iteration trains on in each process (the throughput log multiplies by the process count)."""
        return self.teacher_strategy.images_per_process(self.cfg)

    def eval_exports(self) -> dict[str, nn.Module]:
        """File name -> module whose full state dict is exported as ``{"teacher": ...}`` for the eval scripts."""
        return self.teacher_strategy.eval_exports(self)

    def parallel_roles(self) -> dict[str, ParallelRole]:
        """The module groups ``dinov2/train/parallelize.py`` wraps, with their precision section."""
        return self.teacher_strategy.parallel_roles(self, list(self.teacher_side))

    def prepare_for_distributed_training(self, device: torch.device | str, *, single_process: bool = False) -> None:
        """Released name: :func:`dinov2.train.parallelize.parallelize` (activation checkpointing, compile,
        sharding), then the matching precision policy (autocast off when sharded; the scaler is kept)."""
        sharded = parallelize(self, self.cfg, device, single_process=single_process)
        scaler = self.precision.grad_scaler
        self.precision = PrecisionPolicy.from_config(self.cfg, sharded=sharded)
        self.precision.grad_scaler = scaler

    def get_params_groups(self) -> list[dict]:
        """Fused AdamW parameter groups of every student sub-module (layer-wise decay, wd and last-layer flags)."""
        groups = []
        for module in self.student.values():
            fused = fuse_params_groups(
                get_params_groups_with_decay(
                    module,
                    lr_decay_rate=self.cfg.optim.layerwise_decay,
                    patch_embed_lr_mult=self.cfg.optim.patch_embed_lr_mult,
                )
            )
            for g in fused:
                g["foreach"] = True
            groups += fused
        return groups

    def train(self, mode: bool = True):
        """Set the student's mode; the teacher (and every other teacher-side module) always stays in eval mode."""
        super().train(mode)
        for name in self.teacher_side:
            getattr(self, name).eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.student.parameters()).device

    def autocast(self):
        """Autocast context of the precision policy on this model's device (a no-op in fp32)."""
        return self.precision.autocast(self.device.type)

    # Released attribute names, now views of the precision policy.
    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return self.precision.autocast_dtype

    @property
    def fp16_scaler(self) -> torch.amp.GradScaler | None:
        return self.precision.grad_scaler

    @fp16_scaler.setter
    def fp16_scaler(self, scaler: torch.amp.GradScaler | None) -> None:
        self.precision.grad_scaler = scaler
