"""The DINOv3 model families: the RoPE ViT (``dinov3_vit``) and the ConvNeXt (``dinov3_convnext``).

Registered on import of :mod:`dinov2.models`. The DINOv3 ViT shares its ``student.arch`` names with the DINOv2 ViT
(``vit_small`` ... ``vit_giant2``) and claims the ``student`` sections that carry a DINOv3-only key (the keys of the
release's ``ssl_default_config.yaml`` that DINOv2 does not have, e.g. ``n_storage_tokens``, ``pos_embed_rope_base``);
``vit_so400m``, ``vit_huge2``, ``vit_7b`` and the ``convnext_*`` archs are DINOv3's alone.

Weights without a config (a file, a Hugging Face / timm folder converted to our keys) tell the architecture:
width, depth, patch, storage tokens, head dim (from the RoPE ``periods`` buffer), FFN kind and width, biases,
``mask_k_bias``, untied norms. Two facts are not in the weights and take the released hub backbones' values: the
norm is ``layernormbf16`` (eps 1e-5; RMSNorm when the norms have no bias) and RoPE's training-time augmentations
and base (the ``periods`` buffer is loaded from the weights anyway).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

from torch import Tensor, nn

from dinov2.models import convnext as convnexts
from dinov2.models import vision_transformer_v3 as vits3
from dinov2.models.families import ModelFamily, register_family
from dinov2.utils.registry import Registry

__all__ = [
    "DINOV3_VIT",
    "DINOV3_CONVNEXT",
    "DINOV3_STUDENT_KEYS",
    "VIT_ARCHS",
    "CONVNEXT_ARCHS",
    "register_vit_arch",
    "register_convnext_arch",
    "registered_archs",
]

# Keys of DINOv3's ``student`` section that DINOv2's has not: their presence makes a section DINOv3's.
DINOV3_STUDENT_KEYS = frozenset(
    {
        "n_storage_tokens",
        "mask_k_bias",
        "untie_cls_and_patch_norms",
        "untie_global_and_local_cls_norm",
        "norm_layer",
        "ffn_ratio",
        "in_chans",
        "pos_embed_type",
        "pos_embed_rope_base",
        "pos_embed_rope_min_period",
        "pos_embed_rope_max_period",
        "pos_embed_rope_normalize_coords",
        "pos_embed_rope_shift_coords",
        "pos_embed_rope_jitter_coords",
        "pos_embed_rope_rescale_coords",
        "pos_embed_rope_dtype",
    }
)

VIT_ARCHS: Registry[Callable[..., nn.Module]] = Registry(
    "DINOv3 ViT arch", {name: getattr(vits3, name) for name in vits3.ARCHS}
)

CONVNEXT_ARCHS: Registry[Callable[..., nn.Module]] = Registry(
    "DINOv3 ConvNeXt arch",
    {f"convnext_{size}": getattr(convnexts, f"convnext_{size}") for size in convnexts.CONVNEXT_SIZES},
)


def register_vit_arch(
    name: str, embed_dim: int, depth: int, num_heads: int, ffn_ratio: float = 4.0, *, exist_ok: bool = False
) -> Callable[..., nn.Module]:
    """A new DINOv3 ViT size ``name`` (``student.arch=name`` in configs; tests, demos, custom sizes); returns its
    constructor. ``ValueError`` if the name is taken by another size (unless ``exist_ok``)."""
    vits3.ARCHS.register(name, (embed_dim, depth, num_heads, float(ffn_ratio)), exist_ok=exist_ok)
    return VIT_ARCHS.register(name, partial(vits3._arch, name), exist_ok=exist_ok)


def register_convnext_arch(
    name: str, depths: Sequence[int], dims: Sequence[int], *, exist_ok: bool = False
) -> Callable[..., nn.Module]:
    """A new ConvNeXt size ``convnext_<name>`` (four stage depths and widths); returns its constructor."""
    convnexts.CONVNEXT_SIZES.register(name, {"depths": list(depths), "dims": list(dims)}, exist_ok=exist_ok)
    return CONVNEXT_ARCHS.register(f"convnext_{name}", partial(convnexts._convnext, name), exist_ok=exist_ok)


# The DINOv3 CPU demo's size (python -m dinov2.demo dinov3; not a released model), registered for good so that the
# demo's run folders and exports open in every tool, as the DINOv2 demos' vit_tiny and vit_pico do.
DEMO_VIT_ARCH = "vit_demo3"
register_vit_arch(DEMO_VIT_ARCH, 128, 6, 4, 4.0)


@contextlib.contextmanager
def registered_archs() -> Iterator[None]:
    """Arch registrations made inside the block are undone on exit (also on errors): for tests and demos."""
    with vits3.ARCHS.restored(), VIT_ARCHS.restored(), convnexts.CONVNEXT_SIZES.restored(), CONVNEXT_ARCHS.restored():
        yield


def _keys(section: Any) -> set[str]:
    return set(section.keys()) if hasattr(section, "keys") else set(vars(section))


def _section(student: Any) -> dict[str, Any]:
    """A plain dict of the section (OmegaConf, dict or attribute object)."""
    return {key: (student[key] if hasattr(student, "keys") else getattr(student, key)) for key in _keys(student)}


def _pair_builder(builder):
    """``build(student, arch, img_size, only_teacher)``: a teacher without stochastic depth (as the release's
    ``build_model``) and a student with ``drop_path_rate``, both with the release's initialisation."""

    def build(student: Any, arch: str, img_size: int, only_teacher: bool):
        section = _section(student)
        teacher = builder({**section, "drop_path_rate": 0.0}, img_size=img_size)
        teacher.init_weights()
        if only_teacher:
            return None, teacher
        student_model = builder(section, img_size=img_size)
        student_model.init_weights()
        return student_model, teacher

    return build


