"""Hub entry points of the released semantic segmentation heads, without mmcv / mmseg:
``dinov2_vit{s,b,l,g}14_{ade20k,voc2012}_{linear,ms}``.

``model.predict(images)`` takes a normalised RGB batch ``[B, 3, H, W]`` (or a PIL image) and returns the class
map ``[B, H, W]`` with the test pipeline of the released configs (mmseg 0.27 semantics, see
:mod:`dinov2.heads.segmentation.inference`):

- ``linear``: last block, short side 512, sliding windows 512 / stride 341;
- ``ms``: last 4 blocks concatenated, short side 640 x (1.0, 1.32, 1.73, 2.28, 3.0), each also flipped (10
  passes; the release's notebook trims this to the first 3 ratios: ``model.predict(x, ratios=(1.0, 1.32, 1.73))``),
  sliding windows 640 / stride 320, class probabilities averaged.

``model(img)`` gives logits ``[B, K, H, W]`` (training path). Class names and colours: ``model.class_names``,
``model.palette``; :func:`dinov2.heads.segmentation.render.save_overlay` writes an overlay PNG.

Weights: ``weights=None`` is the released head file (downloaded when ``pretrained``); a path or URL of a head
file (a released ``*_head.pth`` or what ``python -m dinov2.eval.segmentation`` saves) is loaded whatever
``pretrained`` says (``pretrained=False`` only turns off downloads of released files); the number of classes
is taken from the file (a probe trained on another dataset loads too). ``backbone_weights``: a
local backbone file / training export instead of the released backbone. Loading is strict.
Mask2Former (``dinov2_vitg14_ade20k_m2f``) is not provided.

DINOv3's ``dinov3_vit7b16_ms`` (see the DINOv3 section at the end of this module) is the released Mask2Former
segmentor, a :class:`~dinov2.heads.segmentation.dinov3.FeatureDecoder`: ``model(images)`` gives Mask2Former's
query logits and masks at 1/4 resolution, ``model.predict(images, rescale_to=(512, 512))`` the same with resized
masks (no sliding windows or class-map assembly: the released model's own calls). Its files are gated: pass their
paths (``weights=``, ``backbone_weights=``); a weights path or URL is loaded whatever ``pretrained`` says (the
release loads nothing without ``pretrained``), strictly.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

import torch

from dinov2.heads.segmentation.classes import (
    ADE20K_CLASS_NAMES,
    ADE20K_PALETTE,
    VOC2012_CLASS_NAMES,
    VOC2012_PALETTE,
    voc_palette,
)
from dinov2.heads.segmentation.dinov3 import (
    BACKBONE_PREFIX,
    FeatureDecoder,
    build_segmentation_decoder,
    load_segmentor_weights,
)
from dinov2.heads.segmentation.inference import SegmentationTestConfig
from dinov2.heads.segmentation.linear import LinearSegmentationHead
from dinov2.heads.segmentation.model import SegmentationEncoderDecoder
from dinov2.hub import catalog
from dinov2.hub.backbones import Weights as BackboneWeights
from dinov2.hub.backbones import WeightsArg, _make_dinov2_model
from dinov2.hub.dense_utils import load_dense_state_dict, read_dense_checkpoint, resolve_head_source
from dinov2.hub.dinov3_backbones import HUB_VITS, head_state_and_backbone
from dinov2.hub.dinov3_backbones import Weights as DINOv3Weights
from dinov2.hub.utils import no_other_kwargs

__all__ = ["SEGMENTATION_DATASETS", "SEGMENTATION_HEADS", "SegmentationDataset", "make_segmentor"]
__all__ += ["SegmentorWeights", "make_dinov3_m2f_segmentor"]


@dataclass(frozen=True)
class SegmentationDataset:
    num_classes: int
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]


SEGMENTATION_DATASETS = {
    "ade20k": SegmentationDataset(150, ADE20K_CLASS_NAMES, ADE20K_PALETTE),
    "voc2012": SegmentationDataset(21, VOC2012_CLASS_NAMES, VOC2012_PALETTE),
}
# head type -> (number of last blocks, test pipeline of the released configs)
SEGMENTATION_HEADS = {
    "linear": (1, SegmentationTestConfig("slide", (512, 512), (341, 341), 512, (1.0,), False)),
    "ms": (4, SegmentationTestConfig("slide", (640, 640), (320, 320), 640, (1.0, 1.32, 1.73, 2.28, 3.0), True)),
}
_ARCH_DEPTH = catalog.ARCH_DEPTH


class _Released(enum.Enum):  # the only "enum" value: the released head file of the entry point
    RELEASED = "RELEASED"


def make_segmentor(
    *,
    arch_name: str,
    dataset: str,
    head: str,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    backbone_weights: WeightsArg | None = None,
    **kwargs,
) -> SegmentationEncoderDecoder:
    """Backbone + BN/1x1-conv head of ``dataset`` (ade20k | voc2012) and ``head`` (linear | ms), in eval mode."""
    if dataset not in SEGMENTATION_DATASETS or head not in SEGMENTATION_HEADS or arch_name not in _ARCH_DEPTH:
        raise ValueError(
            f"unknown segmentor {arch_name}/{dataset}/{head}: arch in {sorted(_ARCH_DEPTH)}, dataset in "
            f"{sorted(SEGMENTATION_DATASETS)}, head in {sorted(SEGMENTATION_HEADS)}"
        )
    info, (n_blocks, test_cfg) = SEGMENTATION_DATASETS[dataset], SEGMENTATION_HEADS[head]
    url = catalog.head_url(arch_name, f"{dataset}_{head}")
    source = resolve_head_source(_Released.RELEASED if weights is None else weights, _Released)
    head_state, meta = None, {}
    if source is not _Released.RELEASED:
        head_state, meta = read_dense_checkpoint(source)
    elif pretrained:
        (head_state, meta), source = read_dense_checkpoint(url), url
    with_backbone = head_state is not None and any(k.startswith("backbone.") for k in head_state)
    backbone = _make_dinov2_model(
        arch_name=arch_name,
        pretrained=(pretrained or backbone_weights is not None) and not with_backbone,
        weights=BackboneWeights.LVD142M if backbone_weights is None else backbone_weights,
        **kwargs,
    )
    depth = _ARCH_DEPTH[arch_name]
    num_classes, class_names, palette = info.num_classes, info.class_names, info.palette
    if head_state is not None and "decode_head.conv_seg.weight" in head_state:
        num_classes = int(head_state["decode_head.conv_seg.weight"].shape[0])  # e.g. a probe on another dataset
        if num_classes != info.num_classes:
            class_names = tuple(meta.get("class_names") or [str(i) for i in range(num_classes)])
            palette = voc_palette(num_classes)
    decode_head = LinearSegmentationHead([backbone.embed_dim] * n_blocks, num_classes)
    out_index = list(range(depth - n_blocks, depth))
    model = SegmentationEncoderDecoder(backbone, decode_head, out_index, test_cfg, class_names, palette)
    if head_state is not None:
        what = f"{catalog.model_name(arch_name, 14)} {dataset} {head} segmentor"
        load_dense_state_dict(model, head_state, source, what)
    return model.eval()


def _segmentor(arch_name, dataset, head, pretrained, weights, backbone_weights, kwargs):
    if arch_name == "vit_giant2":
        kwargs = {"ffn_layer": "swiglufused", **kwargs}
    return make_segmentor(
        arch_name=arch_name, dataset=dataset, head=head, pretrained=pretrained, weights=weights,
        backbone_weights=backbone_weights, **kwargs,
    )  # fmt: skip


def dinov2_vits14_ade20k_linear(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """ADE20K (150 classes) linear segmentor on DINOv2 ViT-S/14."""
    return _segmentor("vit_small", "ade20k", "linear", pretrained, weights, backbone_weights, kwargs)


def dinov2_vits14_ade20k_ms(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """ADE20K (150 classes) multi-scale (+ms) segmentor on DINOv2 ViT-S/14."""
    return _segmentor("vit_small", "ade20k", "ms", pretrained, weights, backbone_weights, kwargs)


def dinov2_vits14_voc2012_linear(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """Pascal VOC 2012 (21 classes) linear segmentor on DINOv2 ViT-S/14."""
    return _segmentor("vit_small", "voc2012", "linear", pretrained, weights, backbone_weights, kwargs)


def dinov2_vits14_voc2012_ms(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """Pascal VOC 2012 (21 classes) multi-scale (+ms) segmentor on DINOv2 ViT-S/14."""
    return _segmentor("vit_small", "voc2012", "ms", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitb14_ade20k_linear(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """ADE20K (150 classes) linear segmentor on DINOv2 ViT-B/14."""
    return _segmentor("vit_base", "ade20k", "linear", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitb14_ade20k_ms(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """ADE20K (150 classes) multi-scale (+ms) segmentor on DINOv2 ViT-B/14."""
    return _segmentor("vit_base", "ade20k", "ms", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitb14_voc2012_linear(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """Pascal VOC 2012 (21 classes) linear segmentor on DINOv2 ViT-B/14."""
    return _segmentor("vit_base", "voc2012", "linear", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitb14_voc2012_ms(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """Pascal VOC 2012 (21 classes) multi-scale (+ms) segmentor on DINOv2 ViT-B/14."""
    return _segmentor("vit_base", "voc2012", "ms", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitl14_ade20k_linear(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """ADE20K (150 classes) linear segmentor on DINOv2 ViT-L/14."""
    return _segmentor("vit_large", "ade20k", "linear", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitl14_ade20k_ms(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """ADE20K (150 classes) multi-scale (+ms) segmentor on DINOv2 ViT-L/14."""
    return _segmentor("vit_large", "ade20k", "ms", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitl14_voc2012_linear(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """Pascal VOC 2012 (21 classes) linear segmentor on DINOv2 ViT-L/14."""
    return _segmentor("vit_large", "voc2012", "linear", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitl14_voc2012_ms(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """Pascal VOC 2012 (21 classes) multi-scale (+ms) segmentor on DINOv2 ViT-L/14."""
    return _segmentor("vit_large", "voc2012", "ms", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitg14_ade20k_linear(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """ADE20K (150 classes) linear segmentor on DINOv2 ViT-g/14."""
    return _segmentor("vit_giant2", "ade20k", "linear", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitg14_ade20k_ms(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """ADE20K (150 classes) multi-scale (+ms) segmentor on DINOv2 ViT-g/14."""
    return _segmentor("vit_giant2", "ade20k", "ms", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitg14_voc2012_linear(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """Pascal VOC 2012 (21 classes) linear segmentor on DINOv2 ViT-g/14."""
    return _segmentor("vit_giant2", "voc2012", "linear", pretrained, weights, backbone_weights, kwargs)


def dinov2_vitg14_voc2012_ms(*, pretrained=True, weights=None, backbone_weights=None, **kwargs):
    """Pascal VOC 2012 (21 classes) multi-scale (+ms) segmentor on DINOv2 ViT-g/14."""
    return _segmentor("vit_giant2", "voc2012", "ms", pretrained, weights, backbone_weights, kwargs)


# ------------------------------------------------------------------------------------------------ DINOv3
class SegmentorWeights(enum.Enum):
    """The data of DINOv3's released segmentor."""

    ADE20K = "ADE20K"


