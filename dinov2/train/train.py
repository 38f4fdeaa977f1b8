"""DINOv2 self-supervised training loop (released command line).

    python dinov2/train/train.py --config-file F --output-dir D [--no-resume] [key=value ...]
    python -m dinov2.train.train ...                      (same)
    dinov2-train ...                                      (same, the installed console script)
    torchrun --nproc-per-node G dinov2/train/train.py ... (one node, several processes)

The same code runs on one CPU, one GPU, torchrun and SLURM (``dinov2/run/train/train.py``). Per iteration:
apply the schedules -> forward/backward (``model.forward_backward``) -> clip gradients per student sub-module ->
optimizer step (through the fp16 gradient scaler when used) -> ``model.after_optimizer_step`` (the teacher EMA) ->
metrics -> teacher export every ``evaluation.eval_period_iterations`` -> checkpoint every ``checkpointing.period``.

The model is the meta-architecture named by ``MODEL.META_ARCHITECTURE`` (``dinov2/train/meta_archs.py``), wrapped
from outside by ``dinov2/train/parallelize.py`` (activation checkpointing, compile, FSDP2), with the precision policy
of ``dinov2/train/precision.py``. Distillation (``distillation.enabled``) uses the same loop; several students at
once (``--multi-distillation`` / ``multidistillation.enabled``) run it once per student, each in its process
subgroup (``dinov2/train/distillation/multi_setup.py``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

if __package__ in (None, ""):  # run as a script: make the repository importable like `python -m` does
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dinov2 import distributed  # noqa: E402
from dinov2.data import (  # noqa: E402
    DataAugmentationDINO,
    MaskingGenerator,
    SamplerType,
    collate_data_and_cast,
    make_data_loader,
    make_dataset,
)
from dinov2.data.crop_sizes import CropSizes, CropSizeSampler, MultiResolutionLoader, crop_size_entries  # noqa: E402
from dinov2.data.dataset_strings import parse_dataset_str  # noqa: E402
from dinov2.data.dinov3_augment import DataAugmentationDINOv3  # noqa: E402
from dinov2.data.gpu_augment import DeviceAugmentation  # noqa: E402
from dinov2.distributed.sharding import clip_grad_norm_  # noqa: E402
from dinov2.distributed.subgroups import whole_job  # noqa: E402
from dinov2.logging import MetricLogger  # noqa: E402
from dinov2.train.adapt import Adaptation  # noqa: E402
from dinov2.train.checkpointing import Checkpointer, export_teacher  # noqa: E402
from dinov2.train.collapse_guard import CollapseGuard  # noqa: E402
from dinov2.train.distillation.multi_setup import run_multidistillation, wants_multidistillation  # noqa: E402
from dinov2.train.gram import load_gram_teacher_weights  # noqa: E402
from dinov2.train.meta_archs import build_meta_arch, check_meta_arch_inputs  # noqa: E402
from dinov2.train.parallelize import parallelize  # noqa: E402
from dinov2.train.precision import PrecisionPolicy, compute_dtype  # noqa: E402
from dinov2.train.pretrained import (  # noqa: E402
    load_model_weights,
    load_pretrained_heads,
    load_student_from_teacher_checkpoint,
    load_student_pretrained_weights,
)
from dinov2.train.run_lock import RunLock  # noqa: E402
from dinov2.train.ssl_meta_arch import Batch, SSLMetaArch  # noqa: E402
from dinov2.train.tracking import Tracking  # noqa: E402
from dinov2.utils.cli import check_writable_dir, usage_errors  # noqa: E402
from dinov2.utils.config import ConfigKeyError, ConfigValueError, load_cfg, setup  # noqa: E402
from dinov2.utils.config import get_args_parser as _get_args_parser  # noqa: E402
from dinov2.utils.param_groups import apply_optim_scheduler  # noqa: E402
from dinov2.utils.param_groups import build_optimizer as _build_adamw  # noqa: E402
from dinov2.utils.schedules import TrainingSchedules, build_schedulers  # noqa: E402

logger = logging.getLogger("dinov2")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The released training parser: ``--config-file --output-dir --no-resume --eval-only --eval`` and ``opts``."""
    return _get_args_parser(add_help=add_help)


