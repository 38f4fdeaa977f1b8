"""Gram anchoring (DINOv3 §4.2, ``gram.*`` keys): the Gram teacher, its refresh schedule and the Gram loss term.

The Gram loss keeps the student's patch-to-patch similarities (the Gram matrix of its L2-normalised patch tokens on
the masked global crops) close to those of a *Gram teacher*, an earlier EMA teacher:

- the Gram teacher is a frozen backbone beside the EMA teacher (``gram_teacher`` of the meta-architecture, a
  ``ModuleDict`` with a ``backbone``), loaded from ``gram.ckpt`` (:func:`load_gram_teacher_weights`) or copied from
  the EMA teacher at the start of iteration ``gram.it_load_ema_teacher``; with ``gram.ema_teacher`` the EMA teacher's
  own patch tokens are the targets and no Gram teacher exists;
- it is refreshed from the EMA teacher (parameters only) after the step of iteration ``j - 1`` whenever ``j`` is a
  multiple of ``gram.update_frequency``, ``j >= gram.it_first_update``, at most ``gram.max_updates`` times
  (:class:`GramSchedule`). The schedule is a function of the iteration alone, so a resumed run refreshes exactly
  where an uninterrupted one does (the release re-counts the refreshes from a formula on resume);
- it sees the Gram teacher crops (``crops.gram_teacher_crops_size``, e.g. 1.5x the global size), and its patch map
  is resized to the student's patch grid (``gram.global_teacher_resize_method`` / ``_antialias``);
- the term's weight is ``gram.loss_weight`` or, per iteration, ``gram.loss_weight_schedule``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dinov2.loss import GramLoss
from dinov2.train.batch import Batch
from dinov2.utils.schedules import schedule_from_spec

logger = logging.getLogger("dinov2")

__all__ = ["GramAnchoring", "GramSchedule", "load_gram_teacher_weights", "resize_patch_tokens"]

TOKENS_USED = ("all", "masked", "unmasked")


@dataclasses.dataclass(frozen=True)
class GramSchedule:
    """When the Gram teacher changes: a copy of the EMA teacher at the start of ``it_load_ema_teacher`` (-1:
    never) and refreshes at the start of iterations ``j`` (i.e. after the step of ``j - 1``, as released)."""

    it_load_ema_teacher: int = -1
    rep_update: bool = True
    update_frequency: int = 50000
    it_first_update: int = 0
    max_updates: int | None = None

    def _first_refresh(self) -> int:
        lowest = max(self.it_first_update, 1)
        return -(-lowest // self.update_frequency) * self.update_frequency  # the first multiple >= lowest

    def updates_before(self, iteration: int) -> int:
        """Refreshes that happened before iteration ``iteration`` started (at iterations ``< iteration``)."""
        if not self.rep_update:
            return 0
        first = self._first_refresh()
        count = 0 if first >= iteration else (iteration - 1 - first) // self.update_frequency + 1
        return count if self.max_updates is None else min(count, self.max_updates)

    def refreshes_at(self, iteration: int) -> bool:
        """Whether the Gram teacher is refreshed from the EMA teacher at the start of ``iteration``."""
        if not self.rep_update or iteration < self._first_refresh() or iteration % self.update_frequency:
            return False
        return self.max_updates is None or self.updates_before(iteration) < self.max_updates

    def loads_at(self, iteration: int) -> bool:
        """Whether the Gram teacher becomes a copy of the EMA teacher at the start of ``iteration``."""
        return self.it_load_ema_teacher >= 0 and iteration == self.it_load_ema_teacher


def resize_patch_tokens(tokens: torch.Tensor, grid: tuple[int, int], method: str, antialias: bool) -> torch.Tensor:
    """Patch tokens ``[B, N*N, D]`` of square crops resized to ``grid`` ``(h, w)``: ``[B, h*w, D]``."""
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise ValueError(
            f"Gram teacher patch tokens: {tokens.shape[1]} tokens are not a square grid; the Gram teacher crops "
            "must be square (crops.gram_teacher_crops_size one size per entry)"
        )
    if (side, side) == tuple(grid):
        return tokens
    maps = tokens.unflatten(1, (side, side)).permute(0, 3, 1, 2)  # [B, D, N, N]
    maps = F.interpolate(maps.float(), size=grid, mode=method, align_corners=False, antialias=antialias)
    return maps.to(tokens.dtype).flatten(2).transpose(1, 2)  # [B, h*w, D]


class GramAnchoring:
    """The ``gram.*`` behaviour of a meta-architecture (see the module docstring); holds no modules."""

    def __init__(self, cfg: DictConfig) -> None:
        gram = cfg.gram
        self.schedule = GramSchedule(
            int(gram.it_load_ema_teacher),
            bool(gram.rep_update),
            int(gram.update_frequency),
            int(gram.it_first_update),
            None if gram.max_updates is None else int(gram.max_updates),
        )
        self.ema_teacher = bool(gram.ema_teacher)
        self.img_level = bool(gram.img_level)
        self.tokens_used = str(gram.tokens_used)
        self.compute_stats = bool(gram.compute_stats)
        self.resize = (str(gram.global_teacher_resize_method), bool(gram.global_teacher_resize_antialias))
        self.loss = GramLoss(
            bool(gram.normalized), self.img_level, bool(gram.remove_neg), bool(gram.remove_only_teacher_neg)
        )
        self.loss_weight = float(gram.loss_weight)
        self.epoch_length = int(cfg.train.OFFICIAL_EPOCH_LENGTH)
        self.total_iters = int(cfg.optim.epochs) * self.epoch_length
        self.weight_schedule = None  # DINOv3's {start, peak, end, warmup_epochs, cosine_epochs} form, one door
        if gram.loss_weight_schedule is not None:
            spec = OmegaConf.to_container(gram.loss_weight_schedule)
            self.weight_schedule = schedule_from_spec(
                spec, self.epoch_length, self.total_iters, name="gram.loss_weight_schedule"
            )
        self.weight = self.weight_at(0)
        self.check(cfg)

    @staticmethod
    def enabled(cfg: DictConfig) -> bool:
        """Whether ``cfg`` asks for Gram anchoring (``gram.use_loss``)."""
        return bool(OmegaConf.select(cfg, "gram.use_loss", default=False))

    def check(self, cfg: DictConfig) -> None:
        """The release's constraints between the ``gram.*`` and ``crops.*`` keys, as errors naming the keys."""
        gram, crops_size = cfg.gram, cfg.crops.gram_teacher_crops_size

        def fail(key: str, value: Any, fix: str) -> None:
            raise ValueError(f"{key}={value!r} {fix}")

        if self.tokens_used not in TOKENS_USED:
            fail("gram.tokens_used", self.tokens_used, f"is not one of {TOKENS_USED}")
        if self.tokens_used != "all" and self.img_level:
            fail("gram.tokens_used", self.tokens_used, "needs gram.img_level=false (a batch-level Gram)")
        if self.schedule.update_frequency < 1:
            fail("gram.update_frequency", self.schedule.update_frequency, "must be >= 1")
        if self.ema_teacher:
            for key, value in (("gram.ckpt", gram.ckpt), ("crops.gram_teacher_crops_size", crops_size)):
                if value is not None:
                    fail(key, value, "is not used with gram.ema_teacher=true (set it to null)")
            if self.schedule.rep_update:
                fail("gram.rep_update", True, "must be false with gram.ema_teacher=true")
        else:
            if crops_size is None:
                fix = "must be set for a separate Gram teacher (or gram.ema_teacher=true: the EMA teacher's tokens)"
                fail("crops.gram_teacher_crops_size", None, fix)
            if gram.ckpt is None and self.schedule.it_load_ema_teacher < 0:
                fix = "leaves the Gram teacher without weights: set gram.ckpt or gram.it_load_ema_teacher >= 0"
                fail("gram.ckpt", None, fix)

    # ------------------------------------------------------------------------------------------ the Gram teacher
    def build_teacher(self, arch: nn.Module) -> nn.ModuleDict | None:
        """The separate Gram teacher: a frozen copy of the EMA teacher's backbone (None with ``ema_teacher``).
        Its weights come from ``gram.ckpt`` (:func:`load_gram_teacher_weights`) or a later copy."""
        if self.ema_teacher:
            return None
        teacher = nn.ModuleDict({"backbone": copy.deepcopy(arch.student_ema().backbone)})
        teacher.requires_grad_(False)
        return teacher

    @torch.no_grad()
    def before_iteration(self, arch: nn.Module, iteration: int) -> None:
        """Load / refresh the Gram teacher when the schedule says so, and set this iteration's weight."""
        self.weight = self.weight_at(iteration)
        gram_teacher = getattr(arch, "gram_teacher", None)
        if gram_teacher is None:
            return
        ema_backbone = arch.student_ema().backbone
        if self.schedule.loads_at(iteration):
            gram_teacher.backbone.load_state_dict(ema_backbone.state_dict())
            logger.info("Gram teacher: copied from the EMA teacher at iteration %d", iteration)
        elif self.schedule.refreshes_at(iteration):
            for target, source in zip(gram_teacher.backbone.parameters(), ema_backbone.parameters(), strict=True):
                target.copy_(source)  # parameters only, as released (update_gram with m = 0)
            logger.info("Gram teacher: refreshed from the EMA teacher at iteration %d", iteration)

    def weight_at(self, iteration: int) -> float:
        if self.weight_schedule is None:
            return self.loss_weight
        return float(self.weight_schedule[iteration])

    @torch.no_grad()
    def teacher_patches(self, arch: nn.Module, batch: Batch) -> torch.Tensor:
        """Gram targets ``[2B, P, D]`` on the student's patch grid (Gram teacher on the Gram crops, or the EMA
        teacher on the global crops)."""
        if self.ema_teacher:
            return arch.student_ema().backbone(batch.global_crops, is_training=True)["x_norm_patchtokens"]
        if batch.gram_teacher_crops is None:
            raise ValueError(
                "Gram anchoring: the batch has no Gram teacher crops; set crops.gram_teacher_crops_size so the data "
                "augmentation makes them"
            )
        tokens = arch.gram_teacher.backbone(batch.gram_teacher_crops, is_training=True)["x_norm_patchtokens"]
        patch = arch.cfg.student.patch_size
        grid = (batch.global_crops.shape[-2] // patch, batch.global_crops.shape[-1] // patch)
        return resize_patch_tokens(tokens, grid, *self.resize)

    # ------------------------------------------------------------------------------------------------- the term
    def loss_terms(self, student: torch.Tensor, teacher: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        """``{"gram_loss": ...}`` (weighted by :attr:`weight` in the total), and with ``compute_stats`` the
        detached batch-level losses over the masked and the unmasked tokens."""
        if self.tokens_used == "all":
            terms = {"gram_loss": self.loss(student, teacher, img_level=self.img_level)}
        else:
            keep = batch.masks.flatten() if self.tokens_used == "masked" else ~batch.masks.flatten()
            terms = {"gram_loss": self.loss(student.flatten(0, 1)[keep], teacher.flatten(0, 1)[keep], img_level=False)}
        if self.compute_stats:
            with torch.no_grad():
                flat_s, flat_t, masks = student.detach().flatten(0, 1), teacher.flatten(0, 1), batch.masks.flatten()
                terms["stats_gram_loss_masked"] = self.loss(flat_s[masks], flat_t[masks], img_level=False)
                terms["stats_gram_loss_unmasked"] = self.loss(flat_s[~masks], flat_t[~masks], img_level=False)
        return terms


def load_gram_teacher_weights(model: nn.Module, source: str) -> None:
    """Load ``gram.ckpt`` (a teacher export ``{"teacher": ...}``, a checkpoint folder or any backbone file the
    weights door reads) into ``model.gram_teacher.backbone``; every key must fit."""
    from dinov2.models.weights import load_backbone_weights

    load_backbone_weights(
        model.gram_teacher.backbone,
        source,
        argument="gram.ckpt",
        what=f"the Gram teacher backbone ({model.cfg.student.arch})",
        setter="{key}={value}",
    )
    logger.info("Gram teacher loaded from %s", source)