DINOV3_M2F_HEAD_HASH = "bf307cb1"  # of the released (gated) dinov3_vit7b16_ade20k_m2f_head file


def make_dinov3_m2f_segmentor(
    backbone_name: str,
    *,
    pretrained: bool = True,
    weights: SegmentorWeights | WeightsArg = SegmentorWeights.ADE20K,
    backbone_weights: DINOv3Weights | WeightsArg = DINOv3Weights.LVD1689M,
    check_hash: bool = False,
    autocast_dtype: torch.dtype = torch.bfloat16,
    hidden_dim: int = 2048,
    num_classes: int = 150,
    file_hash: str = DINOV3_M2F_HEAD_HASH,
) -> FeatureDecoder:
    """DINOv3 hub ViT ``backbone_name`` + the released adapter and Mask2Former head (``hidden_dim`` wide,
    ``num_classes`` classes), with weights ``weights``: the released ADE20K file (the default; gated: pass its path,
    ``<backbone_name>_ade20k_m2f_head-<file_hash>.pth``), or a local path / URL of a head file (every key but the
    backbone's) or of a whole segmentor (which then needs no ``backbone_weights``), loaded whatever ``pretrained``
    says. The model is returned as released: the adapter in eval mode, the head in training mode."""
    if backbone_name not in HUB_VITS:
        raise ValueError(f"no DINOv3 segmentor on {backbone_name!r}; valid: {', '.join(HUB_VITS)}")
    entry = f"{backbone_name}_ms"
    file_name = f"{backbone_name}_ade20k_m2f_head-{file_hash}.pth" if backbone_name == "dinov3_vit7b16" else None
    files = dict(pretrained=pretrained, backbone_weights=backbone_weights, check_hash=check_hash)
    state, backbone = head_state_and_backbone(
        entry, backbone_name, weights, SegmentorWeights.ADE20K, file_name, backbone_prefix=BACKBONE_PREFIX, **files
    )
    segmentor = build_segmentation_decoder(
        backbone, decoder_type="m2f", hidden_dim=hidden_dim, num_classes=num_classes, autocast_dtype=autocast_dtype
    )
    if state is not None:
        load_segmentor_weights(segmentor, state, f"the {entry} adapter and head")
    return segmentor


