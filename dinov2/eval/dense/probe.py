"""The run both dense probes share: command line, recipe, set-up (backbone, device, autocast), datasets, training
with resume (the loop itself in :mod:`dinov2.eval.dense.train`), evaluation, head export and result files.

Command line (both probes): the shared evaluation flags (``--config-file --pretrained-weights --output-dir
--opts``, see :mod:`dinov2.eval.setup`), ``--train-dataset --val-dataset`` (dataset strings), ``--recipe`` (a
packaged recipe name or a YAML file) and trailing ``key=value`` overrides of the recipe (after the options).
The recipe is merged onto the probe's ``defaults.yaml`` (every key must exist there), written to
``<output-dir>/probe_config.yaml``. The packaged recipes are ``configs/eval/<task>/*.yaml`` (``dinov2/configs/eval/
<task>`` once installed), next to the other packaged configs.

Training is resumable: ``<output-dir>/probe_checkpoint.pth`` (head, optimizer, iteration; written atomically
every ``checkpoint.period`` iterations) is picked up unless ``--no-resume``; the data loader continues where it
stopped (per-sample seeding), so a resumed run sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from dinov2 import configs, distributed
from dinov2.config import ConfigFolder, key_problems, load_layers
from dinov2.data.dataset_strings import parse_dataset_str
from dinov2.data.datasets.extended import set_unreadable_policy
from dinov2.eval.common import TRAIN_VAL_DATASETS, check_eval_args
from dinov2.eval.dense.train import load_checkpoint, make_train_loader, save_checkpoint, train_head, wrap_head
from dinov2.eval.results import format_table, write_json
from dinov2.eval.setup import autocast_context, eval_device, setup_and_build_model
from dinov2.eval.setup import get_args_parser as get_setup_args_parser
from dinov2.utils.cli import ArgumentParser, usage_errors
from dinov2.utils.io import atomic_torch_save, atomic_write_text

logger = logging.getLogger("dinov2")

__all__ = [
    "CHECKPOINT_NAME", "ProbeSetup", "check_probe_args", "evaluate", "get_dense_args_parser", "load_recipe",
    "make_datasets", "make_val_loader", "probe_on_backbone", "recipe_dir", "run_cli", "run_training", "save_head",
    "setup_probe",
    "write_results",
]  # fmt: skip

CHECKPOINT_NAME = "probe_checkpoint.pth"


def recipe_dir(task: str) -> Path:
    """The packaged recipes of the ``task`` probe: ``configs/eval/<task>/`` (``defaults.yaml`` holds every key)."""
    return configs.CONFIG_DIR / "eval" / task


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


def run_cli(parser: argparse.ArgumentParser, main: Callable[[argparse.Namespace], dict], config_dir: Path, argv) -> int:
    """A probe's console script: parse ``argv`` (default ``sys.argv``; recipe overrides may sit among the options),
    check the arguments (usage errors, exit code 2), run ``main``; returns the exit status."""
    args = parser.parse_intermixed_args(argv)
    check_probe_args(parser, args, config_dir)
    main(args)
    return 0


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


def make_val_loader(dataset, num_workers: int, max_images: int | None = None):
    """This rank's share of the validation images (every ``world``-th one, no duplicates), one per batch."""
    count = len(dataset) if not max_images else min(len(dataset), int(max_images))
    indices = list(range(distributed.get_global_rank(), count, distributed.get_global_size()))
    subset = torch.utils.data.Subset(dataset, indices)
    return torch.utils.data.DataLoader(subset, batch_size=1, num_workers=num_workers, shuffle=False)


# ---------------------------------------------------------------------------------------------- the probe run
@dataclasses.dataclass
class ProbeSetup:
    """What both probes start from: the task, the frozen backbone, the resolved recipe, where to write, device,
    autocast."""

    task: str
    backbone: nn.Module
    cfg: DictConfig
    output_dir: Path
    device: torch.device
    autocast: Callable


def setup_probe(args: argparse.Namespace, task: str) -> ProbeSetup:
    """Build the backbone (``--config-file``, ``--pretrained-weights``), load the ``task`` recipe (``--recipe`` +
    overrides) and write it to ``<output-dir>/probe_config.yaml``."""
    backbone, autocast_dtype = setup_and_build_model(args)
    return probe_on_backbone(backbone, args, task, autocast_dtype)


