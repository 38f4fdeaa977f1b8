"""Hub entry points of the released depth estimators: DINOv2's ``dinov2_vit{s,b,l,g}14_ld`` (linear, ``layers`` 1
or 4) and ``dinov2_vit{s,b,l,g}14_dd`` (DPT), trained on NYU Depth v2 or KITTI; DINOv3's ``dinov3_vit7b16_dd`` (DPT,
SYNTHMIX) and ``dinov3_vitl16_chmv2`` (canopy height), which are :class:`~dinov2.heads.depth.depther.Depther` models
(see the DINOv3 section at the end of this module).

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

import torch

from dinov2.heads.depth.depther import (
    BACKBONE_PREFIX,
    DecoderConfig,
    Depther,
    load_decoder_weights,
    make_depther_from_config,
)
from dinov2.heads.depth.dpt import DPTHead
from dinov2.heads.depth.linear import LinearDepthHead
from dinov2.heads.depth.model import DepthEncoderDecoder
from dinov2.hub import catalog
from dinov2.hub.backbones import Weights as BackboneWeights
from dinov2.hub.backbones import WeightsArg, _make_dinov2_model
from dinov2.hub.dense_utils import load_dense_state_dict, read_dense_checkpoint, resolve_head_source
from dinov2.hub.dinov3_backbones import Weights as DINOv3Weights
from dinov2.hub.dinov3_backbones import head_state_and_backbone
from dinov2.hub.utils import no_other_kwargs

__all__ = ["Weights", "DEPTH_OUT_INDEX", "LINEAR_DEPTH_RANGE", "RELEASED_LINEAR_DEPTH_RANGE"]
__all__ += ["DepthWeights", "dinov3_dpt_depther_config", "chmv2_config", "make_dinov3_depther"]


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


# ------------------------------------------------------------------------------------------------ DINOv3
class DepthWeights(Enum):
    """The data of DINOv3's released depth decoders."""

    CHMV2 = "CHMV2"
    SYNTHMIX = "SYNTHMIX"


#: the released decoder files (gated, like the backbones): the folder under the DINOv3 base URL and the file name
DINOV3_DEPTH_HEAD_FILES = {
    ("dinov3_vit7b16", DepthWeights.SYNTHMIX): ("dinov3_vit7b16", "dinov3_vit7b16_synthmix_dpt_head-02040be1.pth"),
    ("dinov3_vitl16", DepthWeights.CHMV2): ("chmv2", "dinov3_vitl16_chmv2_dpt_head-3703d643.pth"),
}
#: the DPT decoders' taps and reassemble widths by backbone (the release's ``_get_out_layers`` and
#: ``_get_post_process_channels``)
DINOV3_DPT_TAPS = {"dinov3_vitl16": ([4, 11, 17, 23], [1024] * 4), "dinov3_vit7b16": ([9, 19, 29, 39], [2048] * 4)}
SYNTHMIX_DEPTH_RANGE = (0.001, 100.0)


def dinov3_dpt_depther_config(
    backbone_name: str = "dinov3_vit7b16", depth_range: tuple[float, float] | None = None
) -> DecoderConfig:
    """The released ``dinov3_*_dd`` decoder: DPT on 4 taps after the final norm, batch norm, class token ignored,
    512 channels, 256 linear bins over ``depth_range`` (SYNTHMIX: 0.001 .. 100 m)."""
    if backbone_name not in DINOV3_DPT_TAPS:
        raise ValueError(f"no DPT depther settings for {backbone_name!r}; valid: {sorted(DINOV3_DPT_TAPS)}")
    taps, widths = DINOV3_DPT_TAPS[backbone_name]
    min_depth, max_depth = depth_range or SYNTHMIX_DEPTH_RANGE
    return DecoderConfig(
        min_depth=min_depth,
        max_depth=max_depth,
        backbone_out_layers=taps,
        n_output_channels=256,
        use_backbone_norm=True,
        use_batchnorm=True,
        use_cls_token=False,
        type="dpt",
        head_kwargs=dict(channels=512, post_process_channels=widths),
    )