def dinov3_vit7b16_ms(
    *,
    pretrained: bool = True,
    weights: SegmentorWeights | str = SegmentorWeights.ADE20K,
    backbone_weights: DINOv3Weights | str = DINOv3Weights.LVD1689M,
    check_hash: bool = False,
    autocast_dtype: torch.dtype = torch.bfloat16,
    **kwargs,
) -> FeatureDecoder:
    """DINOv3 ViT-7B/16 + the released ViT adapter and Mask2Former head trained on ADE20K (150 classes), as released.
    The release gates both files: ``pretrained=True`` needs ``backbone_weights=`` (the ``dinov3_vit7b16`` file) and
    ``weights=`` (``dinov3_vit7b16_ade20k_m2f_head-bf307cb1.pth``); see :func:`make_dinov3_m2f_segmentor`.
    ``kwargs``: the release's ``hidden_dim`` (the head's width, 2048) and ``hash`` (the head file's name suffix).
    ``autocast_dtype`` applies to CUDA inputs (see :mod:`dinov2.heads.segmentation.dinov3`)."""
    hidden_dim = kwargs.pop("hidden_dim", 2048)
    file_hash = kwargs.get("hash", DINOV3_M2F_HEAD_HASH)
    no_other_kwargs("dinov3_vit7b16_ms", kwargs)
    return make_dinov3_m2f_segmentor(
        "dinov3_vit7b16",
        pretrained=pretrained,
        weights=weights,
        backbone_weights=backbone_weights,
        check_hash=check_hash,
        autocast_dtype=autocast_dtype,
        hidden_dim=hidden_dim,
        file_hash=file_hash,
    )
