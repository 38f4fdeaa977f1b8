"""The registry of backbone families: what the trainer, the backbone door, the hub catalogue and the config
validator need to know about a kind of backbone.

A family (:class:`ModelFamily`) has a name, its arch registry (``student.arch`` values -> constructors), a
builder from a config's ``student`` section, a test of whether a backbone state dict is its own, an inference of
constructor arguments from such a state dict (for weights that come without a config: Hugging Face / timm
folders), and its preprocessing facts (mean / std, number of extra tokens, token stride). Families: the
DINOv2 ViT (:class:`~dinov2.models.vision_transformer.DinoVisionTransformer`, here) and the DINOv3 ViT and
ConvNeXt (:mod:`dinov2.models.dinov3_families`); a new one is one module that calls :func:`register_family` plus
its hub names in :mod:`dinov2.hub.catalog`.

Two families may share ``student.arch`` names (DINOv2 and DINOv3 both have ``vit_large``): the later one then
``claims`` the config sections that are its own (DINOv3: a section with DINOv3-only keys such as
``n_storage_tokens`` or ``pos_embed_rope_base``), and :func:`family_for_student` picks by claim. An explicit
``student.family`` key (our addition, optional) names the family outright.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dinov2.models import vision_transformer as vits
from dinov2.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from dinov2.utils.registry import Registry

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelFamily",
    "DINOV2_VIT",
    "register_family",
    "registered_family",
    "get_family",
    "family_names",
    "family_for_arch",
    "family_for_student",
    "family_for_weights",
    "family_for_model",
    "matching_family",
    "arch_names",
]

IMAGENET_MEAN, IMAGENET_STD = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def _get(section: Any, key: str, default: Any) -> Any:
    """Read ``key`` from an OmegaConf/attribute-style section or a dict, with a default for optional keys."""
    if isinstance(section, dict):
        return section.get(key, default)
    return getattr(section, key, default)


@dataclasses.dataclass(frozen=True)
class ModelFamily:
    """One kind of backbone.

    ``build(student, arch, img_size, only_teacher)`` -> ``(student, teacher)`` models (``student`` None when
    ``only_teacher``) from a config's ``student`` section; ``matches(state_dict)``: the flat backbone state dict
    is this family's; ``kwargs_from_weights(state_dict)`` -> ``(arch, constructor kwargs)`` for weights without
    a config; ``num_extra_tokens(model)``: tokens before the patch tokens (cls + registers / storage tokens).
    ``claims(student)``: the config section is this family's (needed when its archs share names with another
    family's); ``patch_size(model)``: pixels per output token of ``x_norm_patchtokens``; ``initialise(model)``: the
    family's initialisation of a freshly built model (hub ``pretrained=False``); ``from_weights``: constructor
    arguments that a hub name takes from the weights given with it rather than from its table; ``extra_tokens``:
    the tokens between the class token and the patches as an output name and a ``forward_features`` key.
    """

    name: str
    archs: Mapping[str, Callable[..., nn.Module]]
    build: Callable[[Any, str, int, bool], tuple[nn.Module | None, nn.Module]]
    matches: Callable[[Mapping[str, Tensor]], bool]
    kwargs_from_weights: Callable[[Mapping[str, Tensor]], tuple[str, dict]]
    num_extra_tokens: Callable[[nn.Module], int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    claims: Callable[[Any], bool] | None = None
    patch_size: Callable[[nn.Module], int] = lambda model: int(model.patch_size)
    initialise: Callable[[nn.Module], None] = lambda model: None
    from_weights: tuple[str, ...] = ("img_size",)
    extra_tokens: tuple[str, str] = ("register_tokens", "x_norm_regtokens")


def _no_shared_arch(registry: Registry[ModelFamily], name: str, family: ModelFamily) -> None:
    """Arch names are unique across families unless the newcomer ``claims`` its config sections."""
    for other in registry.values():
        clash = sorted(set(other.archs) & set(family.archs))
        if clash and family.claims is None:
            raise ValueError(
                f"archs {clash} of family {name!r} already belong to family {other.name!r}; give {name!r} a "
                "claims(student) test so that configs can tell the two apart"
            )


_FAMILIES: Registry[ModelFamily] = Registry("model family", check=_no_shared_arch)


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` (``ValueError`` if its name or one of its archs is taken by another family)."""
    return _FAMILIES.register(family.name, family)


def registered_family(family: ModelFamily) -> contextlib.AbstractContextManager[ModelFamily]:
    """``family`` is registered inside the block only; the registry is restored on exit, even on errors."""
    return _FAMILIES.registered(family.name, family)


def family_names() -> list[str]:
    return sorted(_FAMILIES)


def get_family(name: str) -> ModelFamily:
    """The family called ``name`` (``KeyError`` naming the registered ones)."""
    if name not in _FAMILIES:
        raise KeyError(f"unknown model family {name!r}; registered: {family_names()}")
    return _FAMILIES[name]


def arch_names() -> set[str]:
    """Every valid ``student.arch`` value (all families; read at call time, so later registrations count)."""
    return {arch for family in _FAMILIES.values() for arch in family.archs}


def _families_with_arch(arch: str) -> list[ModelFamily]:
    name = str(arch).removesuffix("_memeff")
    found = [family for family in _FAMILIES.values() if name in family.archs]
    if not found:
        raise ValueError(f"unknown student.arch {arch!r}; valid: {sorted(arch_names())}")
    return found


def family_for_arch(arch: str) -> ModelFamily:
    """The family whose registry holds ``arch`` (an old ``_memeff`` suffix is ignored), or ``ValueError``.

    A name several families share gives the one registered first (DINOv2's ``vit_large``); use
    :func:`family_for_student` when a config section is at hand.
    """
    return _families_with_arch(arch)[0]


