"""DINOv2 backbones and their construction from a training config."""

from __future__ import annotations

from typing import Any

from dinov2.models import vision_transformer as vits  # the released alias: ``vits.vit_large(...)``
from dinov2.models.vision_transformer import ARCHS, FFN_LAYERS, DinoVisionTransformer

__all__ = ["ARCHS", "DinoVisionTransformer", "build_model", "build_model_from_cfg", "vits"]


def _get(section: Any, key: str, default: Any) -> Any:
    """Read ``key`` from an OmegaConf/attribute-style section or a dict, with a default for optional keys."""
    if isinstance(section, dict):
        return section.get(key, default)
    return getattr(section, key, default)


def build_model(args: Any, only_teacher: bool = False, img_size: int = 224):
    """Build (student, teacher, embed_dim), or (teacher, embed_dim), from a ``student`` config section.

    Reads ``arch`` (``vit_small`` | ``vit_base`` | ``vit_large`` | ``vit_giant2``, an old ``_memeff``
    suffix is ignored), ``patch_size``, ``layerscale``, ``ffn_layer``, ``block_chunks``, ``qkv_bias``,
    ``proj_bias``, ``ffn_bias``, ``num_register_tokens``, ``interpolate_offset``, ``interpolate_antialias``,
    ``drop_path_rate``, ``drop_path_uniform`` and optionally ``use_xformers`` (default False). The teacher
    has no stochastic depth; the student gets ``drop_path_rate`` / ``drop_path_uniform``.
    """
    arch = str(args.arch).removesuffix("_memeff")
    if arch not in ARCHS:
        raise ValueError(f"unknown student.arch {args.arch!r}; valid: {sorted(ARCHS)}")
    if args.ffn_layer not in FFN_LAYERS:
        raise ValueError(f"unknown student.ffn_layer {args.ffn_layer!r}; valid: {sorted(FFN_LAYERS)}")
    vit_kwargs = dict(
        img_size=img_size,
        patch_size=args.patch_size,
        init_values=args.layerscale,
        ffn_layer=args.ffn_layer,
        block_chunks=args.block_chunks,
        qkv_bias=args.qkv_bias,
        proj_bias=args.proj_bias,
        ffn_bias=args.ffn_bias,
        num_register_tokens=args.num_register_tokens,
        interpolate_offset=args.interpolate_offset,
        interpolate_antialias=args.interpolate_antialias,
        use_xformers=bool(_get(args, "use_xformers", False)),
    )
    teacher = ARCHS[arch](**vit_kwargs)
    if only_teacher:
        return teacher, teacher.embed_dim
    student = ARCHS[arch](**vit_kwargs, drop_path_rate=args.drop_path_rate, drop_path_uniform=args.drop_path_uniform)
    return student, teacher, student.embed_dim


def build_model_from_cfg(cfg: Any, only_teacher: bool = False):
    """:func:`build_model` from a full training config: ``cfg.student`` and ``cfg.crops.global_crops_size``."""
    return build_model(cfg.student, only_teacher=only_teacher, img_size=cfg.crops.global_crops_size)