def build_optimizer(cfg: DictConfig, params_groups: list[dict]) -> torch.optim.AdamW:
    """AdamW over the meta-architecture's parameter groups, with the fused CUDA kernel when ``optim.adamw_fused``
    says so (null: fused when every parameter is on a GPU, else the foreach implementation)."""
    groups = [dict(group) for group in params_groups]
    fused = cfg.optim.adamw_fused
    if fused is None:
        fused = all(p.is_cuda for group in groups for p in group["params"])
    for group in groups:
        group.pop("foreach", None)
        group["fused" if fused else "foreach"] = True
    return _build_adamw(groups, betas=(cfg.optim.adamw_beta1, cfg.optim.adamw_beta2))


def training_device() -> torch.device:
    """CUDA (this process's local GPU) when available, else CPU: chosen once for the whole run."""
    if torch.cuda.is_available():
        return torch.device("cuda", distributed.get_local_rank() % torch.cuda.device_count())
    return torch.device("cpu")


def checkpoint_period(cfg: DictConfig) -> int:
    """Iterations between checkpoints: ``checkpointing.period`` or, when unset, 3 epochs as in the release."""
    period = cfg.checkpointing.period
    return int(period) if period else 3 * cfg.train.OFFICIAL_EPOCH_LENGTH


def build_data_loader(cfg: DictConfig, start_iter: int) -> Iterable[dict]:
    """Multi-crop augmentation, iBOT masking and the sharded infinite loader, advanced to ``start_iter``.

    Every sample's augmentation and every batch's masks are seeded from its position in the stream, so a
    resumed run sees exactly the batches an uninterrupted one would have seen. With ``train.data_device=cuda``
    decoding and augmentation run on the training device (``dinov2/data/gpu_augment.py``), same random choices.
    With lists of crop sizes (DINOv3's high-resolution adaptation) there is one loader per resolution entry (seed
    ``train.seed + i + 1``, as released) and each iteration's entry is drawn by ``dinov2/data/crop_sizes.py``.
    """
    entries, ratios = crop_size_entries(cfg.crops)
    if len(entries) == 1:
        return _resolution_loader(cfg, entries[0], cfg.train.seed, start_iter)
    sampler = CropSizeSampler(ratios, seed=cfg.train.seed)
    served = sampler.counts(start_iter)  # batches each entry's loader gave before start_iter
    loaders = [_resolution_loader(cfg, e, cfg.train.seed + i + 1, served[i]) for i, e in enumerate(entries)]
    return MultiResolutionLoader(loaders, sampler, start_iter)


def _augmentation(cfg: DictConfig, sizes: CropSizes) -> DataAugmentationDINO:
    """DINOv2's multi-crop augmentation, or DINOv3's when a DINOv3 ``crops`` option is on (Gram teacher crops for a
    Gram loss with its own teacher, shared colour jitter, local crops cut from the global crops)."""
    crops = cfg.crops
    common = dict(global_crops_size=sizes.global_size, local_crops_size=sizes.local_size)
    common["flip_probability"] = 0.5 if crops.horizontal_flips else 0.0
    args = (crops.global_crops_scale, crops.local_crops_scale, crops.local_crops_number)
    gram_size = None if sizes.gram_size is None or cfg.gram.ema_teacher or not cfg.gram.use_loss else sizes.gram_size
    dinov3 = {
        "crops.gram_teacher_crops_size": gram_size is not None,
        "crops.share_color_jitter": bool(crops.share_color_jitter),
        "crops.localcrops_subset_of_globalcrops": bool(crops.localcrops_subset_of_globalcrops),
    }
    if not any(dinov3.values()):
        return DataAugmentationDINO(*args, **common)
    if cfg.train.data_device == "cuda":
        keys = ", ".join(key for key, on in dinov3.items() if on)
        raise ValueError(f"{keys}: DINOv3's crops are made by the data workers; set train.data_device=cpu")
    return DataAugmentationDINOv3(
        *args,
        gram_teacher_crops_size=gram_size,
        gram_teacher_no_distortions=bool(crops.gram_teacher_no_distortions),
        share_color_jitter=dinov3["crops.share_color_jitter"],
        local_crops_subset_of_global_crops=dinov3["crops.localcrops_subset_of_globalcrops"],
        patch_size=cfg.student.patch_size,
        **common,
    )


