"""The backbone of a picture or export command: a hub backbone by name, or the teacher of a training config.

Weights come from any format :func:`dinov2.models.weights.load_backbone_state_dict` reads (released hub file,
training export ``teacher_checkpoint.pth``, Hugging Face or timm folder / file), the released weights of a hub
name (downloaded), or nowhere (``random_init``: the released initialisation, seeded).
"""

from __future__ import annotations

import argparse
import logging
import math
import os

import torch

from dinov2.hub import backbones as hub_backbones
from dinov2.hub.utils import load_strict
from dinov2.models.convert import flat_to_chunked
from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.models.weights import load_backbone_state_dict

logger = logging.getLogger("dinov2")

__all__ = ["BACKBONE_NAMES", "BACKBONE_NOTE", "add_backbone_args", "backbone_from_args", "load_backbone"]

BACKBONE_NAMES = tuple(sorted(name for name in dir(hub_backbones) if name.startswith("dinov2_vit")))

# --help epilog of the commands built on add_backbone_args: they have no config of their own to override
BACKBONE_NOTE = (
    "No key=value overrides: this command has no config of its own. The backbone is a hub\n"
    "model (--model) or the teacher of a training config used as it is (--config-file,\n"
    "e.g. <run>/config.yaml); everything else is set by the options."
)


def _img_size_of(state_dict: dict, patch_size: int) -> int:
    """Image size whose grid is the stored position table of ``state_dict`` (518 for the hub weights)."""
    return math.isqrt(state_dict["pos_embed"].shape[1] - 1) * patch_size


def load_backbone(
    name: str | None = None,
    weights: str | os.PathLike | None = None,
    *,
    config_file: str | os.PathLike | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> DinoVisionTransformer:
    """A backbone in eval mode on the CPU: hub ``name`` or the teacher of ``config_file`` (exactly one).

    ``weights`` loads strictly (any supported format); without it a hub name downloads its released weights,
    unless ``random_init``. With a hub name, the position table keeps the size stored in ``weights`` (a training
    export at 224 px keeps its 16 x 16 grid), so the numbers are those of the trained model.
    """
    if (name is None) == (config_file is None):
        raise ValueError("give a hub backbone name (--model) or a training config (--config-file), not both")
    if random_init and weights:
        raise ValueError("--random-init and --weights exclude each other: pick one")
    torch.manual_seed(seed)
    state_dict = None if weights is None else load_backbone_state_dict(weights)
    if config_file is not None:
        from dinov2.models import build_model_from_cfg
        from dinov2.utils.config import load_cfg

        if state_dict is None and not random_init:
            raise ValueError(
                f"--config-file {config_file} needs --weights (e.g. a teacher_checkpoint.pth) or --random-init"
            )
        model, _ = build_model_from_cfg(load_cfg(config_file, validate=False), only_teacher=True)
        what = f"the teacher of {config_file}"
    else:
        if name not in BACKBONE_NAMES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
        builder = getattr(hub_backbones, name)
        extra = {} if state_dict is None else {"img_size": _img_size_of(state_dict, 14)}
        model = builder(pretrained=state_dict is None and not random_init, **extra)
        what = name
    if state_dict is not None:
        if model.chunked_blocks:
            state_dict = flat_to_chunked(state_dict, model.n_blocks, len(model.blocks))
        load_strict(model, state_dict, weights, what)
    return model.eval()


def add_backbone_args(parser: argparse.ArgumentParser) -> None:
    """``--model NAME | --config-file F``, ``--weights W``, ``--random-init``, ``--seed``."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model", choices=BACKBONE_NAMES, metavar="NAME", help=f"hub backbone: {', '.join(BACKBONE_NAMES)}"
    )
    which.add_argument("--config-file", help="a training config (e.g. <run>/config.yaml): its teacher backbone")
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights",
        help="weights file or folder: released hub .pth, teacher_checkpoint.pth, Hugging Face or timm model "
        "(default for --model: the released weights, downloaded)",
    )
    weights.add_argument("--random-init", action="store_true", help="the released initialisation (seeded)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --random-init")


def backbone_from_args(args: argparse.Namespace) -> DinoVisionTransformer:
    return load_backbone(args.model, args.weights, config_file=args.config_file, random_init=args.random_init,
                         seed=args.seed)  # fmt: skip