def chmv2_config() -> DecoderConfig:
    """The released CHMv2 canopy-height decoder: DPT on blocks 5, 11, 17, 23 of the ViT-L/16 with the class token
    projected in, 256 mixed-log bins over 0.001 .. 96 m, biased fusion convs, no projection after fusion."""
    return DecoderConfig(
        min_depth=0.001,
        max_depth=96.0,
        backbone_out_layers=[5, 11, 17, 23],
        n_output_channels=256,
        use_backbone_norm=True,
        use_batchnorm=False,
        use_cls_token=True,
        type="dpt",
        bins_strategy="chmv2_mixlog",
        norm_strategy="chmv2_mixlog",
        head_kwargs={"n_hidden_channels": 128, "use_bias": True, "projection_after_fusion": False},
    )


def make_dinov3_depther(
    backbone_name: str,
    config: DecoderConfig,
    released: DepthWeights,
    *,
    pretrained: bool = True,
    weights: DepthWeights | WeightsArg | None = None,
    backbone_weights: DINOv3Weights | WeightsArg = DINOv3Weights.LVD1689M,
    check_hash: bool = False,
    autocast_dtype: torch.dtype = torch.float32,
) -> Depther:
    """DINOv3 hub ViT ``backbone_name`` + the decoder ``config`` describes, with decoder weights ``weights``: the
    ``released`` file (the default; gated: pass its path), or a local path / URL of a decoder file or of a whole
    depther (which then needs no ``backbone_weights``), loaded whatever ``pretrained`` says."""
    entry = f"{backbone_name}_{'dd' if released is DepthWeights.SYNTHMIX else 'chmv2'}"
    file_name = DINOV3_DEPTH_HEAD_FILES.get((backbone_name, released), (None, None))[1]
    weights = released if weights is None else weights
    files = dict(pretrained=pretrained, backbone_weights=backbone_weights, check_hash=check_hash)
    state, backbone = head_state_and_backbone(
        entry, backbone_name, weights, released, file_name, backbone_prefix=BACKBONE_PREFIX, **files
    )
    depther = make_depther_from_config(backbone, config, autocast_dtype=autocast_dtype)
    if state is not None:
        load_decoder_weights(depther, state, f"the {entry} decoder")
    return depther


def dinov3_vit7b16_dd(
    *,
    pretrained: bool = True,
    weights: DepthWeights | str = DepthWeights.SYNTHMIX,
    backbone_weights: DINOv3Weights | str = DINOv3Weights.LVD1689M,
    check_hash: bool = False,
    autocast_dtype: torch.dtype = torch.float32,
    **kwargs,
) -> Depther:
    """DINOv3 ViT-7B/16 + the released DPT depth decoder trained on SYNTHMIX (metric depth, 0.001 .. 100 m), as
    released. The release gates both files: ``pretrained=True`` needs ``backbone_weights=`` (the ``dinov3_vit7b16``
    file) and ``weights=`` (``dinov3_vit7b16_synthmix_dpt_head-02040be1.pth``); see :func:`make_dinov3_depther`."""
    no_other_kwargs("dinov3_vit7b16_dd", kwargs)
    config = dinov3_dpt_depther_config("dinov3_vit7b16")
    files = dict(weights=weights, backbone_weights=backbone_weights, check_hash=check_hash)
    return make_dinov3_depther(
        "dinov3_vit7b16", config, DepthWeights.SYNTHMIX, pretrained=pretrained, autocast_dtype=autocast_dtype, **files
    )


def dinov3_vitl16_chmv2(
    pretrained: bool = True,
    weights: DepthWeights | str = DepthWeights.CHMV2,
    backbone_weights: DINOv3Weights | str = DINOv3Weights.SAT493M,
    check_hash: bool = False,
    autocast_dtype: torch.dtype = torch.float32,
    **kwargs,
) -> Depther:
    """DINOv3 ViT-L/16 pretrained on satellite images (SAT-493M) + the released CHMv2 canopy-height decoder (metres,
    0.001 .. 96), as released. The release gates both files: ``pretrained=True`` needs ``backbone_weights=`` (the
    SAT-493M ``dinov3_vitl16`` file, under its released name) and ``weights=``
    (``dinov3_vitl16_chmv2_dpt_head-3703d643.pth``); see :func:`make_dinov3_depther`."""
    no_other_kwargs("dinov3_vitl16_chmv2", kwargs)
    files = dict(weights=weights, backbone_weights=backbone_weights, check_hash=check_hash)
    return make_dinov3_depther(
        "dinov3_vitl16",
        chmv2_config(),
        DepthWeights.CHMV2,
        pretrained=pretrained,
        autocast_dtype=autocast_dtype,
        **files,
    )