def _resolution_loader(cfg: DictConfig, sizes: CropSizes, seed: int, batches_served: int) -> Iterable[dict]:
    """The loader of one resolution entry, ``seed``-ed, after the ``batches_served`` batches it gave before."""
    grid = sizes.global_size // cfg.student.patch_size
    mask_generator = MaskingGenerator(input_size=(grid, grid), max_num_patches=0.5 * grid * grid)
    transform = _augmentation(cfg, sizes)
    collate_fn = partial(
        collate_data_and_cast,
        mask_ratio_tuple=tuple(cfg.ibot.mask_ratio_min_max),
        mask_probability=cfg.ibot.mask_sample_probability,
        n_tokens=grid * grid,
        mask_generator=mask_generator,
        dtype=compute_dtype(cfg),
        local_crops_size=sizes.local_size,
    )
    dataset = make_dataset(dataset_str=cfg.train.dataset_path, transform=transform, target_transform=lambda _: ())
    on_device = None
    if cfg.train.data_device == "cuda":  # workers read bytes and draw the crops; the device decodes and augments
        on_device = DeviceAugmentation(transform, training_device(), compute_dtype(cfg))
        dataset, collate_fn = on_device.encoded_dataset(dataset), on_device.encoded_collate(collate_fn)
    batch_size = cfg.train.batch_size_per_gpu
    # The data stream is sharded over every process of the job, also when each student of a multi-student
    # distillation runs in its own subgroup (they share the loaded images).
    with whole_job():
        loader = make_data_loader(
            dataset=dataset,
            batch_size=batch_size,
            num_workers=cfg.train.num_workers,
            shuffle=True,
            seed=seed,
            sampler_type=SamplerType.SHARDED_INFINITE,
            sampler_advance=batches_served * batch_size,
            drop_last=True,
            persistent_workers=cfg.train.num_workers > 0,
            collate_fn=collate_fn,
        )
    return loader if on_device is None else on_device.batches(loader)


def do_test(cfg: DictConfig, model: SSLMetaArch, iteration: str) -> Path:
    """Export the model's evaluation weights (``model.eval_exports()``: the teacher for SSL) to
    ``<output_dir>/eval/<iteration>/`` (collective); returns the path of ``teacher_checkpoint.pth``."""
    folder = Path(cfg.train.output_dir) / "eval" / iteration
    for filename, module in model.eval_exports().items():
        export_teacher(folder / filename, module)
        if distributed.is_main_process():
            logger.info("exported %s", folder / filename)
    return folder / "teacher_checkpoint.pth"


