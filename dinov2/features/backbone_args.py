"""Command-line flags of the tools that take a backbone without a config of their own (pictures, export):
``--model NAME | --config-file F``, ``--weights W`` (alone: the architecture is read from the weights),
``--random-init``, ``--seed``, read by the backbone door."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from torch import nn

from dinov2.config import ConfigKeyError, ConfigValueError, load_cfg
from dinov2.data.dataset_strings import parse_dataset_str
from dinov2.features.backbone import LoadedBackbone, load_backbone
from dinov2.hub import catalog
from dinov2.models.weights import is_url
from dinov2.utils.cli import check_writable_dir, usage_errors

__all__ = [
    "BACKBONE_NOTE",
    "add_backbone_args",
    "backbone_from_args",
    "check_backbone_args",
    "check_eval_args",
    "cpu_backbone",
    "cpu_loaded",
    "loaded_from_args",
]

# --help epilog of the commands built on add_backbone_args: they have no config of their own to override
BACKBONE_NOTE = (
    "No key=value overrides: this command has no config of its own. The backbone is a hub\n"
    "model (--model), the teacher of a training config used as it is (--config-file,\n"
    "e.g. <run>/config.yaml), or --weights alone (a DINOv2 / DINOv3 file or folder: the\n"
    "architecture is read from the weights); everything else is set by the options."
)


def cpu_loaded(
    name=None, weights=None, *, config_file=None, random_init: bool = False, seed: int = 0, device="cpu"
) -> LoadedBackbone:
    """Hub backbone ``name``, the teacher of ``config_file``, or ``weights`` alone (the architecture read from
    them), in eval mode on ``device`` (default the CPU; None: the eval device), with its facts (patch size in
    pixels per output token, extra tokens).

    ``weights`` loads strictly (any format :mod:`dinov2.models.weights` reads); without it a hub name downloads its
    released weights, unless ``random_init``. With a hub name, the position table keeps the size stored in
    ``weights`` (a training export at 224 px keeps its 16 x 16 grid), so the numbers are those of the trained model.
    """
    if name is not None and config_file is not None:
        raise ValueError("give a hub backbone name (--model) or a training config (--config-file), not both")
    if name is None and config_file is None and not weights:
        raise ValueError("give a hub backbone name (--model), a training config (--config-file) or --weights")
    if random_init and weights:
        raise ValueError("--random-init and --weights exclude each other: pick one")
    if config_file is not None and weights is None and not random_init:
        raise ValueError(
            f"--config-file {config_file} needs --weights (e.g. a teacher_checkpoint.pth) or --random-init"
        )
    if config_file is not None:
        options = dict(random_init=random_init, seed=seed, device=device, validate=False, argument="--weights")
        return load_backbone(config=config_file, weights=weights, **options)
    if name is None:  # weights alone: the family that recognises them builds the architecture they tell
        return load_backbone(weights, device=device, argument="--weights")
    catalog.get_backbone(name)  # unknown names fail here, before any weights are read
    options = dict(random_init=random_init, seed=seed, device=device, argument="--weights")
    return load_backbone(name, weights=weights, **options)


def cpu_backbone(name=None, weights=None, *, config_file=None, random_init: bool = False, seed: int = 0) -> nn.Module:
    """The model of :func:`cpu_loaded` (eval mode, CPU)."""
    return cpu_loaded(name, weights, config_file=config_file, random_init=random_init, seed=seed).model


def add_backbone_args(parser: argparse.ArgumentParser) -> None:
    """``--model NAME | --config-file F``, ``--weights W``, ``--random-init``, ``--seed``."""
    names = catalog.backbone_names()  # read now: families registered after import count
    which = parser.add_mutually_exclusive_group()  # neither: --weights alone (checked by cpu_loaded)
    which.add_argument("--model", choices=names, metavar="NAME", help=f"hub backbone: {', '.join(names)}")
    which.add_argument("--config-file", help="a training config (e.g. <run>/config.yaml): its teacher backbone")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights",
        help="weights file or folder: released hub .pth (DINOv2 or DINOv3), teacher_checkpoint.pth, Hugging Face "
        "or timm model (default for --model: the released weights, downloaded); alone, without --model or "
        "--config-file, the architecture is read from the weights",
    )
    weights.add_argument("--random-init", action="store_true", help="the released initialisation (seeded)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init")


def check_backbone_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage error (exit code 2) when no backbone is named: none of ``--model``, ``--config-file``, ``--weights``."""
    if args.model is None and args.config_file is None and not args.weights:
        parser.error("one of --model NAME, --config-file F or --weights W (alone: its architecture) is required")


def loaded_from_args(args: argparse.Namespace, device="cpu") -> LoadedBackbone:
    """The backbone of :func:`add_backbone_args`' flags and its facts, eval mode, on ``device`` (None: the eval
    device, :func:`~dinov2.features.backbone.eval_device`)."""
    options = dict(config_file=args.config_file, random_init=args.random_init, seed=args.seed, device=device)
    return cpu_loaded(args.model, args.weights, **options)


def backbone_from_args(args: argparse.Namespace) -> nn.Module:
    """The backbone of :func:`add_backbone_args`' flags (eval mode, CPU)."""
    return loaded_from_args(args).model


def check_eval_args(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    datasets: Sequence[tuple[str, str, bool]] = (),
    *,
    hub_names: bool = False,
) -> None:
    """Usage errors (``parser.error``: exit code 2) for what would otherwise fail once the run has started, in this
    order: the config (``--config-file`` and the overrides ``args.opts``: file, keys, values), a local
    ``--pretrained-weights`` that does not exist, and each dataset string of ``datasets`` (``(flag, attribute,
    required)``; an attribute may hold a list of strings) that is missing or malformed (name, keys).

    ``hub_names``: the command also takes a hub backbone name or ``''`` (the architecture read from the weights) as
    ``--config-file``; those have no config to check and take no overrides.
    """
    if hub_names and (not args.config_file or args.config_file in catalog.BACKBONES):
        if args.opts:
            source = args.config_file or "'' (weights alone)"
            parser.error(f"overrides {list(args.opts)} change a config; --config-file {source} has none")
    else:
        with usage_errors(parser, FileNotFoundError, ConfigKeyError, ConfigValueError):
            load_cfg(args.config_file, args.opts)
    weights = args.pretrained_weights
    if weights and not is_url(weights) and not os.path.exists(os.path.expanduser(weights)):
        parser.error(f"--pretrained-weights {weights!r} does not exist (a file, a checkpoint folder or a URL)")
    for flag, attribute, required in datasets:
        value = getattr(args, attribute, None)
        if not value:
            if required:
                parser.error(f"the following arguments are required: {flag}")
            continue
        default = " (the default)" if value == parser.get_default(attribute) else ""
        for dataset_str in [value] if isinstance(value, str) else value:
            with usage_errors(parser, ValueError, flag=f"{flag}{default}"):
                parse_dataset_str(dataset_str)
    if getattr(args, "output_dir", None):  # last: a mistake above makes no folder
        check_writable_dir(parser, args.output_dir, "--output-dir")
