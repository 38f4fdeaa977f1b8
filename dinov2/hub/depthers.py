"""Hub entry points of the released depth estimators: ``dinov2_vit{s,b,l,g}14_ld`` (linear, ``layers`` 1 or 4)
and ``dinov2_vit{s,b,l,g}14_dd`` (DPT), trained on NYU Depth v2 or KITTI.

``model.whole_inference(img, img_meta=None, rescale=True)`` (the released call) and ``model(img)`` give metric
depth ``[B, 1, H, W]`` for a normalised RGB batch ``[B, 3, H, W]`` of any size. The model is trainable.

Weights: ``weights`` is ``Weights.NYU`` / ``Weights.KITTI`` (or ``"NYU"`` / ``"KITTI"``: the released head files,
downloaded when ``pretrained``), or a head file given by path or URL (a released ``*_head.pth``, or what
``python -m dinov2.eval.depth`` saves), which is loaded whatever ``pretrained`` says: ``pretrained=False`` only
turns off the download of released files. ``backbone_weights`` picks the backbone (released by default, or a
local file / training export). Every file is loaded strictly (the release used ``strict=False``, which loaded
nothing from a file without ``"state_dict"``, silently skipped keys that did not fit, and left a NameError when
the key was absent).

Depth range: the DPT heads clamp to ``depth_range`` (default (0.001, 10) for NYU and without pretrained
weights, (0.001, 80) for KITTI), as released. The linear heads classify into 256 uniform bins over their range:
the released NYU heads over 0.001..10 (NYU's range in the released NYU configs, the range the release's own
``_get_depth_range`` gives NYU weights), the KITTI heads over 0.001..80 (``RELEASED_LINEAR_DEPTH_RANGE``). The
released linear builder ignores that range and hard-codes 0.001..80 for both (a literal left when the DPT commit
added the range), which scales the NYU heads' depths by ~8; here the released NYU heads decode over 0.001..10
(documented deviation; ``depth_range=(0.001, 80.0)`` gives the release's numbers). A fresh linear head
(``pretrained=False``) keeps the release's 0.001..80, and an explicit ``depth_range`` is honoured. A head file
written by ``python -m dinov2.eval.depth`` records its range in ``meta["depth_range"]``, used when
``depth_range`` is not given, and its size (``meta["n_bins"]`` of a linear head, ``meta["channels"]`` of a DPT
head; released files: 256).
"""

from __future__ import annotations

from enum import Enum

from dinov2.heads.depth.dpt import DPTHead
from dinov2.heads.depth.linear import LinearDepthHead
from dinov2.heads.depth.model import DepthEncoderDecoder
from dinov2.hub import catalog
from dinov2.hub.backbones import Weights as BackboneWeights
from dinov2.hub.backbones import WeightsArg, _make_dinov2_model
from dinov2.hub.dense_utils import load_dense_state_dict, read_dense_checkpoint, resolve_head_source

__all__ = ["Weights", "DEPTH_OUT_INDEX", "LINEAR_DEPTH_RANGE", "RELEASED_LINEAR_DEPTH_RANGE"]


class Weights(Enum):
    NYU = "NYU"
    KITTI = "KITTI"


DEPTH_OUT_INDEX = catalog.DEPTH_OUT_INDEX  # blocks tapped by the 4-layer linear and the DPT heads (0-based)
_DEPTH = catalog.ARCH_DEPTH  # the 1-layer head taps the last block
LINEAR_DEPTH_RANGE = (0.001, 80.0)  # hard-coded by the released linear builder (kept for fresh heads)
#: the bins each released linear head was trained over: NYU's 10 m and KITTI's 80 m (the probe recipe's defaults)
RELEASED_LINEAR_DEPTH_RANGE = {Weights.NYU: (0.001, 10.0), Weights.KITTI: (0.001, 80.0)}


def _get_depth_range(pretrained: bool, weights) -> tuple[float, float]:
    """The released DPT default: (0.001, 80) for pretrained KITTI weights, else (0.001, 10)."""
    return (0.001, 80.0) if pretrained and weights == Weights.KITTI else (0.001, 10.0)