def train_step(
    cfg: DictConfig,
    model: SSLMetaArch,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    schedules: TrainingSchedules,
    iteration: int,
    adaptation: Adaptation | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """One optimisation step at ``iteration`` (``adaptation``: the head warm-up / backbone lr ramp of ``adapt.*``).

    Returns the loss terms averaged over processes and the gradient norm of every student sub-module before
    clipping (empty when ``optim.clip_grad`` is 0).
    """
    lr, wd = schedules.lr[iteration], schedules.wd[iteration]
    apply_optim_scheduler(optimizer, lr, wd, schedules.last_layer_lr[iteration])
    if adaptation is not None:
        adaptation.scale_backbone_lr(model, optimizer, iteration)
    optimizer.zero_grad(set_to_none=True)
    model.begin_iteration(iteration)
    loss_dict = model.forward_backward(batch, teacher_temp=schedules.teacher_temp[iteration])

    model.precision.unscale_(optimizer)
    grad_norms = {}
    if cfg.optim.clip_grad:
        for name, module in model.student.items():
            grad_norms[name] = clip_grad_norm_(module.parameters(), cfg.optim.clip_grad)
    model.precision.step(optimizer)
    model.after_optimizer_step(momentum=schedules.momentum[iteration])
    if adaptation is not None:
        adaptation.after_step(model, iteration)
    return reduce_loss_dict(loss_dict, iteration), {k: float(v) for k, v in grad_norms.items()}


def reduce_loss_dict(loss_dict: dict[str, torch.Tensor], iteration: int) -> dict[str, float]:
    """Average the loss terms over processes (one all-reduce) and stop the run on a non-finite value."""
    names = sorted(loss_dict)
    values = torch.stack([loss_dict[k].float() for k in names])
    distributed.all_reduce(values)
    values = (values / distributed.get_global_size()).tolist()
    reduced = dict(zip(names, values))
    if not all(math.isfinite(v) for v in values):
        bad = ", ".join(f"{k}={v}" for k, v in reduced.items() if not math.isfinite(v))
        raise FloatingPointError(
            f"non-finite loss at iteration {iteration}: {bad} (all terms: {reduced}). Lower optim.base_lr, "
            "check the data, or use fp32/bf16 instead of fp16 (compute_precision.*.mixed_precision.param_dtype)"
        )
    return reduced


def resume_or_load(cfg: DictConfig, model: SSLMetaArch, checkpointer: Checkpointer, state: dict, resume: bool) -> int:
    """First iteration to run: after the latest valid checkpoint when resuming, else 0 (from MODEL.WEIGHTS if set)."""
    if resume:
        loaded = checkpointer.load_latest(state)
        if loaded is not None:
            logger.info("resumed from %s (iteration %d)", loaded.path, loaded.iteration)
            return loaded.iteration + 1
    if cfg.MODEL.WEIGHTS:
        load_model_weights(state["model"], cfg.MODEL.WEIGHTS)  # the checkpointed module (model.checkpoint_state())
    return 0


def do_train(
    cfg: DictConfig, model: SSLMetaArch, resume: bool = False, history: list | None = None
) -> dict[str, float]:
    """Train from the latest checkpoint (or from scratch) up to ``optim.epochs * OFFICIAL_EPOCH_LENGTH``.

    ``history``, when given, receives ``(iteration, losses)`` after every completed iteration (its checkpoint
    included): a record for notebooks and tests.
    """
    model.train()
    optimizer = build_optimizer(cfg, model.get_params_groups())
    schedules = build_schedulers(cfg)
    keep_every = OmegaConf.select(cfg, "checkpointing.keep_every")  # DINOv3's key
    checkpointer = Checkpointer(cfg.train.output_dir, keep=cfg.checkpointing.max_to_keep, keep_every=keep_every)
    state = {**model.checkpoint_state(), "optimizer": optimizer}  # e.g. distillation leaves the teacher out
    if model.fp16_scaler is not None:
        state["grad_scaler"] = model.fp16_scaler
    start_iter = resume_or_load(cfg, model, checkpointer, state, resume)
    max_iter = cfg.optim.epochs * cfg.train.OFFICIAL_EPOCH_LENGTH
    period, eval_period = checkpoint_period(cfg), cfg.evaluation.eval_period_iterations
    if start_iter >= max_iter:
        logger.info("nothing to do: the run already reached iteration %d of %d", start_iter, max_iter)
        return {}

    data_loader = build_data_loader(cfg, start_iter)
    device = model.device
    tracking = Tracking(cfg)
    metric_logger = MetricLogger(
        delimiter="  ", output_file=os.path.join(cfg.train.output_dir, "training_metrics.json"), sinks=tracking.sinks
    )
    adaptation = Adaptation.from_config(cfg)
    guard = CollapseGuard(cfg.adapt.collapse_guard, cfg.adapt.head_warmup_iterations)
    logger.info("starting training from iteration %d of %d", start_iter, max_iter)
    iteration = start_iter
    for data in metric_logger.log_every(
        data_loader, 10, "Training", max_iter, start_iter, batch_size=model.images_per_process()
    ):
        batch = Batch.from_collated(data, device)
        losses, grad_norms = train_step(cfg, model, optimizer, batch, schedules, iteration, adaptation)
        metric_logger.update(
            lr=schedules.lr[iteration],
            wd=schedules.wd[iteration],
            mom=schedules.momentum[iteration],
            last_layer_lr=schedules.last_layer_lr[iteration],
            current_batch_size=model.images_per_process(),  # what the student trains on (multi-distillation: its share)
            total_loss=sum(losses.values()),
            **losses,
            **{f"{name}_grad_norm": norm for name, norm in grad_norms.items()},
        )
        tracking.after_iteration(model, iteration, metric_logger)
        saves = (iteration + 1) % period == 0 or iteration == max_iter - 1
        if guard.due(iteration) or (guard.enabled and saves):  # before this iteration's export and checkpoint
            signals = guard.measure(model, batch, schedules.teacher_temp[iteration], tracking.knn.latest)
            metric_logger.record(iteration, **{f"guard_{name}": value for name, value in signals.items()})
            guard.check(iteration, signals)
        if eval_period > 0 and (iteration + 1) % eval_period == 0:
            do_test(cfg, model, f"training_{iteration}")
        if saves:
            checkpointer.save(iteration, state)
        if history is not None:
            history.append((iteration, losses))
        iteration += 1
    metric_logger.synchronize_between_processes()
    tracking.close()
    return {name: meter.global_avg for name, meter in metric_logger.meters.items()}


def main(args: argparse.Namespace, history: list | None = None) -> dict[str, float] | Path:
    """Entry point shared by this script, ``python -m dinov2.train.train`` and the SLURM launcher.

    The run lock of the output directory is taken first, before ``setup`` writes ``config.yaml`` and the log, so a
    second launch on a directory in use changes nothing there (``dinov2/train/run_lock.py``).
    """
    distributed.enable(overwrite=True)
    with RunLock(args.output_dir):  # before setup writes config.yaml: a refused launch changes nothing there
        if wants_multidistillation(args):  # one student per process subgroup, each running `run` below
            return run_multidistillation(args, partial(run, history=history))
        return run(setup(args), args, history=history)


def run(cfg: DictConfig, args: argparse.Namespace, history: list | None = None) -> dict[str, float] | Path:
    """Build the meta-architecture of the set-up config ``cfg``, then train (or export with ``--eval-only``)."""
    device = training_device()
    model = build_meta_arch(cfg)
    if cfg.student.pretrained_weights:
        load_student_pretrained_weights(model, cfg.student.pretrained_weights)
    if OmegaConf.select(cfg, "student.resume_from_teacher_chkpt"):  # DINOv3's key: student and heads from a teacher
        load_student_from_teacher_checkpoint(model, cfg.student.resume_from_teacher_chkpt)
    if cfg.adapt.pretrained_heads:
        load_pretrained_heads(model, cfg.adapt.pretrained_heads)
    if getattr(model, "gram_teacher", None) is not None and cfg.gram.ckpt:
        load_gram_teacher_weights(model, cfg.gram.ckpt)
    sharded = parallelize(model, cfg, device)
    model.precision = PrecisionPolicy.from_config(cfg, device, sharded=sharded)
    logger.info("model:\n%s", model)
    if args.eval_only:
        checkpointer = Checkpointer(cfg.train.output_dir, keep=cfg.checkpointing.max_to_keep)
        state = model.checkpoint_state()
        iteration = resume_or_load(cfg, model, checkpointer, state, resume=not args.no_resume)
        return do_test(cfg, model, f"manual_{iteration}")
    return do_train(cfg, model, resume=not args.no_resume, history=history)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (``parser.error``: exit code 2) before any process group, log or output folder is made: a
    missing config file, a bad key or value in the config or the overrides, (unless ``--eval-only``) a malformed
    ``train.dataset_path``, and the meta-architecture's own inputs (a distillation teacher's config and file).
    Used by :func:`cli_main` and the SLURM launcher."""
    with usage_errors(parser, FileNotFoundError, ConfigKeyError, ConfigValueError):
        cfg = load_cfg(args.config_file, args.opts, args.output_dir or None)
    if not args.eval_only:
        with usage_errors(parser, ValueError, flag="train.dataset_path"):
            parse_dataset_str(cfg.train.dataset_path)
        with usage_errors(parser, FileNotFoundError, ValueError, ConfigValueError):
            check_meta_arch_inputs(cfg)
    if args.output_dir:  # last: a mistake above makes no folder
        check_writable_dir(parser, args.output_dir, "--output-dir")


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``dinov2-train`` / ``python dinov2/train/train.py``: parse ``argv`` (default ``sys.argv``), check the
    arguments (:func:`check_args`), train."""
    parser = get_args_parser(add_help=True)
    args = parser.parse_args(argv)
    check_args(parser, args)
    main(args)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
