"""Released path of the config loader (``dinov2.utils.config``): a re-export of :mod:`dinov2.config` plus what
needs the packages above it.

This module is the released-path shim allowed to import upward: it imports the registry checks of ``models/``,
``loss/``, ``data/`` and ``distributed/`` (so :func:`load_cfg` from here validates every key), and keeps the
released ``setup`` / ``default_setup`` (logging, seeds, the process group's size for the scaling rule) and the
training command line (:func:`get_args_parser`, shared by the train and launcher scripts). New code loads configs
through :mod:`dinov2.config`.

Released entry points kept with their names: ``get_cfg_from_args``, ``apply_scaling_rules_to_cfg``,
``write_config``, ``default_setup``, ``setup``.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from omegaconf import DictConfig

import dinov2.data.config_checks  # noqa: F401  (registers the value checks of the registries)
import dinov2.distributed as distributed
import dinov2.distributed.config_checks  # noqa: F401
import dinov2.loss.config_checks  # noqa: F401
import dinov2.models.config_checks  # noqa: F401
from dinov2.config import *  # noqa: F403  (the released path re-exports the whole package)
from dinov2.config import __all__ as _config_names
from dinov2.config import apply_scaling_rules, get_cfg_from_args, write_config
from dinov2.utils.cli import ArgumentParser, UnsupportedFlag

__all__ = [*_config_names, "apply_scaling_rules_to_cfg", "default_setup", "get_args_parser", "setup"]

logger = logging.getLogger("dinov2")

_EVAL_HELP = "released flag that never did anything: only the empty value is accepted (see --eval-only)"
_EVAL_INSTEAD = (
    "--eval-only exports the teacher of the latest checkpoint to <output-dir>/eval/manual_<iteration>/; evaluate an "
    "export with dinov2-eval-knn, dinov2-eval-linear or dinov2-eval-log-regression (python -m dinov2.eval.knn ...) "
    "--config-file <output-dir>/config.yaml --pretrained-weights <export>/teacher_checkpoint.pth"
)


def apply_scaling_rules_to_cfg(cfg: DictConfig, world_size: int | None = None) -> DictConfig:
    """Set ``optim.lr`` from ``optim.base_lr`` (in place; returns ``cfg``); ``world_size`` defaults to the number
    of processes of the default process group (1 without one). See :func:`dinov2.config.apply_scaling_rules`."""
    return apply_scaling_rules(cfg, distributed.get_global_size() if world_size is None else world_size)


def default_setup(args: argparse.Namespace, seed: int = 0) -> None:
    """Logging to ``args.output_dir``, seeds ``seed + rank``, and the git state and arguments in the log.

    The process group must already exist (the release started it here): the rank and world size are read from it.
    """
    from dinov2.logging import setup_logging
    from dinov2.utils import utils

    setup_logging(output=args.output_dir, level=logging.INFO)
    utils.fix_random_seeds(seed + distributed.get_global_rank())
    logger.info(f"git:\n  {utils.get_sha()}\n")
    logger.info("\n".join(f"{k}: {v}" for k, v in sorted(vars(args).items())))


def setup(args: argparse.Namespace) -> DictConfig:
    """Load and check the config, set up logging and seeds, apply the scaling rule, write ``config.yaml``.

    Seeds are ``train.seed + rank`` (the release always used ``0 + rank``; ``train.seed`` defaults to 0). Only the
    main process writes ``config.yaml``.
    """
    cfg = get_cfg_from_args(args)
    os.makedirs(args.output_dir, exist_ok=True)
    default_setup(args, seed=cfg.train.seed)
    apply_scaling_rules_to_cfg(cfg)
    if distributed.is_main_process():
        write_config(cfg, args.output_dir)
    return cfg


def get_args_parser(
    description: str = "DINOv2 training",
    add_help: bool = True,
    parents: Sequence[argparse.ArgumentParser] | None = None,
) -> argparse.ArgumentParser:
    """The released training command line: ``--config-file --no-resume --eval-only --eval --output-dir opts``, plus
    DINOv3's ``--multi-distillation``.

    Defaults are shown in ``--help``. ``--eval`` is kept for released command lines but did nothing in the release:
    a value other than ``""`` is a usage error naming ``--eval-only`` and the evaluation commands.
    """
    parser = ArgumentParser(description=description, parents=list(parents or []), add_help=add_help)
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--no-resume",
        action="store_true",
        help="Whether to not attempt to resume from the checkpoint directory. ",
    )
    parser.add_argument("--eval-only", action="store_true", help="perform evaluation only")
    parser.add_argument("--eval", type=str, default="", action=UnsupportedFlag, instead=_EVAL_INSTEAD, help=_EVAL_HELP)
    parser.add_argument(
        "--multi-distillation",
        action="store_true",
        help="(DINOv3's flag) several students at once; implied by multidistillation.enabled=true in the config",
    )
    parser.add_argument(
        "opts",
        help='Modify config options at the end of the command using "path.key=value", e.g. optim.epochs=10',
        default=None,
        nargs=argparse.REMAINDER,
    )
    parser.add_argument(
        "--output-dir",
        "--output_dir",
        default="",
        type=str,
        help="Output directory to save logs and checkpoints",
    )
    return parser