def family_for_student(student: Any) -> ModelFamily:
    """The family of a config's ``student`` section: ``student.family`` when given, else the family holding
    ``student.arch``; among several, the one that ``claims`` the section (the first registered if none does)."""
    explicit = _get(student, "family", None)
    arch = _get(student, "arch", None)
    if explicit:
        family = get_family(str(explicit))
        if str(arch).removesuffix("_memeff") not in family.archs:
            raise ValueError(
                f"student.arch={arch!r} is not an arch of student.family={explicit!r}: {sorted(family.archs)}"
            )
        return family
    candidates = _families_with_arch(arch)
    claiming = [family for family in candidates[1:] if family.claims is not None and family.claims(student)]
    return claiming[0] if claiming else candidates[0]


def matching_family(state_dict: Mapping[str, Tensor]) -> ModelFamily | None:
    """The first registered family whose ``matches`` accepts the flat backbone ``state_dict``, or None."""
    return next((family for family in _FAMILIES.values() if family.matches(state_dict)), None)


def family_for_weights(state_dict: Mapping[str, Tensor]) -> ModelFamily:
    """The family whose ``matches`` accepts the flat backbone ``state_dict``, or ``ValueError``."""
    family = matching_family(state_dict)
    if family is None:
        raise ValueError(
            f"no registered model family ({', '.join(family_names())}) recognises these weights "
            f"(first keys: {sorted(state_dict)[:6]}); pass a config (--config-file) or a hub name with them"
        )
    return family


def family_for_model(model: nn.Module) -> ModelFamily:
    """The family of a built backbone (the one whose ``matches`` accepts its state dict), or ``ValueError``: the one
    place where a tool handed a bare model reads the family's facts (``patch_size``, ``num_extra_tokens``...)."""
    state_dict = model.state_dict()
    family = matching_family(state_dict)
    if family is None:
        raise ValueError(
            f"no registered model family ({', '.join(family_names())}) recognises the {type(model).__name__} given "
            f"(first keys: {sorted(state_dict)[:6]}); build it with dinov2.features.load_backbone or a hub entry point"
        )
    return family


# ------------------------------------------------------------------------------------------- the DINOv2 ViT
def _vit_build(student: Any, arch: str, img_size: int, only_teacher: bool):
    """Teacher (no stochastic depth) and student (``drop_path_rate`` / ``drop_path_uniform``) from ``student``."""
    if student.ffn_layer not in vits.FFN_LAYERS:
        raise ValueError(f"unknown student.ffn_layer {student.ffn_layer!r}; valid: {sorted(vits.FFN_LAYERS)}")
    vit_kwargs = dict(
        img_size=img_size,
        patch_size=student.patch_size,
        init_values=student.layerscale,
        ffn_layer=student.ffn_layer,
        block_chunks=student.block_chunks,
        qkv_bias=student.qkv_bias,
        proj_bias=student.proj_bias,
        ffn_bias=student.ffn_bias,
        num_register_tokens=student.num_register_tokens,
        interpolate_offset=student.interpolate_offset,
        interpolate_antialias=student.interpolate_antialias,
        use_xformers=bool(_get(student, "use_xformers", False)),
    )
    teacher = vits.ARCHS[arch](**vit_kwargs)
    if only_teacher:
        return None, teacher
    drop = dict(drop_path_rate=student.drop_path_rate, drop_path_uniform=student.drop_path_uniform)
    return vits.ARCHS[arch](**vit_kwargs, **drop), teacher


def _vit_matches(state_dict: Mapping[str, Tensor]) -> bool:
    return "cls_token" in state_dict and "patch_embed.proj.weight" in state_dict and "pos_embed" in state_dict


def _vit_arch(embed_dim: int, depth: int) -> str:
    """The registered arch with this width and depth (built on the meta device)."""
    for name, build in vits.ARCHS.items():
        with torch.device("meta"):
            model = build(patch_size=14, img_size=28, num_register_tokens=0)
        if (model.embed_dim, model.n_blocks) == (embed_dim, depth):
            return name
    raise ValueError(f"no registered DINOv2 ViT arch has embed dim {embed_dim} and {depth} blocks")


def _vit_kwargs_from_weights(state_dict: Mapping[str, Tensor]) -> tuple[str, dict]:
    """Arch and constructor kwargs of a flat ViT state dict; registers imply the released ``_reg`` settings."""
    depth = 1 + max(int(key.split(".")[1]) for key in state_dict if key.startswith("blocks."))
    embed_dim, patch_size = state_dict["cls_token"].shape[-1], state_dict["patch_embed.proj.weight"].shape[-1]
    registers = state_dict["register_tokens"].shape[1] if "register_tokens" in state_dict else 0
    kwargs = dict(
        img_size=math.isqrt(state_dict["pos_embed"].shape[1] - 1) * patch_size,
        patch_size=patch_size,
        num_register_tokens=registers,
        init_values=1.0 if "blocks.0.ls1.gamma" in state_dict else None,
        ffn_layer="swiglufused" if "blocks.0.mlp.w12.weight" in state_dict else "mlp",
        block_chunks=0,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        proj_bias="blocks.0.attn.proj.bias" in state_dict,
        ffn_bias=any(key.startswith("blocks.0.mlp.") and key.endswith(".bias") for key in state_dict),
    )
    if registers:
        kwargs.update(interpolate_antialias=True, interpolate_offset=0.0)
    return _vit_arch(embed_dim, depth), kwargs


DINOV2_VIT = register_family(
    ModelFamily(
        name="dinov2_vit",
        archs=vits.ARCHS,
        build=_vit_build,
        matches=_vit_matches,
        kwargs_from_weights=_vit_kwargs_from_weights,
        num_extra_tokens=lambda model: 1 + int(model.num_register_tokens),
    )
)
