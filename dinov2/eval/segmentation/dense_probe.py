"""What the segmentation and depth probes share: command line, recipe config, schedule, loaders, checkpoints,
and the training loop of a head on a frozen backbone.

Command line (both probes): the shared evaluation flags (``--config-file --pretrained-weights --output-dir
--opts``, see :mod:`dinov2.eval.setup`), ``--train-dataset --val-dataset`` (dataset strings), ``--recipe`` (a
packaged recipe name or a YAML file) and trailing ``key=value`` overrides of the recipe (after the options).
The recipe is merged onto the probe's ``defaults.yaml`` (every key must exist there), written to
``<output-dir>/probe_config.yaml``.

Training is resumable: ``<output-dir>/probe_checkpoint.pth`` (head, optimizer, iteration; written atomically
every ``checkpoint.period`` iterations) is picked up unless ``--no-resume``; the data loader continues where it
stopped (per-sample seeding), so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dinov2 import distributed
from dinov2.config import ConfigFolder, key_problems, load_layers
from dinov2.data.dataset_strings import parse_dataset_str
from dinov2.data.loaders import SamplerType, make_data_loader
from dinov2.eval.common import TRAIN_VAL_DATASETS, check_eval_args
from dinov2.eval.results import format_table, write_json
from dinov2.eval.setup import autocast_context, eval_device, setup_and_build_model
from dinov2.eval.setup import get_args_parser as get_setup_args_parser
from dinov2.logging import MetricLogger
from dinov2.utils.cli import ArgumentParser, usage_errors
from dinov2.utils.io import atomic_torch_save, atomic_write_text

logger = logging.getLogger("dinov2")

__all__ = [
    "CHECKPOINT_NAME", "ProbeSetup", "get_dense_args_parser", "check_probe_args", "load_recipe", "learning_rate",
    "make_datasets", "make_train_loader", "make_val_loader", "run_training", "save_checkpoint", "save_head",
    "load_checkpoint", "setup_probe", "sync_buffers", "train_head", "wrap_head", "write_results",
]  # fmt: skip

CHECKPOINT_NAME = "probe_checkpoint.pth"


def get_dense_args_parser(
    description: str, default_recipe: str, parents: Sequence[argparse.ArgumentParser] | None = None,
    add_help: bool = True,
) -> argparse.ArgumentParser:  # fmt: skip
    """Shared eval flags (``--config-file`` and ``--pretrained-weights`` required) + ``--train-dataset --val-dataset
    --recipe --no-resume`` + trailing overrides of the recipe (``--opts`` overrides the model config)."""
    setup_parser = get_setup_args_parser(parents=list(parents or []), add_help=False, required=True)
    parser = ArgumentParser(description=description, parents=[setup_parser], add_help=add_help)
    parser.add_argument("--train-dataset", dest="train_dataset_str", help="train set (dataset string, required)")
    parser.add_argument("--val-dataset", dest="val_dataset_str", help="validation set (dataset string, required)")
    parser.add_argument("--recipe", default=default_recipe, help="packaged recipe name or a YAML file")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if a checkpoint exists")
    parser.add_argument(
        "overrides", nargs="*", default=[], metavar="KEY=VALUE",
        help="overrides of the probe recipe after the options, e.g. optim.lr=0.01 (values read as YAML)",
    )  # fmt: skip
    return parser


def check_probe_args(parser: argparse.ArgumentParser, args: argparse.Namespace, config_dir: Path) -> None:
    """Usage errors (exit code 2) before any work: the model config, weights and dataset strings
    (:func:`dinov2.eval.common.check_eval_args`; the datasets are required), then the recipe and its overrides."""
    check_eval_args(parser, args, TRAIN_VAL_DATASETS)
    with usage_errors(parser, FileNotFoundError, KeyError, ValueError):
        load_recipe(config_dir, args.recipe, args.overrides)


def load_recipe(config_dir: Path, recipe: str, overrides: Sequence[str] = ()) -> DictConfig:
    """``config_dir/defaults.yaml`` <- recipe (``config_dir/<name>.yaml`` or a file) <- ``key=value`` overrides."""
    folder = ConfigFolder(config_dir, "recipe", exclude=("defaults",), like="defaults.yaml", example="optim.lr=0.01")
    defaults = OmegaConf.load(config_dir / "defaults.yaml")
    layers = load_layers(recipe, overrides, folder, error=ValueError)
    for layer, source in layers:
        unknown, not_sections = key_problems(layer, defaults)
        if unknown or not_sections:
            keys = [f"{key!r}" + (f" ({hint})" if hint else "") for key, hint in unknown]
            keys += [f"{key!r} (a section of the recipe, not a value)" for key in not_sections]
            raise KeyError(f"{source}: unknown recipe key(s) {', '.join(keys)}")
    return OmegaConf.merge(defaults, *(layer for layer, _ in layers))


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


def make_val_loader(dataset, num_workers: int, max_images: int | None = None):
    """This rank's share of the validation images (every ``world``-th one, no duplicates), one per batch."""
    count = len(dataset) if not max_images else min(len(dataset), int(max_images))
    indices = list(range(distributed.get_global_rank(), count, distributed.get_global_size()))
    subset = torch.utils.data.Subset(dataset, indices)
    return torch.utils.data.DataLoader(subset, batch_size=1, num_workers=num_workers, shuffle=False)


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
    state = torch.load(path, map_location="cpu", weights_only=True)
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