def _register(name: str, module: Any, archs: Mapping, **facts: Any) -> ModelFamily:
    """Register a DINOv3 family whose models come from ``module.build_from_student_cfg`` and ``init_weights``."""
    build = _pair_builder(module.build_from_student_cfg)
    return register_family(
        ModelFamily(name=name, archs=archs, build=build, initialise=lambda model: model.init_weights(), **facts)
    )


# ------------------------------------------------------------------------------------------- the DINOv3 ViT
def _vit_matches(state_dict: Mapping[str, Tensor]) -> bool:
    return "cls_token" in state_dict and "rope_embed.periods" in state_dict


def _depth(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    return 1 + max(int(key[len(prefix) :].split(".")[0]) for key in state_dict if key.startswith(prefix))


def _ffn(state_dict: Mapping[str, Tensor], embed_dim: int) -> dict[str, Any]:
    """FFN kind and ratio from block 0 (SwiGLU: the smallest alignment whose rounding gives the stored width)."""
    if "blocks.0.mlp.fc1.weight" in state_dict:
        hidden = state_dict["blocks.0.mlp.fc1.weight"].shape[0]
        return {"ffn_layer": "mlp", "ffn_ratio": hidden / embed_dim}
    hidden = state_dict["blocks.0.mlp.w1.weight"].shape[0]
    for ffn_layer, align in (("swiglu", 8), ("swiglu32", 32), ("swiglu64", 64), ("swiglu128", 128)):
        for ratio in (4.0, 6.0, 3.0, 3.777777778, 8.0, 2.0, 1.5 * hidden / embed_dim):
            width = int(2 * embed_dim * ratio / 3)
            if (width + align - 1) // align * align == hidden:
                return {"ffn_layer": ffn_layer, "ffn_ratio": ratio}
    raise ValueError(f"a SwiGLU width of {hidden} for dim {embed_dim} matches no released alignment (8/32/64/128)")


def _vit_arch_of(embed_dim: int, depth: int, num_heads: int) -> str:
    for name, (dim, blocks, heads, _) in vits3.ARCHS.items():
        if (dim, blocks, heads) == (embed_dim, depth, num_heads):
            return name
    return "vit_small"  # any arch: width, depth and heads are passed explicitly


def _vit_kwargs_from_weights(state_dict: Mapping[str, Tensor]) -> tuple[str, dict]:
    embed_dim = state_dict["cls_token"].shape[-1]
    depth = _depth(state_dict, "blocks.")
    num_heads = embed_dim // (4 * state_dict["rope_embed.periods"].numel())
    storage = state_dict["storage_tokens"].shape[1] if "storage_tokens" in state_dict else 0
    kwargs = dict(
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        patch_size=state_dict["patch_embed.proj.weight"].shape[-1],
        in_chans=state_dict["patch_embed.proj.weight"].shape[1],
        n_storage_tokens=storage,
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        proj_bias="blocks.0.attn.proj.bias" in state_dict,
        ffn_bias=any(key.startswith("blocks.0.mlp.") and key.endswith(".bias") for key in state_dict),
        layerscale_init=1e-5 if "blocks.0.ls1.gamma" in state_dict else None,
        norm_layer="layernormbf16" if "norm.bias" in state_dict else "rmsnorm",
        mask_k_bias="blocks.0.attn.qkv.bias_mask" in state_dict,
        untie_cls_and_patch_norms="cls_norm.weight" in state_dict,
        untie_global_and_local_cls_norm="local_cls_norm.weight" in state_dict,
        pos_embed_rope_dtype="fp32",
        **_ffn(state_dict, embed_dim),
    )
    return _vit_arch_of(embed_dim, depth, num_heads), kwargs


def _vit_claims(student: Any) -> bool:
    return bool(_keys(student) & DINOV3_STUDENT_KEYS)


DINOV3_VIT = _register(
    "dinov3_vit",
    vits3,
    VIT_ARCHS,
    matches=_vit_matches,
    kwargs_from_weights=_vit_kwargs_from_weights,
    num_extra_tokens=lambda model: 1 + int(model.n_storage_tokens),
    claims=_vit_claims,
    from_weights=("untie_cls_and_patch_norms", "untie_global_and_local_cls_norm"),
    extra_tokens=("storage_tokens", "x_storage_tokens"),
)


# ------------------------------------------------------------------------------------------- the ConvNeXt
def _convnext_matches(state_dict: Mapping[str, Tensor]) -> bool:
    return "downsample_layers.0.0.weight" in state_dict and "stages.0.0.dwconv.weight" in state_dict


def _convnext_kwargs_from_weights(state_dict: Mapping[str, Tensor]) -> tuple[str, dict]:
    depths = [_depth(state_dict, f"stages.{i}.") for i in range(4)]
    dims = [state_dict[f"stages.{i}.0.dwconv.weight"].shape[0] for i in range(4)]
    for size, sizes in convnexts.CONVNEXT_SIZES.items():
        if sizes == {"depths": depths, "dims": dims}:
            return f"convnext_{size}", {"in_chans": state_dict["downsample_layers.0.0.weight"].shape[1]}
    return "convnext_tiny", {"depths": depths, "dims": dims}


DINOV3_CONVNEXT = _register(
    "dinov3_convnext",
    convnexts,
    CONVNEXT_ARCHS,
    matches=_convnext_matches,
    kwargs_from_weights=_convnext_kwargs_from_weights,
    num_extra_tokens=lambda model: 0,
    # x_norm_patchtokens: the last stage (one token per 32x32 pixels), or the student.patch_size grid when set
    patch_size=lambda model: int(model.patch_size or 32),
    from_weights=(),
    extra_tokens=("storage_tokens", "x_storage_tokens"),  # none: forward_features gives an empty x_storage_tokens
)
