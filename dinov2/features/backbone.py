"""The one door to a frozen backbone: :func:`load_backbone` turns a source into an eval-mode backbone and the
facts its users need to preprocess images and read its tokens (:class:`LoadedBackbone`).

Sources:

- a training / eval **config** (a YAML path or a loaded config, ``config=``) + ``weights``: the config's
  teacher (:func:`dinov2.models.build_model_from_cfg`), built on the meta device and materialised only once the
  weights are known to fit (strict: :class:`~dinov2.models.weights.WeightsMismatchError` lists every difference);
- a **hub name** (``dinov2_vits14``, any name of :data:`dinov2.hub.catalog.BACKBONES`) + optional ``weights``:
  the released weights (downloaded) when none are given; given weights keep their stored position table size;
- a **training output folder** (holds ``config.yaml``): its config and its newest weights (the latest teacher
  export ``eval/<tag>_<iteration>/teacher_checkpoint.pth`` or the latest complete checkpoint ``model_<iteration>``,
  whichever is newer; an export wins a tie);
- a **weights file or folder** alone (Hugging Face / timm folder, safetensors file, hub file, training export):
  the model family that recognises the weights infers the architecture from them.

Weights are read by :mod:`dinov2.models.weights` only (``weights_only=True``). ``random_init`` builds the
released initialisation (seeded) instead of loading weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from dinov2.hub import catalog
from dinov2.hub.backbones import check_family, make_backbone
from dinov2.hub.utils import load_strict
from dinov2.models import build_model_from_cfg
from dinov2.models import weights as weights_io
from dinov2.models.families import ModelFamily, family_for_student, family_for_weights, get_family
from dinov2.utils.config import load_cfg
from dinov2.utils.dtype import parse_dtype

logger = logging.getLogger("dinov2")

__all__ = [
    "LoadedBackbone",
    "load_backbone",
    "eval_device",
    "autocast_context",
    "autocast_dtype_of",
    "run_weights",
]

_EXPORT = re.compile(r"^[A-Za-z]+_(\d+)$")  # eval/training_<iteration>, eval/manual_<iteration>
_CHECKPOINT = re.compile(r"^model_(\d+)$")
_CHECKPOINT_MARKER = "COMPLETE"  # written last into a checkpoint folder (dinov2.train.checkpointing)


@dataclasses.dataclass(frozen=True)
class LoadedBackbone:
    """A frozen backbone in eval mode and its preprocessing facts.

    ``num_extra_tokens``: tokens before the patch tokens (cls + registers / storage tokens); ``mean`` / ``std``:
    the input normalisation (RGB in [0, 1]); ``autocast_dtype``: the config's teacher compute dtype (float32
    without a config); ``source``: what it was loaded from (for logs).
    """

    model: nn.Module
    family: str
    arch: str
    patch_size: int
    embed_dim: int
    num_extra_tokens: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str
    autocast_dtype: torch.dtype = torch.float32
    config: DictConfig | None = None


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


def autocast_dtype_of(config) -> torch.dtype:
    """The teacher's compute dtype: ``compute_precision.teacher.backbone.mixed_precision.param_dtype``."""
    key = "compute_precision.teacher.backbone.mixed_precision.param_dtype"
    return parse_dtype(config.compute_precision.teacher.backbone.mixed_precision.param_dtype, key)


def run_weights(run_dir: str | os.PathLike) -> Path:
    """The newest weights of a training output folder: the latest teacher export or complete checkpoint."""
    run_dir = Path(run_dir)
    found = []  # (iteration, is export, path)
    for folder in (run_dir / "eval").glob("*") if (run_dir / "eval").is_dir() else ():
        match = _EXPORT.match(folder.name)
        if match and (folder / "teacher_checkpoint.pth").is_file():
            found.append((int(match.group(1)), 1, folder / "teacher_checkpoint.pth"))
    for folder in run_dir.glob("model_*"):
        match = _CHECKPOINT.match(folder.name)
        if match and (folder / _CHECKPOINT_MARKER).is_file():
            found.append((int(match.group(1)), 0, folder))
    if not found:
        raise FileNotFoundError(
            f"training output folder {str(run_dir)!r} has no teacher export (eval/<tag>_<iteration>/"
            "teacher_checkpoint.pth) and no complete checkpoint (model_<iteration>); pass weights= explicitly"
        )
    return max(found)[2]