# ---------------------------------------------------------------------------------------------- the probe run
@dataclasses.dataclass
class ProbeSetup:
    """What both probes start from: the frozen backbone, the resolved recipe, where to write, device, autocast."""

    backbone: nn.Module
    cfg: DictConfig
    output_dir: Path
    device: torch.device
    autocast: Callable


def setup_probe(args: argparse.Namespace, config_dir: Path) -> ProbeSetup:
    """Build the backbone (``--config-file``, ``--pretrained-weights``), load the recipe (``--recipe`` + overrides)
    and write it to ``<output-dir>/probe_config.yaml``."""
    backbone, autocast_dtype = setup_and_build_model(args)
    cfg = load_recipe(config_dir, args.recipe, args.overrides)
    output_dir = Path(args.output_dir)
    if distributed.is_main_process():
        atomic_write_text(output_dir / "probe_config.yaml", OmegaConf.to_yaml(cfg))
    device = eval_device()
    return ProbeSetup(backbone, cfg, output_dir, device, autocast_context(autocast_dtype, device))


def make_datasets(
    args: argparse.Namespace, train_transform, eval_transform, kind: str, accepted: str, default_kind: str | None
) -> list:
    """The train and val datasets of ``--train-dataset`` / ``--val-dataset`` with the joint transforms; each must be
    a ``kind`` dataset (its ``kind`` attribute, ``default_kind`` when it has none); ``accepted`` names them."""
    datasets = []
    for dataset_str, transforms in ((args.train_dataset_str, train_transform), (args.val_dataset_str, eval_transform)):
        if not dataset_str:
            raise ValueError(f"--train-dataset and --val-dataset are required (dataset strings: {accepted})")
        cls, kwargs = parse_dataset_str(dataset_str)
        dataset = cls(transforms=transforms, **kwargs)
        if getattr(dataset, "kind", default_kind) != kind:
            raise ValueError(f"{dataset_str!r} is not a {kind} dataset ({accepted})")
        datasets.append(dataset)
    return datasets


def run_training(
    probe: ProbeSetup,
    decode_head: nn.Module,
    train_set,
    step_loss: Callable[[nn.Module, object, int], tuple[torch.Tensor, dict[str, float]]],
    evaluate: Callable[[int], dict],
    no_resume: bool,
) -> None:
    """Train ``decode_head`` on ``train_set`` with the recipe (AdamW, scheduled lr, resume from the probe checkpoint
    unless ``no_resume``); ``step_loss(head, batch, iteration)`` gets the (possibly DDP-wrapped) head."""
    cfg = probe.cfg
    decode_head.to(probe.device)
    head = wrap_head(decode_head, probe.device)
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), weight_decay=cfg.optim.weight_decay
    )
    checkpoint_path = probe.output_dir / CHECKPOINT_NAME
    start_iter = 0
    if checkpoint_path.is_file() and not no_resume:
        start_iter = load_checkpoint(checkpoint_path, head, optimizer)
    if start_iter >= cfg.train.iterations:
        return
    loader = make_train_loader(train_set, cfg.train.batch_size, cfg.train.num_workers, cfg.train.seed, start_iter)
    train_head(
        head=head, step_loss=lambda batch, iteration: step_loss(head, batch, iteration), loader=loader,
        optimizer=optimizer, optim_cfg=cfg.optim, total_iters=cfg.train.iterations, start_iter=start_iter,
        checkpoint=lambda it: save_checkpoint(checkpoint_path, head, optimizer, it),
        checkpoint_period=cfg.checkpoint.period, evaluate=evaluate, eval_period=cfg.eval.period,
        log_period=cfg.log.period, metrics_file=str(probe.output_dir / "training_metrics.json"),
    )  # fmt: skip


def save_head(decode_head: nn.Module, path: Path, meta: dict) -> None:
    """The head in the released format: ``{"state_dict": {"decode_head.*": ...}, "meta": {...}}`` (main process)."""
    if distributed.is_main_process():
        state = {f"decode_head.{k}": v.detach().cpu() for k, v in decode_head.state_dict().items()}
        atomic_torch_save({"state_dict": state, "meta": meta}, path)


def write_results(output_dir: Path, task: str, summary: dict, detailed: dict, title: str, float_format: str) -> None:
    """``results_eval_<task>.json`` (released layout), ``..._detailed.json`` and the printed table (main process)."""
    if distributed.is_main_process():
        write_json(output_dir / f"results_eval_{task}.json", summary)
        write_json(output_dir / f"results_eval_{task}_detailed.json", detailed)
        print(format_table([summary], float_format=float_format, title=title))
