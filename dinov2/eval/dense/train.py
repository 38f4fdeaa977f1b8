"""Training a dense head on a frozen backbone, resumable: mmcv's learning-rate schedules, the infinite sharded loader
that resumes where it stopped, the DDP wrap, the probe checkpoint (head, optimizer, iteration) and the loop."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from dinov2 import distributed
from dinov2.data.loaders import SamplerType, make_data_loader
from dinov2.logging import MetricLogger
from dinov2.models.weights import read_checkpoint
from dinov2.utils.io import atomic_torch_save

logger = logging.getLogger("dinov2")

__all__ = [
    "learning_rate",
    "load_checkpoint",
    "make_train_loader",
    "save_checkpoint",
    "sync_buffers",
    "train_head",
    "wrap_head",
]


def learning_rate(iteration: int, optim: DictConfig, total_iters: int) -> float:
    """mmcv's per-iteration lr: ``poly`` ((base - min_lr) (1 - t)^power + min_lr) or ``cosine`` (base ->
    base * min_lr_ratio), times the linear warm-up factor ``1 - (1 - i / warmup_iters)(1 - warmup_ratio)``."""
    progress = min(iteration / max(total_iters, 1), 1.0)
    if optim.schedule == "poly":
        lr = (optim.lr - optim.min_lr) * (1 - progress) ** optim.power + optim.min_lr
    elif optim.schedule == "cosine":
        target = optim.lr * optim.min_lr_ratio
        lr = target + 0.5 * (optim.lr - target) * (1 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"optim.schedule must be poly or cosine, got {optim.schedule!r}")
    if iteration < optim.warmup_iters:
        lr *= 1 - (1 - iteration / optim.warmup_iters) * (1 - optim.warmup_ratio)
    return lr


def make_train_loader(dataset, batch_size: int, num_workers: int, seed: int, start_iter: int):
    """Infinite, sharded, per-sample-seeded loader that resumes after ``start_iter`` batches of this rank."""
    return make_data_loader(
        dataset=dataset, batch_size=batch_size, num_workers=num_workers, shuffle=True, seed=seed,
        sampler_type=SamplerType.SHARDED_INFINITE, sampler_advance=start_iter * batch_size, drop_last=True,
    )  # fmt: skip


def wrap_head(head: nn.Module, device: torch.device) -> nn.Module:
    """The head for training on several processes: SyncBatchNorm on CUDA, DistributedDataParallel."""
    if distributed.get_global_size() == 1:
        return head
    if device.type == "cuda":
        head = nn.SyncBatchNorm.convert_sync_batchnorm(head)
    elif any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in head.modules()):
        logger.warning("SyncBatchNorm needs CUDA: on CPU each process normalises with its own batch statistics")
    return nn.parallel.DistributedDataParallel(head, device_ids=[device] if device.type == "cuda" else None)


def save_checkpoint(path: Path, head: nn.Module, optimizer: torch.optim.Optimizer, iteration: int) -> None:
    """Write head (unwrapped from DDP), optimizer and iteration atomically (main process only)."""
    head = getattr(head, "module", head)
    if distributed.is_main_process():
        state = {"head": head.state_dict(), "optimizer": optimizer.state_dict(), "iteration": int(iteration)}
        atomic_torch_save(state, path)


def load_checkpoint(path: Path, head: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore head and optimizer from ``path``; returns the iteration to start from."""
    state = read_checkpoint(path, argument="the probe checkpoint")
    head = getattr(head, "module", head)
    head.load_state_dict(state["head"], strict=True)
    optimizer.load_state_dict(state["optimizer"])
    logger.info("resuming from %s at iteration %d", path, state["iteration"])
    return int(state["iteration"])


def train_head(
    *,
    head: nn.Module,
    step_loss: Callable[[object, int], tuple[torch.Tensor, dict[str, float]]],
    loader,
    optimizer: torch.optim.Optimizer,
    optim_cfg: DictConfig,
    total_iters: int,
    start_iter: int,
    checkpoint: Callable[[int], None],
    checkpoint_period: int,
    evaluate: Callable[[int], None] | None = None,
    eval_period: int = 0,
    log_period: int = 50,
    metrics_file: str | None = None,
) -> None:
    """Iterations ``start_iter .. total_iters - 1``: ``loss, logs = step_loss(batch, iteration)``, backward,
    optional gradient clipping (``optim_cfg.clip_grad``), optimizer step with the scheduled lr."""
    head.train()
    metric_logger = MetricLogger(delimiter="  ", output_file=metrics_file)
    params = [p for p in head.parameters() if p.requires_grad]
    iteration = start_iter
    for batch in metric_logger.log_every(loader, log_period, "Training", total_iters, start_iter):
        lr = learning_rate(iteration, optim_cfg, total_iters)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss, logs = step_loss(batch, iteration)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at iteration {iteration} ({logs})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if optim_cfg.get("clip_grad"):
            torch.nn.utils.clip_grad_norm_(params, optim_cfg.clip_grad)
        optimizer.step()
        metric_logger.update(loss=loss.item(), lr=lr, **logs)
        iteration += 1
        if iteration % checkpoint_period == 0 or iteration == total_iters:
            checkpoint(iteration)
        if evaluate is not None and eval_period and iteration % eval_period == 0 and iteration < total_iters:
            sync_buffers(head)
            evaluate(iteration)
            head.train()
    sync_buffers(head)


def sync_buffers(head: nn.Module) -> None:
    """Give every process rank 0's buffers (batch-norm running statistics): DDP broadcasts them before each
    forward, but the last forward leaves each rank with its own update (no-op on one process)."""
    for buffer in getattr(head, "module", head).buffers():
        distributed.broadcast(buffer, src=0)
