"""Hub entry point of DINOv3's released object detector: ``dinov3_vit7b16_de``, Plain-DETR on the ViT-7B/16 trained on
COCO 2017 (91 category ids), as :mod:`dinov2.heads.detection` builds it.

``model(images)`` takes a list of normalised RGB images ``[3, H, W]`` (sizes multiples of 16; padded to one batch)
and returns per image a dict of the 1500 best ``scores``, their ``labels`` (COCO category ids) and ``boxes``
(x0, y0, x1, y1 in pixels). The backbone reads 3 x 3 windows and the whole image resized to one window, blocks 10,
20, 30 and 40. As released, the model comes in training mode but for the backbone: call ``model.eval()``.

Its files are gated: pass their paths (``weights=``, ``backbone_weights=``); a weights path or URL is loaded
whatever ``pretrained`` says (the release loads nothing without ``pretrained``), strictly (the release does not).
"""

from __future__ import annotations

import enum
from typing import Any

from dinov2.heads.detection.detr import PostProcess
from dinov2.heads.detection.dinov3 import (
    DetectorWithProcessor,
    backbone_prefix,
    build_model,
    dinov3_detector_config,
    load_detector_weights,
)
from dinov2.hub.backbones import WeightsArg
from dinov2.hub.dinov3_backbones import Weights as DINOv3Weights
from dinov2.hub.dinov3_backbones import head_state_and_backbone
from dinov2.hub.utils import no_other_kwargs

__all__ = ["DINOV3_DETR_HEAD_HASH", "DetectionWeights", "dinov3_vit7b16_de", "make_dinov3_detector"]


class DetectionWeights(enum.Enum):
    """The data of DINOv3's released detector."""

    COCO2017 = "COCO2017"


DINOV3_DETR_HEAD_HASH = "b0235ff7"  # of the released (gated) dinov3_vit7b16_coco2017_detr_head file
#: windows per side of the backbones the release builds detectors on
DETECTOR_WINDOWS = {"dinov3_vit7b16": 3, "dinov3_vitl16plus": 2}
_RELEASED_BACKBONES = ("dinov3_vit7b16",)  # the backbones with a released head file


def make_dinov3_detector(
    backbone_name: str,
    *,
    pretrained: bool = True,
    weights: DetectionWeights | WeightsArg = DetectionWeights.COCO2017,
    backbone_weights: DINOv3Weights | WeightsArg = DINOv3Weights.LVD1689M,
    check_hash: bool = False,
    file_hash: str = DINOV3_DETR_HEAD_HASH,
    n_windows_sqrt: int | None = None,
    **head_settings: Any,
) -> DetectorWithProcessor:
    """DINOv3 hub ViT ``backbone_name`` + the released detector head (:func:`dinov3_detector_config`; other
    :class:`~dinov2.heads.detection.dinov3.DetectionHeadConfig` fields in ``head_settings``), with weights
    ``weights``: the released COCO 2017 file (the default; gated: pass its path,
    ``<backbone_name>_coco2017_detr_head-<file_hash>.pth``), or a local path / URL of a head file (every key but the
    ViT's) or of a whole detector (which then needs no ``backbone_weights``), loaded whatever ``pretrained`` says.
    ``n_windows_sqrt``: windows per side (default: the release's, 3 for the ViT-7B and 2 for the ViT-L+). Only the
    one-to-one queries are kept, as released for inference."""
    if n_windows_sqrt is None:
        if backbone_name not in DETECTOR_WINDOWS:
            valid = ", ".join(DETECTOR_WINDOWS)
            raise ValueError(f"no released detector settings for {backbone_name!r}: use {valid} or give n_windows_sqrt")
        n_windows_sqrt = DETECTOR_WINDOWS[backbone_name]
    entry = f"{backbone_name}_de"
    file_name = f"{backbone_name}_coco2017_detr_head-{file_hash}.pth" if backbone_name in _RELEASED_BACKBONES else None
    files = dict(pretrained=pretrained, backbone_weights=backbone_weights, check_hash=check_hash)
    prefix = backbone_prefix(n_windows_sqrt > 0)
    state, backbone = head_state_and_backbone(
        entry, backbone_name, weights, DetectionWeights.COCO2017, file_name, backbone_prefix=prefix, **files
    )
    backbone.eval()
    config = dinov3_detector_config(backbone, n_windows_sqrt, **head_settings)
    detector = build_model(backbone, config)
    if state is not None:
        load_detector_weights(detector, state, f"the {entry} head")
    detector.use_one2one_queries()
    return DetectorWithProcessor(detector, PostProcess(config.topk, config.reparam))


def dinov3_vit7b16_de(
    *,
    pretrained: bool = True,
    weights: DetectionWeights | str = DetectionWeights.COCO2017,
    backbone_weights: DINOv3Weights | str = DINOv3Weights.LVD1689M,
    check_hash: bool = False,
    **kwargs,
) -> DetectorWithProcessor:
    """DINOv3 ViT-7B/16 + the released Plain-DETR detector trained on COCO 2017, as released. The release gates both
    files: ``pretrained=True`` needs ``backbone_weights=`` (the ``dinov3_vit7b16`` file) and ``weights=``
    (``dinov3_vit7b16_coco2017_detr_head-b0235ff7.pth``); see :func:`make_dinov3_detector`. ``kwargs``: the release's
    ``hash`` (the head file's name suffix)."""
    file_hash = kwargs.get("hash", DINOV3_DETR_HEAD_HASH)
    no_other_kwargs("dinov3_vit7b16_de", kwargs)
    return make_dinov3_detector(
        "dinov3_vit7b16",
        pretrained=pretrained,
        weights=weights,
        backbone_weights=backbone_weights,
        check_hash=check_hash,
        file_hash=file_hash,
    )
