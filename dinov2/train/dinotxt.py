"""Train a dino.txt head (``python -m dinov2.train.dinotxt --config-file F --output-dir D [key=value ...]``).

A frozen vision backbone of any family (the backbone door: hub name, run folder, weights, training config), a
trainable vision head and text tower, the CLIP loss with a learnable temperature (:mod:`dinov2.text.clip_loss`),
as DINOv3's released ``train_dinotxt`` does: AdamW (two weight-decay groups), linear warm-up then cosine learning
rate set every step, no gradient clipping, ``logit_scale`` clamped to ``[0, ln 100]`` after each step, a NaN loss
stops the run. Checkpoints (``model_<iteration>``, atomic, RNG states included) hold the trainable parts and the
optimizer only; a run resumes exactly where the latest one left off (same batches, same random draws). At the end:
``dinotxt.pth`` (:func:`dinov2.hub.dinotxt.load_dinotxt`, ``python -m dinov2.eval.zeroshot --model``) and, with
``eval.dataset``, the zero-shot accuracy in ``results_zeroshot.json``. Processes: one, or torchrun / SLURM (gradients
averaged, the loss over the global batch); with ``train.fsdp`` the text tower and vision head are sharded with FSDP2
(:func:`~dinov2.train.dinotxt_parts.shard_trainable_parts`), and checkpoints (DCP) load sharded or not.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from dinov2 import distributed
from dinov2.config import write_config
from dinov2.data import make_dataset
from dinov2.data.dataset_strings import parse_dataset_str
from dinov2.data.transforms import make_classification_eval_transform
from dinov2.features import eval_device
from dinov2.hub.dinotxt import dinotxt_file_content, save_dinotxt
from dinov2.logging import MetricLogger
from dinov2.text import DinoTxt, get_tokenizer
from dinov2.text.clip_loss import clip_loss
from dinov2.text.zeroshot import predict_topk, read_class_names, read_templates, topk_accuracy, zeroshot_weights
from dinov2.train.checkpointing import Checkpointer
from dinov2.train.dinotxt_config import DinoTxtConfigError, DinoTxtTrainConfig, load_dinotxt_config
from dinov2.train.dinotxt_parts import (
    TrainableParts,
    build_caption_loader,
    build_dinotxt_model,
    params_groups,
    shard_trainable_parts,
)
from dinov2.train.parallelize import apply_activation_checkpointing
from dinov2.utils.cli import ArgumentParser, check_writable_dir, usage_errors
from dinov2.utils.io import atomic_torch_save, write_json
from dinov2.utils.utils import CosineScheduler

logger = logging.getLogger("dinov2")

__all__ = [
    "MAX_LOGIT_SCALE",
    "train_step",
    "export_model",
    "do_train",
    "zeroshot_eval",
    "main",
    "check_args",
    "cli_main",
]

MAX_LOGIT_SCALE = math.log(100)  # exp(logit_scale) <= 100


def train_step(model: DinoTxt, parts: TrainableParts, optimizer, images, tokens, lr: float) -> float:
    """One optimisation step on a batch; returns the loss. Gradients are averaged over the processes."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    image_features, text_features, scale = model(images, tokens)
    loss = clip_loss(image_features, text_features, scale)
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"dino.txt loss is {loss.item()}: stopping (lower optim.lr or check the data)")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    from torch.distributed.tensor import DTensor

    world = distributed.get_global_size()
    for param in parts.parameters():
        # sharded (DTensor) gradients are already averaged by FSDP's reduce-scatter
        if param.grad is not None and world > 1 and not isinstance(param.grad, DTensor):
            distributed.all_reduce(param.grad)
            param.grad.div_(world)
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return loss.item()


def export_model(model: DinoTxt, path: Path, hub_name: str | None, sharded: bool) -> None:
    """Write ``dinotxt.pth`` on the main process; the tensors of a sharded model are gathered first (collective:
    every process calls this)."""
    if not sharded:
        if distributed.is_main_process():
            save_dinotxt(model, path, hub_name)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if distributed.is_main_process():
        content = dinotxt_file_content(model, hub_name)
        content["model"] = {key: full[key] for key in content["model"]}  # the same keys, gathered tensors
        atomic_torch_save(content, path)


@torch.no_grad()
def zeroshot_eval(cfg: DinoTxtTrainConfig, model: DinoTxt, tokenizer, device) -> dict[str, float]:
    """Zero-shot top-1 / top-5 (%) on ``cfg.eval.dataset`` (resize 256/224 x crop, as the release evaluates)."""
    crop = cfg.eval.crop_size
    transform = make_classification_eval_transform(resize_size=round(crop * 256 / 224), crop_size=crop)
    dataset = make_dataset(dataset_str=cfg.eval.dataset, transform=transform)
    names = read_class_names(cfg.eval.class_names) if cfg.eval.class_names else list(dataset.classes)
    templates = read_templates(cfg.eval.templates or None)
    model.eval()
    weights = zeroshot_weights(model, tokenizer, [n.replace("_", " ") for n in names], templates, device=device)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=False)
    results = {**topk_accuracy(*predict_topk(model, weights, loader, device), len(names))}
    results["chance"] = 100.0 / len(names)
    return results


