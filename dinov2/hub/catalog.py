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
    "DINOV3_BASE_URL",
    "DINOV3_LICENCE_URL",
    "DINOV3_VIT_SETTINGS",
    "DINOV3_VITS",
    "DINOV3_CONVNEXTS",
    "DINOV3_UNTIED_LOCAL_CLS_NORM_HASHES",
    "dinov3_weights_url",
    "dinov3_vit_kwargs",
    "gated_weights_error",
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


# ------------------------------------------------------------------------------------------------ DINOv3
DINOV3_BASE_URL = "https://dl.fbaipublicfiles.com/dinov3"
DINOV3_LICENCE_URL = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/"
# Settings shared by every released DINOv3 ViT (the release's hub builders).
DINOV3_VIT_SETTINGS: dict = {
    "img_size": 224,
    "patch_size": 16,
    "in_chans": 3,
    "pos_embed_rope_base": 100,
    "pos_embed_rope_normalize_coords": "separate",
    "pos_embed_rope_rescale_coords": 2,
    "pos_embed_rope_dtype": "fp32",
    "qkv_bias": True,
    "drop_path_rate": 0.0,
    "layerscale_init": 1.0e-05,
    "norm_layer": "layernormbf16",
    "ffn_bias": True,
    "proj_bias": True,
    "n_storage_tokens": 4,
    "mask_k_bias": True,
}
# short name -> (arch of dinov2.models.vision_transformer_v3, ffn_ratio, ffn_layer, {pretraining data: file hash}).
DINOV3_VITS: dict[str, tuple[str, float, str, dict[str, str]]] = {
    "vits16": ("vit_small", 4, "mlp", {"LVD1689M": "08c60483"}),
    "vits16plus": ("vit_small", 6, "swiglu", {"LVD1689M": "4057cbaa"}),
    "vitb16": ("vit_base", 4, "mlp", {"LVD1689M": "73cec8be"}),
    "vitl16": ("vit_large", 4, "mlp", {"LVD1689M": "8aa4cbdd", "SAT493M": "eadcf0ff"}),
    "vitl16plus": ("vit_large", 6.0, "swiglu", {"LVD1689M": "46503df0"}),
    "vith16plus": ("vit_huge2", 6.0, "swiglu", {"LVD1689M": "7c1da9a5"}),
    "vit7b16": ("vit_7b", 3, "swiglu64", {"LVD1689M": "a955f4ea", "SAT493M": "a6675841"}),
}
DINOV3_CONVNEXTS: dict[str, str] = {"tiny": "21b726bb", "small": "296db49d", "base": "801f2ba9", "large": "61fa432d"}
# Files trained with a separate CLS norm for local crops (they carry ``local_cls_norm.*``).
DINOV3_UNTIED_LOCAL_CLS_NORM_HASHES = {"eadcf0ff", "a955f4ea", "a6675841"}


def dinov3_weights_url(arch: str, data: str = "LVD1689M", hash: str | None = None) -> str:
    """The release's URL scheme ``<base>/dinov3_<arch>/dinov3_<arch>_pretrain_<data>[-<hash>].pth``."""
    suffix = f"-{hash}" if hash else ""
    return f"{DINOV3_BASE_URL}/dinov3_{arch}/dinov3_{arch}_pretrain_{data.lower()}{suffix}.pth"


def dinov3_vit_kwargs(short: str, untied_local_cls_norm: bool = False) -> dict:
    """Constructor arguments (beyond the arch's sizes) of the released ViT ``short`` (``vits16`` ...)."""
    _, ffn_ratio, ffn_layer, _ = DINOV3_VITS[short]
    kwargs = dict(DINOV3_VIT_SETTINGS, ffn_ratio=ffn_ratio, ffn_layer=ffn_layer)
    kwargs["untie_global_and_local_cls_norm"] = untied_local_cls_norm or short == "vit7b16"
    if short == "vit7b16":
        kwargs["qkv_bias"] = False
    return kwargs


def gated_weights_error(name: str, file_name: str) -> ValueError:
    """What to do when a DINOv3 backbone is asked for its released weights, which are behind a licence form."""
    return ValueError(
        f"{name} needs weights='/path/to/file.pth' (command lines: --weights PATH): the release gates its weights "
        f"behind a licence form ({DINOV3_LICENCE_URL}). Accept it, download {file_name} and pass its path, or use "
        "pretrained=False (command lines: --random-init) for random weights"
    )


def _gated(name: str, file_name: str) -> Callable[[dict], str]:
    def url(kwargs: dict) -> str:
        raise gated_weights_error(name, file_name)

    return url


def _dinov3_entries() -> dict[str, HubBackbone]:
    entries = {}
    for short, (arch, _, _, hashes) in DINOV3_VITS.items():
        name, file_name = f"dinov3_{short}", dinov3_weights_url(short, "LVD1689M", hashes["LVD1689M"]).rsplit("/")[-1]
        entries[name] = HubBackbone(name, "dinov3_vit", arch, dinov3_vit_kwargs(short), _gated(name, file_name))
    for size, file_hash in DINOV3_CONVNEXTS.items():
        name = f"dinov3_convnext_{size}"
        file_name = dinov3_weights_url(f"convnext_{size}", "LVD1689M", file_hash).rsplit("/")[-1]
        entries[name] = HubBackbone(name, "dinov3_convnext", f"convnext_{size}", {}, _gated(name, file_name))
    return entries


BACKBONES: Registry[HubBackbone] = Registry("hub backbone", {**_dinov2_entries(), **_dinov3_entries()})


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
