"""DINOv2 backbones and their construction from a training config."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dinov2.models import dinov3_families  # registers the DINOv3 ViT and ConvNeXt families
from dinov2.models import vision_transformer as vits  # the released alias: ``vits.vit_large(...)``
from dinov2.models.families import (
    ModelFamily,
    arch_names,
    family_for_arch,
    family_for_student,
    get_family,
    register_family,
)
from dinov2.models.vision_transformer import ARCHS, DinoVisionTransformer, register_arch, registered_arch

__all__ = [
    "ARCHS",
    "DinoVisionTransformer",
    "ModelFamily",
    "arch_names",
    "build_model",
    "build_model_from_cfg",
    "family_for_arch",
    "family_for_student",
    "get_family",
    "register_arch",
    "register_family",
    "registered_arch",
    "vits",
    "dinov3_families",
]


def build_model(args: Any, only_teacher: bool = False, img_size: int = 224):
    """Build (student, teacher, embed_dim), or (teacher, embed_dim), from a ``student`` config section.

    The section picks the model family (:func:`~dinov2.models.families.family_for_student`: ``arch``, and for
    names two families share, DINOv3-only keys; an old ``_memeff`` suffix is ignored), which reads the rest.
    For the DINOv2 ViT: ``patch_size``, ``layerscale``, ``ffn_layer``, ``block_chunks``, ``qkv_bias``,
    ``proj_bias``, ``ffn_bias``, ``num_register_tokens``, ``interpolate_offset``, ``interpolate_antialias``,
    ``drop_path_rate``, ``drop_path_uniform`` and optionally ``use_xformers`` (default False); for DINOv3 see
    :mod:`dinov2.models.dinov3_families`. The teacher has no stochastic depth; the student gets ``drop_path_rate``
    / ``drop_path_uniform``.
    """
    family = family_for_student(args)
    student, teacher = family.build(args, str(args.arch).removesuffix("_memeff"), img_size, only_teacher)
    if only_teacher:
        return teacher, teacher.embed_dim
    return student, teacher, student.embed_dim


def build_model_from_cfg(cfg: Any, only_teacher: bool = False):
    """:func:`build_model` from a full training config: ``cfg.student`` and ``cfg.crops.global_crops_size`` (a list
    of sizes, DINOv3's high-resolution recipe: the first one sizes the model)."""
    sizes = cfg.crops.global_crops_size
    img_size = int(sizes[0]) if isinstance(sizes, Sequence) and not isinstance(sizes, str) else sizes
    return build_model(cfg.student, only_teacher=only_teacher, img_size=img_size)
