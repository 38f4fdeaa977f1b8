"""The 11 released DINOv3 hub backbones (``dinov3_vits16`` ... ``dinov3_convnext_large``), released names and arguments.

The release gates its weights behind a licence form, so ``pretrained=True`` needs ``weights=`` (a downloaded file or
the personal URL the form sends). Files are read through :func:`dinov2.models.weights.read_checkpoint` and loaded
strictly.
"""

from __future__ import annotations

import hashlib
import os
import re
from enum import Enum
from pathlib import Path
from typing import Any

from torch import nn

from dinov2.models import convnext as convnext_models
from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3
from dinov2.models.weights import download, is_url, read_checkpoint
from dinov2.utils.registry import named

DINOV3_BASE_URL = "https://dl.fbaipublicfiles.com/dinov3"
LICENCE_URL = "https://ai.meta.com/resources/models-and-libraries/dinov3-downloads/"


class Weights(Enum):
    """Pretraining data of the released weights."""

    LVD1689M = "LVD1689M"
    SAT493M = "SAT493M"


# Settings shared by every released ViT (hub builders of the release).
_VIT_COMMON: dict[str, Any] = {
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
# name -> (embed_dim, depth, num_heads, ffn_ratio, ffn_layer, {weights: file hash}).
VITS: dict[str, tuple[int, int, int, float, str, dict[Weights, str]]] = {
    "vits16": (384, 12, 6, 4, "mlp", {Weights.LVD1689M: "08c60483"}),
    "vits16plus": (384, 12, 6, 6, "swiglu", {Weights.LVD1689M: "4057cbaa"}),
    "vitb16": (768, 12, 12, 4, "mlp", {Weights.LVD1689M: "73cec8be"}),
    "vitl16": (1024, 24, 16, 4, "mlp", {Weights.LVD1689M: "8aa4cbdd", Weights.SAT493M: "eadcf0ff"}),
    "vitl16plus": (1024, 24, 16, 6.0, "swiglu", {Weights.LVD1689M: "46503df0"}),
    "vith16plus": (1280, 32, 20, 6.0, "swiglu", {Weights.LVD1689M: "7c1da9a5"}),
    "vit7b16": (4096, 40, 32, 3, "swiglu64", {Weights.LVD1689M: "a955f4ea", Weights.SAT493M: "a6675841"}),
}
CONVNEXTS: dict[str, str] = {"tiny": "21b726bb", "small": "296db49d", "base": "801f2ba9", "large": "61fa432d"}
# Checkpoints trained with a separate CLS norm for local crops (their files carry ``local_cls_norm.*``).
_UNTIED_LOCAL_CLS_NORM_HASHES = {"eadcf0ff", "a955f4ea", "a6675841"}


def weights_url(arch: str, weights: Weights = Weights.LVD1689M, hash: str | None = None) -> str:
    """The release's URL scheme ``<base>/dinov3_<arch>/dinov3_<arch>_pretrain_<data>[-<hash>].pth``."""
    suffix = f"-{hash}" if hash else ""
    return f"{DINOV3_BASE_URL}/dinov3_{arch}/dinov3_{arch}_pretrain_{weights.value.lower()}{suffix}.pth"


def _file_hash(weights: str) -> str | None:
    found = re.findall(r"-([0-9a-f]{8})\.pth", str(weights))
    return found[0] if len(found) == 1 else None


def _source(name: str, weights: Weights | str | os.PathLike, hashes: dict[Weights, str]) -> str:
    """The URL or local path to read; a release enum cannot be fetched here because the files are gated."""
    if isinstance(weights, Weights):
        if weights not in hashes:
            raise ValueError(f"{name}: weights={weights} were not released; choose one of {[w.name for w in hashes]}")
        raise ValueError(
            f"{name}(pretrained=True) needs weights='/path/to/file.pth' (or the URL you were sent): the release gates "
            f"its weights behind a licence form ({LICENCE_URL}). Accept it, download "
            f"{os.path.basename(weights_url(name.removeprefix('dinov3_'), weights, hashes[weights]))} and pass its "
            f"path, or use pretrained=False for random weights"
        )
    return str(weights)


def _check_hash(path: Path, expected: str | None, name: str) -> None:
    if expected is None:
        raise ValueError(f"{name}: check_hash=True but {path.name!r} has no '-<8 hex digits>.pth' suffix to check")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise RuntimeError(f"{name}: {path} has sha256 {digest[:8]}..., expected {expected}...; re-download it")


def load_weights(model: nn.Module, name: str, source: str, check_hash: bool = False) -> None:
    """Read ``source`` (local path, ``file://`` or ``https://`` URL) and load it into ``model`` with ``strict=True``."""
    path = download(source, argument="weights") if is_url(source) else Path(source).expanduser()
    if check_hash:
        _check_hash(path, _file_hash(source), name)
    model.load_state_dict(dict(read_checkpoint(path, argument="weights")), strict=True)


def _make_vit(
    arch: str, *, pretrained: bool, weights: Weights | str, check_hash: bool, **kwargs: Any
) -> DinoVisionTransformerV3:
    embed_dim, depth, num_heads, ffn_ratio, ffn_layer, hashes = VITS[arch]
    name = f"dinov3_{arch}"
    if isinstance(weights, Weights):
        untied = hashes.get(weights) in _UNTIED_LOCAL_CLS_NORM_HASHES
    else:
        file_hash = _file_hash(weights)
        if arch == "vitl16" and file_hash is None:
            raise ValueError(
                f"{name}: cannot tell from weights={str(weights)!r} whether it is the LVD-1689M or the SAT-493M "
                "ViT-L (they differ in architecture); keep the released file name ending in -<8 hex digits>.pth"
            )
        untied = file_hash in _UNTIED_LOCAL_CLS_NORM_HASHES or arch == "vit7b16"
    source = _source(name, weights, hashes) if pretrained else None
    settings = {**_VIT_COMMON, "embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}
    settings.update(ffn_ratio=ffn_ratio, ffn_layer=ffn_layer, untie_global_and_local_cls_norm=untied)
    if arch == "vit7b16":
        settings["qkv_bias"] = False
    model = DinoVisionTransformerV3(**{**settings, **kwargs})
    if source is None:
        model.init_weights()
    else:
        load_weights(model, name, source, check_hash)
    return model


def _make_convnext(size: str, *, pretrained: bool, weights: Weights | str, **kwargs: Any) -> convnext_models.ConvNeXt:
    name = f"dinov3_convnext_{size}"
    source = _source(name, weights, {Weights.LVD1689M: CONVNEXTS[size]}) if pretrained else None
    model = convnext_models.ConvNeXt(**{**convnext_models.CONVNEXT_SIZES[size], "drop_path_rate": 0.0, **kwargs})
    if source is None:
        model.init_weights()
    else:
        load_weights(model, name, source)
    return model


def _vit_entry_point(name: str, arch: str, doc: str):
    """The released ``name(*, pretrained=True, weights=Weights.LVD1689M, check_hash=False, **kwargs)``."""

    def entry_point(
        *, pretrained: bool = True, weights: Weights | str = Weights.LVD1689M, check_hash: bool = False, **kwargs
    ):
        return _make_vit(arch, pretrained=pretrained, weights=weights, check_hash=check_hash, **kwargs)

    return named(entry_point, name, doc)


def _convnext_entry_point(name: str, size: str, doc: str):
    """The released ``name(*, pretrained=True, weights=Weights.LVD1689M, **kwargs)`` (no ``check_hash``)."""

    def entry_point(*, pretrained: bool = True, weights: Weights | str = Weights.LVD1689M, **kwargs):
        return _make_convnext(size, pretrained=pretrained, weights=weights, **kwargs)

    return named(entry_point, name, doc)


dinov3_vits16 = _vit_entry_point(
    "dinov3_vits16", "vits16", "DINOv3 ViT-S/16 (21.6M parameters, 4 storage tokens, RoPE)."
)
dinov3_vits16plus = _vit_entry_point(
    "dinov3_vits16plus", "vits16plus", "DINOv3 ViT-S+/16 (28.7M parameters, SwiGLU FFN)."
)
dinov3_vitb16 = _vit_entry_point("dinov3_vitb16", "vitb16", "DINOv3 ViT-B/16 (85.7M parameters).")
dinov3_vitl16 = _vit_entry_point(
    "dinov3_vitl16", "vitl16", "DINOv3 ViT-L/16 (303M parameters); the SAT-493M weights add ``local_cls_norm``."
)
dinov3_vitl16plus = _vit_entry_point(
    "dinov3_vitl16plus", "vitl16plus", "DINOv3 ViT-L+/16 (404M parameters, SwiGLU FFN)."
)
dinov3_vith16plus = _vit_entry_point(
    "dinov3_vith16plus", "vith16plus", "DINOv3 ViT-H+/16 (841M parameters, SwiGLU FFN)."
)
dinov3_vit7b16 = _vit_entry_point(
    "dinov3_vit7b16", "vit7b16", "DINOv3 ViT-7B/16 (6.7B parameters, no qkv bias, untied local CLS norm)."
)
dinov3_convnext_tiny = _convnext_entry_point(
    "dinov3_convnext_tiny", "tiny", "DINOv3 ConvNeXt-T (27.8M parameters), distilled from the 7B."
)
dinov3_convnext_small = _convnext_entry_point("dinov3_convnext_small", "small", "DINOv3 ConvNeXt-S (49.5M parameters).")
dinov3_convnext_base = _convnext_entry_point("dinov3_convnext_base", "base", "DINOv3 ConvNeXt-B (87.6M parameters).")
dinov3_convnext_large = _convnext_entry_point(
    "dinov3_convnext_large", "large", "DINOv3 ConvNeXt-L (196.2M parameters)."
)