@contextlib.contextmanager
def _seeded(seed: int):
    """The CPU random stream seeded with ``seed`` inside the block, and the caller's stream untouched after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _teacher_of_config(config: DictConfig, weights, device: torch.device, random_init: bool, seed: int, names: dict):
    """The config's teacher with ``weights`` loaded strictly (or the seeded initialisation), on ``device``.
    ``names``: ``argument`` (the flag that gave the weights) and ``setter`` (how the user changes a key)."""
    if random_init:
        with _seeded(seed):
            model, _ = build_model_from_cfg(config, only_teacher=True)
        return model.to(device)
    state_dict = weights_io.read_backbone_weights(weights, argument=names["argument"])
    with torch.device("meta"):  # no time spent on an initialisation the weights overwrite (seconds for ViT-g)
        model, _ = build_model_from_cfg(config, only_teacher=True)
    report = weights_io.fit_report(model, state_dict)
    report.raise_if_mismatched(str(weights), setter=names["setter"])
    state_dict = report.state_dict
    if set(dict(model.named_buffers())) - set(state_dict):  # a buffer the weights do not set: initialise normally
        model, _ = build_model_from_cfg(config, only_teacher=True)
        model.to(device)
    else:
        model.to_empty(device=device)
    model.load_state_dict(state_dict, strict=True)
    logger.info("Loaded %d backbone tensors from %s", len(state_dict), weights)
    return model


def _hub_backbone(
    name: str, weights, random_init: bool, seed: int, argument: str
) -> tuple[nn.Module, catalog.HubBackbone]:
    """Hub backbone ``name``: released weights, given weights (position table kept at its stored size) or none.
    ``argument`` names the weights option in errors (a download that fails offline says how to pass a file)."""
    entry = catalog.get_backbone(name)
    if weights is None and random_init:
        with _seeded(seed):
            return make_backbone(name, pretrained=False), entry
    if weights is None:
        if entry.url is None:
            raise ValueError(f"{name} has no released weights: pass {argument} or random_init")
        weights = weights_io.download(entry.url(entry.kwargs), argument=argument)
    state_dict = weights_io.read_backbone_weights(weights, argument=argument)
    family = get_family(entry.family)
    try:  # what the weights decide (position table size, norms)
        _, stored = family.kwargs_from_weights(state_dict)
    except (KeyError, ValueError, IndexError) as error:  # not this family's keys: another family's weights, or
        check_family(entry, state_dict, weights, argument, error=error)  # none (the strict load lists the differences)
        stored = {}
    model = make_backbone(name, pretrained=False, **{key: stored[key] for key in family.from_weights if key in stored})
    try:
        load_strict(model, state_dict, weights, name)
    except weights_io.WeightsMismatchError as error:
        check_family(entry, state_dict, weights, argument, error=error)
        raise
    return model, entry


def _from_weights_alone(source, random_init: bool) -> tuple[nn.Module, ModelFamily, str]:
    """A backbone whose architecture its weights tell (Hugging Face / timm folder, safetensors, hub file...)."""
    if random_init:
        raise ValueError(f"random_init needs a hub name or a config to build, not weights ({source})")
    state_dict = weights_io.read_backbone_weights(source, argument="weights")
    family = family_for_weights(state_dict)
    arch, kwargs = family.kwargs_from_weights(state_dict)
    model = family.archs[arch](**kwargs)
    load_strict(model, state_dict, source, f"{family.name} {arch}")
    return model, family, arch


def _config_of(config, overrides: Sequence[str], validate: bool) -> DictConfig:
    if isinstance(config, DictConfig):
        if overrides:
            raise ValueError(f"overrides {list(overrides)} need a config file, not a loaded config: merge them first")
        return config
    return load_cfg(config, opts=list(overrides), validate=validate)


def load_backbone(
    source: str | os.PathLike | None = None,
    *,
    weights: str | os.PathLike | Mapping | None = None,
    config: str | os.PathLike | DictConfig | None = None,
    overrides: Sequence[str] = (),
    device: torch.device | str | None = None,
    random_init: bool = False,
    seed: int = 0,
    validate: bool = True,
    argument: str = "weights",
    setter: str | None = None,
) -> LoadedBackbone:
    """A frozen, eval-mode backbone on ``device`` (default :func:`eval_device`) from ``source`` (hub name, run
    folder, weights file / folder) or ``config`` (+ ``weights``); see the module docstring.

    ``overrides``: ``key=value`` config overrides; ``random_init``: the seeded initialisation instead of weights;
    ``validate``: check the config's values (off for a run's own ``config.yaml``, already checked by the trainer);
    ``argument`` / ``setter``: how errors name the weights flag and a config change (``--opts {key}={value}``).
    """
    if random_init and weights is not None:
        raise ValueError("random_init and weights exclude each other: pick one")
    if config is not None and source is not None:
        raise ValueError(f"give a hub name / run folder / weights ({source}) or a config ({config}), not both")
    device = torch.device(device) if device is not None else eval_device()
    if source is not None and (Path(source) / "config.yaml").is_file():  # a training output folder
        if weights is None and not random_init:
            weights = run_weights(source)
        config, source, validate = Path(source) / "config.yaml", None, False
    elif source is not None and str(source).endswith((".yaml", ".yml")):
        config, source = source, None
    if config is not None:
        cfg = _config_of(config, overrides, validate)
        model = _teacher_of_config(cfg, weights, device, random_init, seed, dict(argument=argument, setter=setter))
        family, arch = family_for_student(cfg.student), str(cfg.student.arch).removesuffix("_memeff")
        what, autocast_dtype = f"the teacher of {config}", autocast_dtype_of(cfg)
    elif source is not None and str(source) in catalog.BACKBONES:
        model, entry = _hub_backbone(str(source), weights, random_init, seed, argument)
        family, arch, what, autocast_dtype, cfg = get_family(entry.family), entry.arch, str(source), torch.float32, None
        model = model.to(device)
    elif source is not None:
        if weights is not None or not (Path(source).exists() or weights_io.is_url(str(source))):
            raise ValueError(
                f"unknown backbone {str(source)!r}; choose one of {', '.join(catalog.backbone_names())}, or pass a "
                "run folder / weights file or folder as the source (and no weights=)"
            )
        model, family, arch = _from_weights_alone(source, random_init)
        what, autocast_dtype, cfg, model = str(source), torch.float32, None, model.to(device)
    else:
        raise ValueError("load_backbone needs a source: a hub name, a run folder, weights, or config= + weights=")
    model.requires_grad_(False)
    facts = dict(patch_size=family.patch_size(model), embed_dim=int(model.embed_dim), mean=family.mean, std=family.std)
    return LoadedBackbone(
        model=model.eval(),
        family=family.name,
        arch=arch,
        num_extra_tokens=family.num_extra_tokens(model),
        source=what,
        autocast_dtype=autocast_dtype,
        config=cfg,
        **facts,
    )
