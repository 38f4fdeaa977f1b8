"""The fine-tuning loop: sharding, precision, AdamW with layer-wise lr decay, warm-up + cosine, exact resume.

- **Schedule**: :class:`~dinov2.utils.utils.CosineScheduler` (the training's): linear warm-up from 0 to ``lr`` over
  ``warmup_iters``, then cosine to ``min_lr``; weight decay constant. Each group's lr and weight decay are set
  before every step by :func:`~dinov2.utils.param_groups.apply_optim_scheduler` (its multipliers).
- **Precision**: :class:`~dinov2.train.precision.PrecisionPolicy`: float32 on the CPU; on CUDA the backbone and
  head compute in ``amp_dtype`` (autocast, or the FSDP mixed-precision policy when sharded; an fp16 run scales
  its gradients), the loss in float32.
- **Several processes**: FSDP2 (:func:`dinov2.distributed.sharding.shard_module`): each block, then the backbone;
  the head is replicated in float32. Gradients are averaged over ranks (FSDP for the backbone, one all-reduce for
  the head); each rank's loss is the mean over its part of the global batch.
- **Checkpoints** (:class:`dinov2.train.checkpointing.Checkpointer`, ``<output_dir>/checkpoints``): model,
  optimizer, gradient scaler, per-rank RNG states and the plain values given (the "before" measurements), every
  ``checkpoint_period`` iterations and at the end. A run restarted in the same folder resumes from the newest one;
  the data loader is advanced past the completed iterations (per-sample seeded augmentations), so the weights
  at the end equal those of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from dinov2 import distributed
from dinov2.distributed.sharding import ShardingPolicy, clip_grad_norm_, shard_module
from dinov2.eval.finetune.model import FineTuneClassifier, optimizer_groups
from dinov2.eval.linear.train import _average_gradients
from dinov2.logging import MetricLogger, SmoothedValue
from dinov2.train.checkpointing import Checkpointer, LoadedCheckpoint
from dinov2.train.precision import PrecisionPolicy
from dinov2.utils.param_groups import apply_optim_scheduler, build_optimizer
from dinov2.utils.utils import CosineScheduler

logger = logging.getLogger("dinov2")

__all__ = ["Recipe", "make_precision", "shard", "Trainer"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Optimisation settings of a fine-tuning run (``lr`` and ``min_lr`` already scaled to the global batch). No
    defaults here: :func:`dinov2.eval.finetune.run.run_finetune` (and its flags) hold them, in one place."""

    max_iter: int
    lr: float
    min_lr: float
    warmup_iters: int
    weight_decay: float
    layer_decay: float
    patch_embed_lr_mult: float
    clip_grad: float
    label_smoothing: float
    amp_dtype: torch.dtype  # on CUDA only

    def __post_init__(self) -> None:
        if self.max_iter < 1 or not 0 <= self.warmup_iters <= self.max_iter:
            raise ValueError(
                f"need iterations >= 1 and 0 <= warm-up <= iterations, got {self.max_iter} iterations and "
                f"{self.warmup_iters} warm-up iterations; change --epochs / --epoch-length / --warmup-epochs"
            )
        if self.lr <= 0 or not 0 < self.layer_decay <= 1:
            raise ValueError(f"need --lr > 0 and 0 < --layer-decay <= 1, got {self.lr} and {self.layer_decay}")


def make_precision(device: torch.device, amp_dtype: torch.dtype, sharded: bool) -> PrecisionPolicy:
    """float32 on the CPU; on CUDA compute in ``amp_dtype`` (autocast unless sharded), fp16 with a gradient scaler."""
    if device.type != "cuda" or amp_dtype == torch.float32:
        return PrecisionPolicy()
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    return PrecisionPolicy(amp_dtype, None if sharded else amp_dtype, scaler)