def _linear_depth_range(pretrained: bool, source) -> tuple[float, float]:
    """The released linear heads' training range for released weights, else the release's hard-coded bins."""
    if pretrained and isinstance(source, Weights):
        return RELEASED_LINEAR_DEPTH_RANGE[source]
    return LINEAR_DEPTH_RANGE


def _read_head(source, pretrained: bool, url: str) -> tuple[dict | None, dict]:
    """``(head state dict, meta)`` to load: released (``url``) when ``pretrained``, or the file / URL given."""
    if isinstance(source, Weights):
        return read_dense_checkpoint(url) if pretrained else (None, {})
    return read_dense_checkpoint(source)


def _meta_depth_range(meta: dict) -> tuple[float, float] | None:
    """The depth range a probe recorded in its head file (``meta["depth_range"]``), if any."""
    value = meta.get("depth_range")
    return (float(value[0]), float(value[1])) if value is not None else None


def _build(arch_name, make_head, out_index, head_state, source, *, pretrained, backbone_weights, kwargs, what):
    with_backbone = head_state is not None and any(k.startswith("backbone.") for k in head_state)
    backbone = _make_dinov2_model(
        arch_name=arch_name,
        pretrained=(pretrained or backbone_weights is not None) and not with_backbone,
        weights=BackboneWeights.LVD142M if backbone_weights is None else backbone_weights,
        **kwargs,
    )
    model = DepthEncoderDecoder(backbone, make_head(backbone.embed_dim), out_index)
    if head_state is not None:
        load_dense_state_dict(model, head_state, source, what)
    return model


def _head_url(arch_name: str, weights, head: str) -> str:
    dataset = weights.value.lower() if isinstance(weights, Weights) else "nyu"
    return catalog.head_url(arch_name, f"{dataset}_{head}")


def _make_dinov2_linear_depther(
    *,
    arch_name: str = "vit_large",
    layers: int = 4,
    pretrained: bool = True,
    weights: Weights | WeightsArg = Weights.NYU,
    backbone_weights: WeightsArg | None = None,
    depth_range: tuple[float, float] | None = None,
    **kwargs,
) -> DepthEncoderDecoder:
    """Backbone + linear depth head (256 uniform bins over ``depth_range``; defaults in the module docstring)."""
    if layers not in (1, 4):
        raise ValueError(f"Unsupported number of layers: {layers} (use 1 or 4)")
    if arch_name not in DEPTH_OUT_INDEX:
        raise ValueError(f"unknown arch_name {arch_name!r}; valid: {sorted(DEPTH_OUT_INDEX)}")
    out_index = DEPTH_OUT_INDEX[arch_name] if layers == 4 else [_DEPTH[arch_name] - 1]
    source = resolve_head_source(weights, Weights)
    url = _head_url(arch_name, source, "linear4" if layers == 4 else "linear")
    head_state, meta = _read_head(source, pretrained, url)
    min_depth, max_depth = depth_range or _meta_depth_range(meta) or _linear_depth_range(pretrained, source)

    n_bins = int(meta.get("n_bins", 256))  # a probe's head file records its own

    def head(embed_dim: int) -> LinearDepthHead:
        return LinearDepthHead(embed_dim, layers, n_bins=n_bins, min_depth=min_depth, max_depth=max_depth, upsample=4)

    return _build(
        arch_name, head, out_index, head_state, url if isinstance(source, Weights) else source,
        pretrained=pretrained, backbone_weights=backbone_weights, kwargs=kwargs,
        what=f"{catalog.model_name(arch_name, 14)} linear depther (layers={layers})",
    )  # fmt: skip