def do_train(cfg: DinoTxtTrainConfig, resume: bool = True, stop_after: int | None = None) -> dict:
    """Train up to ``cfg.optim.iterations`` from the latest checkpoint (or from scratch); ``stop_after``: stop once
    that iteration is done (a checkpoint is written there), as if the job were killed. Returns the last losses, the
    export path and the zero-shot results."""
    device = eval_device()
    if distributed.is_main_process():  # the run's config, as every training run writes it
        write_config(OmegaConf.structured(cfg), cfg.output_dir)
    model, _loaded = build_dinotxt_model(cfg, device)
    if cfg.train.checkpointing:  # before sharding: FSDP then wraps the checkpointed blocks (torchtitan's order)
        apply_activation_checkpointing(model.text_model.backbone)
    sharded = shard_trainable_parts(model, cfg, device)
    tokenizer = get_tokenizer(cfg.data.vocab_path or None)
    parts = TrainableParts(model)
    optim = cfg.optim
    optimizer = torch.optim.AdamW(
        params_groups(parts, optim.weight_decay), lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps
    )
    lr = CosineScheduler(optim.lr, 0.0, optim.iterations, warmup_iters=optim.warmup_iterations)
    checkpointer = Checkpointer(Path(cfg.output_dir) / "checkpoints", keep=cfg.max_checkpoints_to_keep)
    state = {"model": parts, "optimizer": optimizer}
    loaded = checkpointer.load_latest(state) if resume else None
    start = loaded.iteration + 1 if loaded is not None else 0
    last = optim.iterations - 1 if stop_after is None else min(stop_after, optim.iterations - 1)
    metrics = MetricLogger(delimiter="  ", output_file=os.path.join(cfg.output_dir, "training_metrics.json"))
    losses = []
    if start <= last:
        model.train()
        loader = build_caption_loader(cfg, _loaded, tokenizer, start)
        for iteration, (images, tokens) in zip(
            range(start, last + 1),
            metrics.log_every(loader, cfg.log_period, "dino.txt", last + 1, start, batch_size=cfg.data.batch_size),
        ):
            loss = train_step(model, parts, optimizer, images.to(device), tokens.to(device), lr[iteration])
            losses.append(loss)
            metrics.update(loss=loss, lr=lr[iteration], logit_scale=model.logit_scale.item())
            if (iteration + 1) % cfg.checkpoint_period == 0 or iteration == last:
                checkpointer.save(iteration, state)
    if last < optim.iterations - 1:
        return {"losses": losses}
    export = Path(cfg.output_dir) / "dinotxt.pth"
    export_model(model, export, cfg.backbone.hub_name or None, sharded)
    results = {"losses": losses, "export": str(export)}
    if cfg.eval.dataset:
        results["zeroshot"] = zeroshot_eval(cfg, model, tokenizer, device)
        if distributed.is_main_process():
            write_json(Path(cfg.output_dir) / "results_zeroshot.json", results["zeroshot"])
        logger.info("zero-shot: %s", results["zeroshot"])
    return results


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parser = ArgumentParser(description="Train a dino.txt head on image-caption pairs", add_help=add_help)
    parser.add_argument("--config-file", default="", help="dino.txt config (e.g. train/dinotxt_demo_cpu)")
    parser.add_argument("--output-dir", default="", help="run folder (config, checkpoints, dinotxt.pth)")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even when checkpoints exist")
    parser.add_argument("opts", nargs="*", default=[], help="key=value config overrides")
    return parser


def main(args: argparse.Namespace) -> dict:
    cfg = load_dinotxt_config(args.config_file or None, args.opts, args.output_dir or None)
    distributed.enable(overwrite=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return do_train(cfg, resume=not args.no_resume)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (``parser.error``: exit code 2) before any process group or folder is made: the config file,
    the keys and values of the config and the overrides, the dataset strings (``data.dataset``, ``eval.dataset``).
    Used by :func:`cli_main` and the SLURM launcher (``dinov2/run/train/dinotxt.py``)."""
    with usage_errors(parser, DinoTxtConfigError, FileNotFoundError):
        cfg = load_dinotxt_config(args.config_file or None, args.opts, args.output_dir or None)
    for key, dataset in (("data.dataset", cfg.data.dataset), ("eval.dataset", cfg.eval.dataset)):
        if dataset:
            with usage_errors(parser, ValueError, flag=key):
                parse_dataset_str(dataset)
    if args.output_dir:  # last: a mistake above makes no folder
        check_writable_dir(parser, args.output_dir, "--output-dir")


def cli_main(argv: Sequence[str] | None = None) -> int:
    """Parse, check the arguments (:func:`check_args`: usage errors, exit code 2), train."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    results = main(args)
    if "zeroshot" in results:
        print(f"zero-shot: {results['zeroshot']}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
