"""Evaluation set-up: the shared command line, the evaluated backbone and its weights, the autocast dtype.

Released names and flags (``dinov2/eval/setup.py``): :func:`get_args_parser` (``--config-file``,
``--pretrained-weights``, ``--output-dir``, ``--opts key=value ...``), :func:`get_autocast_dtype`,
:func:`build_model_for_eval`, :func:`setup_and_build_model`.

The backbone is the teacher built from the config (``dinov2.models.build_model_from_cfg``; eval configs
such as ``dinov2/configs/eval/vitl14_pretrain.yaml`` are partial training configs merged on the defaults).
``--pretrained-weights`` is a local file or a URL (downloaded by ``torch.hub``), always read with
``weights_only=True``, holding any of:

- a training export ``teacher_checkpoint.pth`` (``{"teacher": {"backbone.*": ..., "dino_head.*": ...}}``),
- a trainer checkpoint or a plain backbone state dict (``module.`` / ``backbone.`` / ``_orig_mod.``
  prefixes and chunked ``blocks.<chunk>.<index>`` names are converted),
- a released hub backbone (``dinov2_vitl14_pretrain.pth``).

Deviation: loading is strict. The release loaded with ``strict=False`` and only logged the missing keys,
so a config that did not match the weights evaluated a half-random model; here any missing or unexpected
key or shape mismatch raises :class:`WeightsMismatchError` listing them, before anything is copied.

Position embeddings: the stored table must have the size the weights were trained with. Released hub
weights have a 37 x 37 grid (518 px at patch 14): the eval configs set ``crops.global_crops_size: 518``
for that reason, and the model interpolates the table to the evaluated image size (224) at every forward.
A training export made with ``global_crops_size`` S needs a config with the same S (the training config
itself works); the mismatch error says which size to pass (``--opts crops.global_crops_size=S``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from dinov2 import distributed
from dinov2.hub.utils import fetch_state_dict
from dinov2.models import build_model_from_cfg
from dinov2.models.convert import flat_to_chunked, to_backbone_state_dict
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

_URL_SCHEMES = ("http", "https", "ftp", "file", "s3")
_LISTED = 8  # keys listed per category in a mismatch error


class WeightsMismatchError(RuntimeError):
    """Pretrained weights do not fit the backbone built from the config (nothing was loaded)."""


def get_args_parser(
    description: str | None = None,
    parents: list[argparse.ArgumentParser] | None = None,
    add_help: bool = True,
) -> argparse.ArgumentParser:
    """The flags every evaluation script shares (released names and defaults)."""
    parser = argparse.ArgumentParser(description=description, parents=parents or [], add_help=add_help)
    parser.add_argument(
        "--config-file",
        type=str,
        help="model config (e.g. dinov2/configs/eval/vitl14_pretrain.yaml, or the training config of an export)",
    )
    parser.add_argument(
        "--pretrained-weights",
        type=str,
        help="backbone weights: teacher_checkpoint.pth of a training run, a hub backbone .pth, or a URL",
    )
    parser.add_argument("--output-dir", default="", type=str, help="Output directory to write results and logs")
    parser.add_argument(
        "--opts", help="config overrides key=value (e.g. crops.global_crops_size=518)", default=[], nargs="+"
    )
    return parser


def get_autocast_dtype(config) -> torch.dtype:
    """``compute_precision.teacher.backbone.mixed_precision.param_dtype``: fp16 / bf16, anything else fp32."""
    param_dtype = config.compute_precision.teacher.backbone.mixed_precision.param_dtype
    return {"fp16": torch.half, "bf16": torch.bfloat16}.get(param_dtype, torch.float)


def eval_device() -> torch.device:
    """This process's CUDA device when CUDA is available (set by ``distributed.enable``), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def autocast_context(dtype: torch.dtype, device: torch.device | str) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for the backbone forward.

    Autocast runs on CUDA only: the release used ``torch.cuda.amp.autocast``, which leaves CPU ops in
    float32, so CPU results here equal the release's (and CPU fp16 autocast would be slow).
    """
    device = torch.device(device)
    if device.type != "cuda" or dtype == torch.float32:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type="cuda", dtype=dtype)


def _is_url(source: str) -> bool:
    return urlparse(source).scheme in _URL_SCHEMES


def read_backbone_weights(pretrained_weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat hub-layout backbone state dict from a file or URL (see the module docstring for formats)."""
    if pretrained_weights is None or str(pretrained_weights) == "":
        raise ValueError(
            "--pretrained-weights is required: pass a training export (<output_dir>/eval/<iter>/teacher_checkpoint"
            ".pth), a hub backbone file (e.g. dinov2_vits14_pretrain.pth) or a URL"
        )
    source = str(pretrained_weights)
    if _is_url(source):
        checkpoint = fetch_state_dict(source)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"--pretrained-weights {source!r} does not exist (looked in {os.getcwd()} for a relative path); "
                "pass a teacher_checkpoint.pth, a hub backbone .pth or a URL"
            )
        checkpoint = fetch_state_dict(path)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"--pretrained-weights {source!r} holds a {type(checkpoint).__name__}, not a state dict")
    state_dict = to_backbone_state_dict(checkpoint)
    if not any(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(
            f"--pretrained-weights {source!r} holds no tensors at the top level or under 'teacher' / 'model' / "
            f"'state_dict' (keys: {sorted(checkpoint)[:_LISTED]}); is it a backbone checkpoint?"
        )
    return state_dict


def _hints(model: nn.Module, mismatched: list[tuple[str, tuple, tuple]], missing, unexpected) -> list[str]:
    """Likely causes of a mismatch, in terms of config keys."""
    hints = []
    shapes = {key: (got, want) for key, got, want in mismatched}
    if "cls_token" in shapes:
        got, want = shapes["cls_token"]
        hints.append(f"the weights have embed dim {got[-1]}, the config builds {want[-1]}: check student.arch")
    elif "pos_embed" in shapes:
        got, want = shapes["pos_embed"]
        side = math.isqrt(got[1] - 1)
        if side * side == got[1] - 1:
            size = side * model.patch_size
            hints.append(
                f"the weights store a {side} x {side} position grid (images of {size} px at patch "
                f"{model.patch_size}): pass --opts crops.global_crops_size={size}"
            )
    if "patch_embed.proj.weight" in shapes and "cls_token" not in shapes:
        got, _ = shapes["patch_embed.proj.weight"]
        hints.append(f"the weights use patch size {got[-1]}: set student.patch_size={got[-1]}")
    if any("register_tokens" in k for k in [*missing, *unexpected]) or "register_tokens" in shapes:
        hints.append("the number of register tokens differs: check student.num_register_tokens")
    if any(".mlp.w12." in k for k in unexpected) or any(".mlp.fc1." in k for k in unexpected):
        hints.append("the FFN type differs: check student.ffn_layer (swiglufused for ViT-g)")
    if any(k.startswith("blocks.") for k in [*missing, *unexpected]) and not hints:
        hints.append("the number of blocks differs: check student.arch")
    return hints


def _mismatch_message(model, missing, unexpected, mismatched, source) -> str:
    lines = [f"weights {source!r} do not fit the backbone built from the config (nothing was loaded):"]
    if missing:
        lines.append(f"  {len(missing)} missing key(s): {missing[:_LISTED]}{' ...' if len(missing) > _LISTED else ''}")
    if unexpected:
        more = " ..." if len(unexpected) > _LISTED else ""
        lines.append(f"  {len(unexpected)} unexpected key(s): {unexpected[:_LISTED]}{more}")
    if mismatched:
        shown = [f"{k}: weights {list(got)} vs model {list(want)}" for k, got, want in mismatched[:_LISTED]]
        lines.append(f"  {len(mismatched)} shape mismatch(es): " + "; ".join(shown))
    hints = _hints(model, mismatched, missing, unexpected)
    lines += [f"  hint: {hint}" for hint in hints]
    lines.append("  Use the config the weights were trained with (its student.* and crops.global_crops_size).")
    return "\n".join(lines)


def check_backbone_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> dict:
    """``state_dict`` renamed for ``model`` (chunked blocks); :class:`WeightsMismatchError` lists every missing
    or unexpected key and shape mismatch. Works on a model built on the meta device."""
    if getattr(model, "chunked_blocks", False):
        state_dict = flat_to_chunked(state_dict, model.n_blocks, len(model.blocks))
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise WeightsMismatchError(_mismatch_message(model, missing, unexpected, mismatched, source))
    return dict(state_dict)


def load_backbone_weights(model: nn.Module, pretrained_weights: str | os.PathLike) -> None:
    """Load ``pretrained_weights`` (file or URL) into ``model`` strictly, or raise :class:`WeightsMismatchError`
    (before anything is copied)."""
    state_dict = check_backbone_weights(model, read_backbone_weights(pretrained_weights), str(pretrained_weights))
    model.load_state_dict(state_dict, strict=True)
    logger.info("Loaded %d backbone tensors from %s", len(state_dict), pretrained_weights)


def build_model_for_eval(config, pretrained_weights: str | os.PathLike, device: torch.device | None = None):
    """The config's teacher backbone with ``pretrained_weights`` loaded strictly, frozen, in eval mode on
    ``device`` (default :func:`eval_device`).

    The model is built on the meta device and materialised only once the weights are known to cover every
    tensor, so no time goes into a random initialisation that the weights overwrite (seconds for ViT-g).
    """
    device = device or eval_device()
    state_dict = read_backbone_weights(pretrained_weights)
    with torch.device("meta"):
        model, _ = build_model_from_cfg(config, only_teacher=True)
    state_dict = check_backbone_weights(model, state_dict, str(pretrained_weights))
    if set(dict(model.named_buffers())) - set(state_dict):  # a buffer the weights do not set: initialise normally
        model, _ = build_model_from_cfg(config, only_teacher=True)
        model.to(device)
    else:
        model.to_empty(device=device)
    model.load_state_dict(state_dict, strict=True)
    logger.info("Loaded %d backbone tensors from %s", len(state_dict), pretrained_weights)
    model.requires_grad_(False)
    return model.eval()


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