def probe_on_backbone(
    backbone: nn.Module, args: argparse.Namespace, task: str, autocast_dtype: torch.dtype = torch.float32
) -> ProbeSetup:
    """The probe set-up around a frozen backbone already built (e.g. ``load_backbone(...).model`` of any family
    with ``get_intermediate_layers``): the ``task`` recipe of ``args`` and ``<output-dir>/probe_config.yaml``."""
    cfg = load_recipe(recipe_dir(task), args.recipe, args.overrides)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if distributed.is_main_process():
        atomic_write_text(output_dir / "probe_config.yaml", OmegaConf.to_yaml(cfg))
    device = eval_device()
    return ProbeSetup(task, backbone, cfg, output_dir, device, autocast_context(autocast_dtype, device))


def make_datasets(
    args: argparse.Namespace, train_transform, eval_transform, kind: str, accepted: str, default_kind: str | None
) -> list:
    """The train and val datasets of ``--train-dataset`` / ``--val-dataset`` with the joint transforms; each must be
    a ``kind`` dataset (its ``kind`` attribute, ``default_kind`` when it has none); ``accepted`` names them. An
    unreadable val image raises naming the file (a substitute would silently change the metrics); training skips
    unreadable images as training does."""
    datasets = []
    for dataset_str, transforms in ((args.train_dataset_str, train_transform), (args.val_dataset_str, eval_transform)):
        if not dataset_str:
            raise ValueError(f"--train-dataset and --val-dataset are required (dataset strings: {accepted})")
        cls, kwargs = parse_dataset_str(dataset_str)
        dataset = cls(transforms=transforms, **kwargs)
        if getattr(dataset, "kind", default_kind) != kind:
            raise ValueError(f"{dataset_str!r} is not a {kind} dataset ({accepted})")
        datasets.append(dataset)
    set_unreadable_policy(datasets[1], "raise")
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


@torch.no_grad()
def evaluate(probe: ProbeSetup, model: nn.Module, predict: Callable, val_set, metric) -> dict:
    """``metric`` (``update(prediction, target)``, ``all_reduce()``, ``compute()``) of ``predict(image)`` (under
    autocast, eval mode) over this rank's share of ``val_set`` (``eval.max_images``), summed over processes."""
    loader = make_val_loader(val_set, probe.cfg.eval.num_workers, probe.cfg.eval.max_images)
    model.eval()
    for image, target in loader:
        with probe.autocast():
            prediction = predict(image.to(probe.device))
        metric.update(prediction.cpu(), target)
    metric.all_reduce()
    return metric.compute()


def save_head(decode_head: nn.Module, path: Path, meta: dict) -> None:
    """The head in the released format: ``{"state_dict": {"decode_head.*": ...}, "meta": {...}}`` (main process)."""
    if distributed.is_main_process():
        state = {f"decode_head.{k}": v.detach().cpu() for k, v in decode_head.state_dict().items()}
        atomic_torch_save({"state_dict": state, "meta": meta}, path)


def write_results(
    probe: ProbeSetup, args: argparse.Namespace, summary: dict, extra: dict, label: str, float_format: str
) -> dict:
    """``results_eval_<task>.json`` (``summary``, released layout), ``..._detailed.json`` (``summary``, ``extra``,
    the recipe, the datasets) and the table ``<task> (<label>) on <val set>`` (main process); returns the details."""
    detailed = {**summary, **extra, "recipe": OmegaConf.to_container(probe.cfg),
                "train_dataset": args.train_dataset_str, "val_dataset": args.val_dataset_str}  # fmt: skip
    if distributed.is_main_process():
        task, output_dir = probe.task, probe.output_dir
        write_json(output_dir / f"results_eval_{task}.json", summary)
        write_json(output_dir / f"results_eval_{task}_detailed.json", detailed)
        title = f"{task} ({label}) on {args.val_dataset_str}"
        print(format_table([summary], float_format=float_format, title=title))
    return detailed
