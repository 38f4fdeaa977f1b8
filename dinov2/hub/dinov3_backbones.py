"""The 11 released DINOv3 hub backbones (``dinov3_vits16`` ... ``dinov3_convnext_large``), released names and arguments.

The release gates its weights behind a licence form, so ``pretrained=True`` needs ``weights=`` (a downloaded file or
the personal URL the form sends). Models are built by the hub's one builder
(:func:`dinov2.hub.backbones.build_hub_backbone`) and files loaded strictly.
"""

from __future__ import annotations

import hashlib
import os
import re
from enum import Enum
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from dinov2.heads.head_files import holds_backbone, read_head_state
from dinov2.hub import catalog
from dinov2.hub.backbones import build_hub_backbone
from dinov2.models.weights import download, is_url, read_backbone_weights
from dinov2.utils.registry import named

DINOV3_BASE_URL = catalog.DINOV3_BASE_URL
LICENCE_URL = catalog.DINOV3_LICENCE_URL
HUB_VITS = tuple(f"dinov3_{short}" for short in catalog.DINOV3_VITS)  # the hub ViTs a head entry point can sit on


class Weights(Enum):
    """Pretraining data of the released weights."""

    LVD1689M = "LVD1689M"
    SAT493M = "SAT493M"


def weights_url(arch: str, weights: Weights = Weights.LVD1689M, hash: str | None = None) -> str:
    """The release's URL scheme ``<base>/dinov3_<arch>/dinov3_<arch>_pretrain_<data>[-<hash>].pth``."""
    return catalog.dinov3_weights_url(arch, weights.value, hash)


def _file_hash(weights: str) -> str | None:
    found = re.findall(r"-([0-9a-f]{8})\.pth", str(weights))
    return found[0] if len(found) == 1 else None


def _source(name: str, weights: Weights | str | os.PathLike, hashes: dict[str, str]) -> str:
    """The URL or local path to read; a release enum cannot be fetched here because the files are gated."""
    if isinstance(weights, Weights):
        if weights.value not in hashes:
            raise ValueError(f"{name}: weights={weights} were not released; choose one of {sorted(hashes)}")
        arch = name.removeprefix("dinov3_")
        raise catalog.gated_weights_error(name, os.path.basename(weights_url(arch, weights, hashes[weights.value])))
    return str(weights)


def _check_hash(path: Path, expected: str | None, name: str) -> None:
    if expected is None:
        raise ValueError(f"{name}: check_hash=True but {path.name!r} has no '-<8 hex digits>.pth' suffix to check")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise RuntimeError(f"{name}: {path} has sha256 {digest[:8]}..., expected {expected}...; re-download it")


def checked_source(name: str, source: str, check_hash: bool) -> str | Path:
    """``source``, or with ``check_hash`` its local copy (downloaded when a URL) once its sha256 matches its name."""
    if not check_hash:
        return source
    path = download(source, argument="weights") if is_url(source) else Path(source).expanduser()
    _check_hash(path, _file_hash(source), name)
    return path


def head_weights_source(
    entry: str,
    weights: Enum | str | os.PathLike,
    released: Enum,
    file_name: str | None,
    *,
    pretrained: bool,
    check_hash: bool,
) -> str | Path | None:
    """Where a DINOv3 head entry point (``entry``: a depther, segmentor or classifier) reads its head from: ``None``
    for the released file (``released``, or its name) with ``pretrained=False``; with ``pretrained=True`` the
    release's gate, an error naming ``file_name`` to download (``None``: not released on this backbone); else the
    path or URL given (with ``check_hash``, its local copy once its sha256 matches its name)."""
    kind = type(released)
    if isinstance(weights, str) and weights.upper() in kind.__members__:
        weights = kind[weights.upper()]
    if not isinstance(weights, kind):
        return checked_source(entry, str(weights), check_hash)
    if weights is not released:
        raise ValueError(f"{entry}: weights={weights} were not released for it; use {released} or a file")
    if pretrained and file_name is None:
        raise ValueError(f"{entry}: {weights} was not released for this backbone; pass weights= a file")
    if pretrained:
        raise catalog.gated_weights_error(entry, file_name)
    return None


def head_state_and_backbone(
    entry: str,
    backbone_name: str,
    weights: Enum | str | os.PathLike,
    released: Enum,
    file_name: str | None,
    *,
    backbone_prefix: str,
    pretrained: bool,
    backbone_weights: Weights | str | os.PathLike,
    check_hash: bool,
) -> tuple[dict[str, Tensor] | None, nn.Module]:
    """``(head state dict or None, backbone)`` of a DINOv3 head entry point: the head file as
    :func:`head_weights_source` finds it, read by :func:`dinov2.heads.head_files.read_head_state`, and the hub
    backbone ``backbone_name`` with ``backbone_weights``, or without weights when the head file holds the whole model
    (keys under ``backbone_prefix``)."""
    if backbone_name not in HUB_VITS:
        raise ValueError(f"{entry}: {backbone_name!r} is not a DINOv3 hub ViT; valid: {', '.join(HUB_VITS)}")
    source = head_weights_source(entry, weights, released, file_name, pretrained=pretrained, check_hash=check_hash)
    state = None if source is None else read_head_state(source)
    whole = state is not None and holds_backbone(state, backbone_prefix)
    make = globals()[backbone_name]
    return state, make(pretrained=pretrained and not whole, weights=backbone_weights, check_hash=check_hash)


def _load_released(model: nn.Module, state_dict: dict, source: object, name: str) -> None:
    model.load_state_dict(state_dict, strict=True)  # the release's strict load (and its error message)


def load_weights(model: nn.Module, name: str, source: str, check_hash: bool = False) -> None:
    """Read ``source`` (local path, ``file://`` or ``https://`` URL) and load it into ``model`` with ``strict=True``."""
    state = read_backbone_weights(checked_source(name, source, check_hash), argument="weights")
    _load_released(model, state, source, name)


def _make_vit(short: str, *, pretrained: bool, weights: Weights | str, check_hash: bool, **kwargs: Any) -> nn.Module:
    arch, _, _, hashes = catalog.DINOV3_VITS[short]
    name = f"dinov3_{short}"
    if isinstance(weights, Weights):
        untied = hashes.get(weights.value) in catalog.DINOV3_UNTIED_LOCAL_CLS_NORM_HASHES
    else:
        file_hash = _file_hash(weights)
        if short == "vitl16" and file_hash is None:
            raise ValueError(
                f"{name}: cannot tell from weights={str(weights)!r} whether it is the LVD-1689M or the SAT-493M "
                "ViT-L (they differ in architecture); keep the released file name ending in -<8 hex digits>.pth"
            )
        untied = file_hash in catalog.DINOV3_UNTIED_LOCAL_CLS_NORM_HASHES
    source = checked_source(name, _source(name, weights, hashes), check_hash) if pretrained else None
    kwargs = {**catalog.dinov3_vit_kwargs(short, untied), **kwargs}
    return build_hub_backbone(catalog.get_backbone(name), kwargs, source, load=_load_released)


def _make_convnext(size: str, *, pretrained: bool, weights: Weights | str, **kwargs: Any) -> nn.Module:
    name = f"dinov3_convnext_{size}"
    source = _source(name, weights, {"LVD1689M": catalog.DINOV3_CONVNEXTS[size]}) if pretrained else None
    kwargs = {"drop_path_rate": 0.0, **kwargs}
    return build_hub_backbone(catalog.get_backbone(name), kwargs, source, load=_load_released)


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
