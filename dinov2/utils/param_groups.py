"""Per-parameter lr/wd multipliers (layer-wise lr decay) and their optimizer groups, as in the release.

The multipliers come from parameter *names*, with the released parsing rules and their quirks (documented in
``reference/README.md`` and checked against ``reference/param_groups.json``):

- a module with an ``n_blocks`` attribute (DinoVisionTransformer) gives ``n_blocks`` and ``chunked_blocks``;
  otherwise ``len(model.blocks)``, else ``len(model.backbone.blocks)`` (the number of *chunks* for a chunked
  backbone), else 0 (heads: every multiplier is 1);
- with ``n_blocks > 0`` every name is treated as a backbone name (``force_is_backbone``): ``pos_embed``,
  ``patch_embed``, ``mask_token``, ``cls_token``, ``register_tokens`` -> layer 0; ``blocks.<i>.`` -> ``i + 1``
  (chunked names ``blocks.<chunk>.<i>.`` -> ``i + 1``); anything else -> ``n_blocks + 1``;
- lr multiplier ``lr_decay_rate ** (n_blocks + 1 - layer_id)``, times ``patch_embed_lr_mult`` for ``patch_embed``;
- wd multiplier 0 for names ending in ``.bias`` or containing ``norm`` or ``gamma``; ``last_layer`` parameters
  are flagged ``is_last_layer`` (they follow the last-layer lr schedule).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import torch
from torch import nn

logger = logging.getLogger("dinov2")

__all__ = [
    "apply_optim_scheduler",
    "build_optimizer",
    "fuse_params_groups",
    "get_params_groups_with_decay",
    "get_vit_lr_decay_rate",
]

_LAYER0_NAMES = ("pos_embed", "patch_embed", "mask_token", "cls_token", "register_tokens", "storage_tokens")
# Name segments added by wrappers (FSDP, activation checkpointing, torch.compile). The release removed only the
# FSDP one; the others never occur in an unwrapped model, so results for plain models are unchanged.
_WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def _block_index(name: str, anchor: str, position: int) -> int:
    """Integer at ``position`` of ``name[name.find(anchor):].split(".")`` (the released parsing)."""
    token = name[name.find(anchor) :].split(".")[position]
    try:
        return int(token)
    except ValueError as e:
        raise ValueError(
            f"parameter {name!r}: expected a block index after {anchor!r} at position {position}, found {token!r} "
            f"(chunked_blocks=True needs names 'blocks.<chunk>.<index>.'): {e}"
        ) from e


def _layer_id(name: str, num_layers: int, force_is_backbone: bool, chunked_blocks: bool) -> int:
    if not (name.startswith("backbone") or force_is_backbone):
        return num_layers + 1
    if any("." + token in name for token in _LAYER0_NAMES):
        return 0
    if force_is_backbone and any(token in name for token in _LAYER0_NAMES):
        return 0
    if ".blocks." in name and ".residual." not in name:
        # Nested under a wrapper (``backbone.blocks.<i>``): for a chunked backbone this reads the chunk index.
        return _block_index(name, ".blocks.", 2) + 1
    if "blocks." in name and "residual." not in name:
        return _block_index(name, "blocks.", 2 if chunked_blocks else 1) + 1
    return num_layers + 1


def get_vit_lr_decay_rate(
    name: str,
    lr_decay_rate: float = 1.0,
    num_layers: int = 12,
    force_is_backbone: bool = False,
    chunked_blocks: bool = False,
) -> float:
    """Layer-wise lr multiplier of parameter ``name``: ``lr_decay_rate ** (num_layers + 1 - layer_id)``."""
    return lr_decay_rate ** (num_layers + 1 - _layer_id(name, num_layers, force_is_backbone, chunked_blocks))


def _count_blocks(model: nn.Module) -> tuple[int, bool]:
    if hasattr(model, "n_blocks"):
        return model.n_blocks, bool(getattr(model, "chunked_blocks", False))  # DINOv3's models are never chunked
    if hasattr(model, "blocks"):
        return len(model.blocks), False
    if hasattr(model, "backbone"):
        return len(model.backbone.blocks), False
    return 0, False


def get_params_groups_with_decay(
    model: nn.Module, lr_decay_rate: float = 1.0, patch_embed_lr_mult: float = 1.0
) -> list[dict]:
    """One dict per trainable parameter of ``model``.

    Keys: ``params`` (the parameter), ``name``, ``lr_multiplier``, ``wd_multiplier``, ``is_last_layer``.
    """
    n_blocks, chunked_blocks = _count_blocks(model)
    groups = []
    for name, param in model.named_parameters():
        for segment in _WRAPPER_SEGMENTS:
            name = name.replace(segment, "")
        if not param.requires_grad:
            continue
        lr_multiplier = get_vit_lr_decay_rate(
            name, lr_decay_rate, num_layers=n_blocks, force_is_backbone=n_blocks > 0, chunked_blocks=chunked_blocks
        )
        no_wd = name.endswith(".bias") or "norm" in name or "gamma" in name
        if "patch_embed" in name:
            lr_multiplier = lr_multiplier * patch_embed_lr_mult
        group = {
            "params": param,
            "is_last_layer": "last_layer" in name,
            "lr_multiplier": lr_multiplier,
            "wd_multiplier": 0.0 if no_wd else 1.0,
            "name": name,
        }
        groups.append(group)
        logger.debug(f"{name}: lr_multiplier: {group['lr_multiplier']}, wd_multiplier: {group['wd_multiplier']}")
    logger.info(f"{len(groups)} trainable parameter tensors, {n_blocks} blocks (chunked: {chunked_blocks})")
    return groups


def fuse_params_groups(
    all_params_groups: Iterable[dict], keys: Sequence[str] = ("lr_multiplier", "wd_multiplier", "is_last_layer")
) -> list[dict]:
    """Merge per-parameter dicts with equal ``keys`` values into groups ``{**values, "params": [...]}``.

    Groups keep the order in which their first parameter appears. Values are compared by their text (as the
    release does), so ``1`` and ``1.0`` are different groups.
    """
    fused: dict[tuple, dict] = {}
    for d in all_params_groups:
        identifier = tuple((k, str(d[k])) for k in keys)
        group = fused.setdefault(identifier, {"params": []})
        group.update({k: d[k] for k in keys})
        group["params"].append(d["params"])
    return list(fused.values())


def build_optimizer(params_groups: Iterable[dict], betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW over fused groups (``params``, ``lr_multiplier``, ``wd_multiplier``, ``is_last_layer``).

    ``lr`` and ``weight_decay`` start at 0: :func:`apply_optim_scheduler` sets them before every step.
    """
    groups = [{**group, "params": list(group["params"]), "lr": 0.0, "weight_decay": 0.0} for group in params_groups]
    return torch.optim.AdamW(groups, betas=tuple(betas))


def apply_optim_scheduler(optimizer: torch.optim.Optimizer, lr: float, wd: float, last_layer_lr: float) -> None:
    """Set each group's ``lr = (last_layer_lr if is_last_layer else lr) * lr_multiplier``, ``weight_decay = wd *
    wd_multiplier`` (the values of this iteration's schedules)."""
    for index, group in enumerate(optimizer.param_groups):
        try:
            is_last_layer, lr_mult, wd_mult = group["is_last_layer"], group["lr_multiplier"], group["wd_multiplier"]
        except KeyError as e:
            raise KeyError(
                f"optimizer param group {index} has no {e.args[0]!r}: build the optimizer from "
                "fuse_params_groups(get_params_groups_with_decay(...)) groups"
            ) from None
        group["weight_decay"] = wd * wd_mult
        group["lr"] = (last_layer_lr if is_last_layer else lr) * lr_mult
