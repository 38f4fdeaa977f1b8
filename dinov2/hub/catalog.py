"""The hub catalogue: arch tables, released file URLs and the hub backbone names.

Every hub module (backbones, classifiers, depthers, segmentors) and the backbone door
(:func:`dinov2.features.load_backbone`) read their tables here. A hub backbone name (``dinov2_vits14``) is a
:class:`HubBackbone` entry of :data:`BACKBONES`: its model family (:mod:`dinov2.models.families`), arch and
constructor arguments, and where its released weights live. A new family adds its names with
:func:`register_backbone` (tests: :func:`registered_backbone`, which restores the table on exit).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

from dinov2.utils.registry import Registry

__all__ = [
    "DINOV2_BASE_URL",
    "ARCH_DEPTH",
    "DEPTH_OUT_INDEX",
    "REGISTER_SETTINGS",
    "HubBackbone",
    "BACKBONES",
    "model_name",
    "backbone_url",
    "dinov2_backbone_url",
    "head_url",
    "register_backbone",
    "registered_backbone",
    "get_backbone",
    "backbone_names",
]

DINOV2_BASE_URL = "https://dl.fbaipublicfiles.com/dinov2"

# Number of blocks of the released archs (the dense heads tap blocks by index).
ARCH_DEPTH = {"vit_small": 12, "vit_base": 12, "vit_large": 24, "vit_giant2": 40}
# Blocks tapped by the 4-layer linear and the DPT depth heads (0-based); the 1-layer head taps the last block.
DEPTH_OUT_INDEX = {
    "vit_small": [2, 5, 8, 11],
    "vit_base": [2, 5, 8, 11],
    "vit_large": [4, 11, 17, 23],
    "vit_giant2": [9, 19, 29, 39],
}
# What the released `_reg` backbones change (all hub backbones: img 518, patch 14, layer-scale 1.0, no chunks).
REGISTER_SETTINGS = {"num_register_tokens": 4, "interpolate_antialias": True, "interpolate_offset": 0.0}


def model_name(arch_name: str, patch_size: int, num_register_tokens: int = 0) -> str:
    """``vit_small``, 14, 4 -> ``dinov2_vits14_reg4`` (the released file naming)."""
    compact_arch_name = arch_name.replace("_", "")[:4]
    registers_suffix = f"_reg{num_register_tokens}" if num_register_tokens else ""
    return f"dinov2_{compact_arch_name}{patch_size}{registers_suffix}"


def _folder_and_file(arch_name: str, patch_size: int, num_register_tokens: int) -> str:
    """``<base>/dinov2_vits14/dinov2_vits14_reg4``: released files live in the folder of the register-less name."""
    folder = model_name(arch_name, patch_size)
    return f"{DINOV2_BASE_URL}/{folder}/{model_name(arch_name, patch_size, num_register_tokens)}"


def backbone_url(arch_name: str, patch_size: int = 14, num_register_tokens: int = 0) -> str:
    """URL of a released backbone file (``..._pretrain.pth``)."""
    return f"{_folder_and_file(arch_name, patch_size, num_register_tokens)}_pretrain.pth"


def head_url(arch_name: str, suffix: str, patch_size: int = 14, num_register_tokens: int = 0) -> str:
    """URL of a released head file: ``<model>_<suffix>_head.pth`` (``linear4``, ``nyu_dpt``, ``ade20k_ms``...)."""
    return f"{_folder_and_file(arch_name, patch_size, num_register_tokens)}_{suffix}_head.pth"


@dataclasses.dataclass(frozen=True)
class HubBackbone:
    """A hub backbone name: ``family`` and ``arch`` (registries of :mod:`dinov2.models.families`), constructor
    ``kwargs`` (image size of the stored position table included) and ``url(kwargs)`` of its released weights
    (None: no released weights)."""

    name: str
    family: str
    arch: str
    kwargs: dict
    url: Callable[[dict], str] | None = None


def dinov2_backbone_url(arch: str) -> Callable[[dict], str]:
    """``kwargs -> URL`` of the released DINOv2 backbone of ``arch`` with these constructor arguments."""
    return lambda kwargs: backbone_url(arch, kwargs["patch_size"], kwargs.get("num_register_tokens", 0))


def _dinov2_entries() -> dict[str, HubBackbone]:
    entries = {}
    for arch, ffn in (("vit_small", "mlp"), ("vit_base", "mlp"), ("vit_large", "mlp"), ("vit_giant2", "swiglufused")):
        base = dict(img_size=518, patch_size=14, init_values=1.0, ffn_layer=ffn, block_chunks=0)
        plain = dict(base, num_register_tokens=0, interpolate_antialias=False, interpolate_offset=0.1)
        for suffix, kwargs in (("", plain), ("_reg", dict(base, **REGISTER_SETTINGS))):
            name = model_name(arch, 14) + suffix
            entries[name] = HubBackbone(name, "dinov2_vit", arch, kwargs, dinov2_backbone_url(arch))
    return entries


BACKBONES: Registry[HubBackbone] = Registry("hub backbone", _dinov2_entries())


def register_backbone(entry: HubBackbone) -> HubBackbone:
    """Add a hub backbone name (``ValueError`` if the name is taken)."""
    return BACKBONES.register(entry.name, entry)


def registered_backbone(entry: HubBackbone) -> contextlib.AbstractContextManager[HubBackbone]:
    """``entry`` is a hub backbone name inside the block only (restored on exit, even on errors)."""
    return BACKBONES.registered(entry.name, entry)


def backbone_names() -> tuple[str, ...]:
    """Every hub backbone name, sorted (read at call time)."""
    return tuple(sorted(BACKBONES))


def get_backbone(name: str) -> HubBackbone:
    """The entry of hub backbone ``name`` (``ValueError`` naming the valid ones)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(backbone_names())}")
    return BACKBONES[name]