def shard(model: FineTuneClassifier, device: torch.device, amp_dtype: torch.dtype) -> bool:
    """FSDP2 over every process when there are two or more: each block, then the backbone (the FSDP root, also when
    measured alone); ``get_intermediate_layers`` is registered as an FSDP forward method. The head stays a plain
    float32 module, the same on every rank (its gradients are averaged in :meth:`Trainer.step`). Returns whether
    the backbone was sharded."""
    model.to(device)
    if distributed.get_global_size() < 2:
        return False
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import register_fsdp_forward_method

    for tensor in [*model.parameters(), *model.buffers()]:  # the same starting weights on every rank
        distributed.broadcast(tensor.data, src=0)
    mesh = init_device_mesh(device.type, (distributed.get_global_size(),))
    dtype = amp_dtype if device.type == "cuda" else torch.float32
    shard_module(model.backbone, ShardingPolicy("FULL_SHARD", param_dtype=dtype), mesh)
    register_fsdp_forward_method(model.backbone, "get_intermediate_layers")
    return True


class Trainer:
    """One fine-tuning run of ``model`` (moved to ``device`` and sharded when there are several processes)."""

    def __init__(self, model: FineTuneClassifier, recipe: Recipe, device: torch.device, output_dir: str | Path):
        self.model, self.recipe, self.device = model, recipe, device
        sharded = shard(model, device, recipe.amp_dtype)
        self.precision = make_precision(device, recipe.amp_dtype, sharded)
        groups = optimizer_groups(model, recipe.layer_decay, recipe.patch_embed_lr_mult)
        self.optimizer = build_optimizer(groups)
        self.lr = CosineScheduler(recipe.lr, recipe.min_lr, recipe.max_iter, warmup_iters=recipe.warmup_iters)
        self.checkpointer = Checkpointer(Path(output_dir) / "checkpoints", keep=2)

    def state(self, **plain) -> dict:
        """What a checkpoint holds (``plain``: values saved as they are)."""
        state = {"model": self.model, "optimizer": self.optimizer, **plain}
        if self.precision.grad_scaler is not None:
            state["grad_scaler"] = self.precision.grad_scaler
        return state

    def resume(self) -> LoadedCheckpoint | None:
        """Restore the newest checkpoint of the output folder, if any."""
        return self.checkpointer.load_latest(self.state())

    def step(self, images: torch.Tensor, labels: torch.Tensor, iteration: int) -> torch.Tensor:
        """One optimisation step on a batch; returns the loss (detached)."""
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        if bool((labels < 0).any()):
            raise ValueError("train labels contain -1: the train split has no labels; use a labelled split")
        lr = float(self.lr[iteration])
        apply_optim_scheduler(self.optimizer, lr, self.recipe.weight_decay, lr)
        with self.precision.autocast(self.device.type):
            logits = self.model(images)  # [B, C]
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.recipe.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.backward(loss)
        _average_gradients(self.model.head)  # the backbone's are averaged by FSDP
        if self.recipe.clip_grad > 0:
            self.precision.unscale_(self.optimizer)
            for part in (self.model.backbone, self.model.head):  # per sub-module, as the training clips
                clip_grad_norm_([p for p in part.parameters() if p.requires_grad], self.recipe.clip_grad)
        self.precision.step(self.optimizer)
        return loss.detach()

    def fit(
        self,
        batches: Iterable,
        start_iter: int,
        *,
        checkpoint_period: int,
        stop_after: int | None = None,
        plain: dict | None = None,
        log_period: int = 10,
    ) -> int:
        """Train from ``start_iter`` to ``max_iter`` (or ``stop_after`` iterations in all, checkpointed there) on
        ``batches`` (an infinite loader starting at ``start_iter``); returns the iteration reached."""
        end = self.recipe.max_iter if stop_after is None else min(stop_after, self.recipe.max_iter)
        self.model.train()
        metric_logger = MetricLogger(delimiter="  ")
        metric_logger.add_meter("lr", SmoothedValue(window_size=1, fmt="{value:.6g}"))
        iteration = start_iter
        batches = metric_logger.log_every(batches, log_period, "Fine-tuning", end, start_iter)
        for images, labels, *_ in batches if start_iter < end else ():
            loss = self.step(images, labels, iteration)
            if iteration % log_period == 0:
                metric_logger.update(loss=loss, lr=float(self.lr[iteration]))
            iteration += 1
            if iteration == end or (checkpoint_period > 0 and iteration % checkpoint_period == 0):
                self.checkpointer.save(iteration - 1, self.state(**(plain or {})))
        self.model.eval()
        return iteration
