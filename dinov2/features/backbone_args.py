"""Command-line flags of the tools that take a backbone without a config of their own (pictures, export):
``--model NAME | --config-file F``, ``--weights W``, ``--random-init``, ``--seed``, read by the backbone door."""

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
from dinov2.utils.cli import usage_errors

__all__ = [
    "BACKBONE_NOTE",
    "add_backbone_args",
    "backbone_from_args",
    "check_eval_args",
    "cpu_backbone",
    "flag_backbone",
    "loaded_backbone_from_args",
]

# --help epilog of the commands built on add_backbone_args: they have no config of their own to override
BACKBONE_NOTE = (
    "No key=value overrides: this command has no config of its own. The backbone is a hub\n"
    "model (--model) or the teacher of a training config used as it is (--config-file,\n"
    "e.g. <run>/config.yaml); everything else is set by the options."
)


def cpu_backbone(name=None, weights=None, *, config_file=None, random_init: bool = False, seed: int = 0) -> nn.Module:
    """Hub backbone ``name`` or the teacher of ``config_file`` (exactly one), in eval mode on the CPU.

    ``weights`` loads strictly (any format :mod:`dinov2.models.weights` reads); without it a hub name downloads its
    released weights, unless ``random_init``. With a hub name, the position table keeps the size stored in
    ``weights`` (a training export at 224 px keeps its 16 x 16 grid), so the numbers are those of the trained model.
    """
    return flag_backbone(name, weights, config_file=config_file, random_init=random_init, seed=seed).model


def flag_backbone(
    name=None, weights=None, *, config_file=None, random_init: bool = False, seed: int = 0, device="cpu"
) -> LoadedBackbone:
    """:func:`cpu_backbone` on ``device`` (None: :func:`~dinov2.features.backbone.eval_device`), with its
    preprocessing facts (:class:`~dinov2.features.backbone.LoadedBackbone`)."""
    if (name is None) == (config_file is None):
        raise ValueError("give a hub backbone name (--model) or a training config (--config-file), not both")
    if random_init and weights:
        raise ValueError("--random-init and --weights exclude each other: pick one")
    if config_file is not None and weights is None and not random_init:
        raise ValueError(
            f"--config-file {config_file} needs --weights (e.g. a teacher_checkpoint.pth) or --random-init"
        )
    if config_file is not None:
        options = dict(random_init=random_init, seed=seed, device=device, validate=False, argument="--weights")
        return load_backbone(config=config_file, weights=weights, **options)
    catalog.get_backbone(name)  # unknown names fail here, before any weights are read
    return load_backbone(name, weights=weights, random_init=random_init, seed=seed, device=device)


def add_backbone_args(parser: argparse.ArgumentParser) -> None:
    """``--model NAME | --config-file F``, ``--weights W``, ``--random-init``, ``--seed``."""
    names = catalog.backbone_names()  # read now: families registered after import count
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", choices=names, metavar="NAME", help=f"hub backbone: {', '.join(names)}")
    which.add_argument("--config-file", help="a training config (e.g. <run>/config.yaml): its teacher backbone")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights",
        help="weights file or folder: released hub .pth, teacher_checkpoint.pth, Hugging Face or timm model "
        "(default for --model: the released weights, downloaded)",
    )
    weights.add_argument("--random-init", action="store_true", help="the released initialisation (seeded)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init")


def backbone_from_args(args: argparse.Namespace) -> nn.Module:
    """The backbone of :func:`add_backbone_args`' flags (eval mode, CPU)."""
    options = dict(config_file=args.config_file, random_init=args.random_init, seed=args.seed)
    return cpu_backbone(args.model, args.weights, **options)


def loaded_backbone_from_args(args: argparse.Namespace, device=None) -> LoadedBackbone:
    """The backbone of :func:`add_backbone_args`' flags with its facts, on ``device`` (None: the eval device)."""
    options = dict(config_file=args.config_file, random_init=args.random_init, seed=args.seed, device=device)
    return flag_backbone(args.model, args.weights, **options)


def check_eval_args(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    datasets: Sequence[tuple[str, str, bool]] = (),
) -> None:
    """Usage errors (``parser.error``: exit code 2) for what would otherwise fail once the run has started, in this
    order: the config (``--config-file`` and the overrides ``args.opts``: file, keys, values), a local
    ``--pretrained-weights`` that does not exist, and each dataset string of ``datasets`` (``(flag, attribute,
    required)``; an attribute may hold a list of strings) that is missing or malformed (name, keys).
    """
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