def _make_dinov2_dpt_depther(
    *,
    arch_name: str = "vit_large",
    pretrained: bool = True,
    weights: Weights | WeightsArg = Weights.NYU,
    backbone_weights: WeightsArg | None = None,
    depth_range: tuple[float, float] | None = None,
    **kwargs,
) -> DepthEncoderDecoder:
    """Backbone + DPT depth head clamped to ``depth_range`` (released defaults, see the module docstring)."""
    if arch_name not in DEPTH_OUT_INDEX:
        raise ValueError(f"unknown arch_name {arch_name!r}; valid: {sorted(DEPTH_OUT_INDEX)}")
    source = resolve_head_source(weights, Weights)
    url = _head_url(arch_name, source, "dpt")
    head_state, meta = _read_head(source, pretrained, url)
    min_depth, max_depth = depth_range or _meta_depth_range(meta) or _get_depth_range(pretrained, source)

    channels = int(meta.get("channels", 256))  # a probe's head file records its own

    def head(embed_dim: int) -> DPTHead:
        return DPTHead(embed_dim, channels=channels, min_depth=min_depth, max_depth=max_depth)

    return _build(
        arch_name, head, DEPTH_OUT_INDEX[arch_name], head_state, url if isinstance(source, Weights) else source,
        pretrained=pretrained, backbone_weights=backbone_weights, kwargs=kwargs,
        what=f"{catalog.model_name(arch_name, 14)} DPT depther",
    )  # fmt: skip


def dinov2_vits14_ld(*, layers: int = 4, pretrained: bool = True, weights=Weights.NYU, **kwargs):
    """Linear depth estimator on DINOv2 ViT-S/14 (``layers`` 1 or 4; NYU or KITTI head)."""
    return _make_dinov2_linear_depther(
        arch_name="vit_small", layers=layers, pretrained=pretrained, weights=weights, **kwargs
    )


def dinov2_vitb14_ld(*, layers: int = 4, pretrained: bool = True, weights=Weights.NYU, **kwargs):
    """Linear depth estimator on DINOv2 ViT-B/14 (``layers`` 1 or 4; NYU or KITTI head)."""
    return _make_dinov2_linear_depther(
        arch_name="vit_base", layers=layers, pretrained=pretrained, weights=weights, **kwargs
    )


def dinov2_vitl14_ld(*, layers: int = 4, pretrained: bool = True, weights=Weights.NYU, **kwargs):
    """Linear depth estimator on DINOv2 ViT-L/14 (``layers`` 1 or 4; NYU or KITTI head)."""
    return _make_dinov2_linear_depther(
        arch_name="vit_large", layers=layers, pretrained=pretrained, weights=weights, **kwargs
    )


def dinov2_vitg14_ld(*, layers: int = 4, pretrained: bool = True, weights=Weights.NYU, **kwargs):
    """Linear depth estimator on DINOv2 ViT-g/14 (SwiGLU FFN; ``layers`` 1 or 4; NYU or KITTI head)."""
    return _make_dinov2_linear_depther(
        arch_name="vit_giant2", layers=layers, ffn_layer="swiglufused", pretrained=pretrained, weights=weights, **kwargs
    )


def dinov2_vits14_dd(*, pretrained: bool = True, weights=Weights.NYU, **kwargs):
    """DPT depth estimator on DINOv2 ViT-S/14 (NYU or KITTI head)."""
    return _make_dinov2_dpt_depther(arch_name="vit_small", pretrained=pretrained, weights=weights, **kwargs)


def dinov2_vitb14_dd(*, pretrained: bool = True, weights=Weights.NYU, **kwargs):
    """DPT depth estimator on DINOv2 ViT-B/14 (NYU or KITTI head)."""
    return _make_dinov2_dpt_depther(arch_name="vit_base", pretrained=pretrained, weights=weights, **kwargs)


def dinov2_vitl14_dd(*, pretrained: bool = True, weights=Weights.NYU, **kwargs):
    """DPT depth estimator on DINOv2 ViT-L/14 (NYU or KITTI head)."""
    return _make_dinov2_dpt_depther(arch_name="vit_large", pretrained=pretrained, weights=weights, **kwargs)


def dinov2_vitg14_dd(*, pretrained: bool = True, weights=Weights.NYU, **kwargs):
    """DPT depth estimator on DINOv2 ViT-g/14 (SwiGLU FFN; NYU or KITTI head)."""
    return _make_dinov2_dpt_depther(
        arch_name="vit_giant2", ffn_layer="swiglufused", pretrained=pretrained, weights=weights, **kwargs
    )
