"""Evaluation set-up: the shared command line, the evaluated backbone and its weights, the autocast dtype.

Released names and flags (``dinov2/eval/setup.py``): :func:`get_args_parser` (``--config-file``,
``--pretrained-weights``, ``--output-dir``, ``--opts key=value ...``), :func:`get_autocast_dtype`,
:func:`build_model_for_eval`, :func:`setup_and_build_model`.

The backbone comes through the one backbone door, :func:`dinov2.features.load_backbone`: the teacher built
from the config (``dinov2.models.build_model_from_cfg``; eval configs
such as ``dinov2/configs/eval/vitl14_pretrain.yaml`` are partial training configs merged on the defaults).
``--pretrained-weights`` is any source :mod:`dinov2.models.weights` reads (a local file, a trainer checkpoint
folder or a URL, downloaded into the ``torch.hub`` cache), always read with ``weights_only=True``:

- a training export ``teacher_checkpoint.pth`` (``{"teacher": {"backbone.*": ..., "dino_head.*": ...}}``),
- a trainer checkpoint folder ``<output_dir>/model_<iteration>`` (its teacher backbone),
- a plain backbone state dict (``module.`` / ``backbone.`` / ``_orig_mod.`` prefixes and chunked
  ``blocks.<chunk>.<index>`` names are converted),
- a released hub backbone (``dinov2_vitl14_pretrain.pth``).

Deviation: loading is strict. The release loaded with ``strict=False`` and only logged the missing keys,
so a config that did not match the weights evaluated a half-random model; here any missing or unexpected
key or shape mismatch raises :class:`WeightsMismatchError` (the fit report of :mod:`dinov2.models.weights`)
listing them and the config keys to change, before anything is copied.

Position embeddings: the stored table must have the size the weights were trained with. Released hub
weights have a 37 x 37 grid (518 px at patch 14): the eval configs set ``crops.global_crops_size: 518``
for that reason, and the model interpolates the table to the evaluated image size (224) at every forward.
A training export made with ``global_crops_size`` S needs a config with the same S (the training config
itself works); the mismatch error says which size to pass (``--opts crops.global_crops_size=S``).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping

import torch
from torch import nn

from dinov2 import distributed
from dinov2.features.backbone import autocast_context, autocast_dtype_of, eval_device, load_backbone
from dinov2.models import weights
from dinov2.models.weights import WeightsMismatchError
from dinov2.utils.cli import ArgumentParser, add_opts_flag, add_output_dir
from dinov2.utils.config import setup

logger = logging.getLogger("dinov2")

__all__ = [
    "WeightsMismatchError",
    "get_args_parser",
    "get_autocast_dtype",
    "eval_device",
    "autocast_context",
    "read_backbone_weights",
    "check_backbone_weights",
    "load_backbone_weights",
    "build_model_for_eval",
    "setup_and_build_model",
]

_ARGUMENT = "--pretrained-weights"
_SETTER = "--opts {key}={value}"  # how an eval user changes a config key


def get_args_parser(
    description: str | None = None,
    parents: list[argparse.ArgumentParser] | None = None,
    add_help: bool = True,
    required: bool = False,
) -> argparse.ArgumentParser:
    """The flags every evaluation script shares (released names and defaults).

    ``required``: declare ``--config-file`` and ``--pretrained-weights`` required (the protocol command lines do:
    the release declared them optional and then failed without them). ``--output_dir`` is an alias of
    ``--output-dir``; ``--opts key=value ...`` overrides the config (protocols also take them trailing).
    """
    parser = ArgumentParser(description=description, parents=parents or [], add_help=add_help)
    parser.add_argument(
        "--config-file",
        type=str,
        required=required,
        help="model config (e.g. dinov2/configs/eval/vitl14_pretrain.yaml, or the training config of an export)",
    )
    parser.add_argument(
        "--pretrained-weights",
        type=str,
        required=required,
        help="backbone weights: teacher_checkpoint.pth of a training run, a hub backbone .pth, or a URL",
    )
    add_output_dir(parser, help="Output directory to write results and logs (default: the working directory)")
    add_opts_flag(parser, "the model config")
    return parser


def get_autocast_dtype(config) -> torch.dtype:
    """The compute dtype of the evaluated teacher: the training precision policy's view of
    ``compute_precision.teacher.backbone.mixed_precision.param_dtype`` (fp32, fp16 or bf16)."""
    return autocast_dtype_of(config)


def read_backbone_weights(pretrained_weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat hub-layout backbone state dict from ``--pretrained-weights`` (see the module docstring for formats)."""
    return weights.read_backbone_weights(pretrained_weights, argument=_ARGUMENT)


def check_backbone_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> dict:
    """``state_dict`` renamed for ``model`` (chunked blocks); :class:`WeightsMismatchError` lists every missing
    or unexpected key and shape mismatch, with the config keys to change. Works on a model on the meta device."""
    report = weights.fit_report(model, state_dict)
    report.raise_if_mismatched(source, setter=_SETTER)
    return report.state_dict


def load_backbone_weights(model: nn.Module, pretrained_weights: str | os.PathLike) -> None:
    """Load ``pretrained_weights`` (file, folder or URL) into ``model`` strictly, or raise
    :class:`WeightsMismatchError` (before anything is copied)."""
    weights.load_backbone_weights(model, pretrained_weights, argument=_ARGUMENT, setter=_SETTER)


def build_model_for_eval(config, pretrained_weights: str | os.PathLike, device: torch.device | None = None):
    """The config's teacher backbone with ``pretrained_weights`` loaded strictly, frozen, in eval mode on
    ``device`` (default :func:`eval_device`): :func:`dinov2.features.load_backbone` with this config.

    The model is built on the meta device and materialised only once the weights are known to cover every
    tensor, so no time goes into a random initialisation that the weights overwrite (seconds for ViT-g).
    """
    loaded = load_backbone(config=config, weights=pretrained_weights, device=device, argument=_ARGUMENT, setter=_SETTER)
    return loaded.model


def setup_and_build_model(args: argparse.Namespace) -> tuple[nn.Module, torch.dtype]:
    """Join the process group (if launched with one), load the config (``setup``: logging, seeds,
    ``<output_dir>/config.yaml``), build the backbone. Returns (model, autocast dtype)."""
    if not getattr(args, "config_file", None):
        raise ValueError(
            "--config-file is required: e.g. dinov2/configs/eval/vits14_pretrain.yaml for a hub ViT-S/14, or the "
            "training config of a teacher_checkpoint.pth"
        )
    distributed.enable(overwrite=True)
    torch.backends.cudnn.benchmark = True
    config = setup(args)
    model = build_model_for_eval(config, args.pretrained_weights)
    autocast_dtype = get_autocast_dtype(config)
    logger.info(
        "Evaluating %s (%s) with autocast dtype %s", config.student.arch, args.pretrained_weights, autocast_dtype
    )
    return model, autocast_dtype
