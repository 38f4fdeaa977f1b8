"""DINOv3's detector (``dinov2.heads.detection``: Plain-DETR on a windowed DINOv3 ViT) and its hub entry point
``dinov3_vit7b16_de``: equal to the release (numbers kept in ``dinov3_detector_release.json``, printed from the
release by ``scripts/check_dinov3_detector.py``, which also shows bit-identical outputs and seeded initialisations),
released files gated, head files loaded strictly, post-processed detections in the released format."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from dinov2.heads.detection import dinov3 as det
from dinov2.heads.detection.backbone import pad_images
from dinov2.hub import detectors as hub
from dinov2.hub import dinov3_backbones
from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3
from dinov2.models.weights import WeightsMismatchError
from scripts import check_dinov3_detector as check
from tests.heads.release_numbers import assert_like_release

RELEASE = json.loads((Path(__file__).parent / "dinov3_detector_release.json").read_text())
SMALL_HEAD = {**check.SMALL, "num_classes": 5}  # the hub's head at width 64, 10 (+ 14) queries, 5 classes
VIT_PREFIX = "backbone.0._backbone.backbone."


@pytest.mark.parametrize("name", sorted(check.CASES))
def test_small_detectors_give_the_released_outputs(name):
    got = check.outputs(check.our_detector(name), (det.DetectorWithProcessor, det.PostProcess), name)
    for output, reference in RELEASE["cases"][name].items():
        assert_like_release(got[output], reference, output)


def test_the_hub_detector_is_the_released_model():
    # head keys and shapes in order, sizes, windows, blocks, queries, what trains and what is in training mode
    assert check.hub_summary(hub.dinov3_vit7b16_de) == RELEASE["hub"]["dinov3_vit7b16_de"]


def test_the_hub_entry_point_has_the_released_signature_and_gated_files(tmp_path):
    import hubconf

    assert hubconf.dinov3_vit7b16_de is hub.dinov3_vit7b16_de
    parameters = list(inspect.signature(hub.dinov3_vit7b16_de).parameters)
    assert parameters == ["pretrained", "weights", "backbone_weights", "check_hash", "kwargs"]
    with pytest.raises(ValueError, match="licence form.*dinov3_vit7b16_coco2017_detr_head-b0235ff7.pth"):
        hub.dinov3_vit7b16_de()
    with pytest.raises(ValueError, match="dinov3_vit7b16_coco2017_detr_head-0a1b2c3d.pth"):
        hub.dinov3_vit7b16_de(weights="COCO2017", hash="0a1b2c3d")  # the release's file-name suffix argument
    torch.save({"model": {"query_embed.weight": torch.zeros(1)}}, tmp_path / "head.pth")
    with pytest.raises(ValueError, match="licence form.*dinov3_vit7b16_pretrain_lvd1689m"):  # then the backbone's
        hub.dinov3_vit7b16_de(weights=str(tmp_path / "head.pth"))
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['num_classes'\]"):
        hub.dinov3_vit7b16_de(pretrained=False, num_classes=80)
    with pytest.raises(ValueError, match="was not released for this backbone"):
        hub.make_dinov3_detector("dinov3_vitl16plus")
    with pytest.raises(ValueError, match="no released detector settings for 'dinov3_vits16': use dinov3_vit7b16"):
        hub.make_dinov3_detector("dinov3_vits16", pretrained=False)


def _small_hub_detector(**files):
    """``make_dinov3_detector`` on a ViT-S/16 with 2 x 2 windows and the small head."""
    return hub.make_dinov3_detector("dinov3_vits16", n_windows_sqrt=2, **SMALL_HEAD, **files)


def _boxes(model, images):
    with torch.no_grad():
        return model.detector(images)["pred_boxes"]


def test_a_released_head_file_an_evaluation_checkpoint_or_a_whole_detector_loads_strictly(tmp_path):
    torch.manual_seed(0)
    backbone_file = tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"  # the released file name
    torch.save(dinov3_backbones.dinov3_vits16(pretrained=False).state_dict(), backbone_file)
    model = _small_hub_detector(pretrained=False).eval()
    model.detector.backbone[0]._backbone.backbone.load_state_dict(torch.load(backbone_file, weights_only=True))
    with torch.no_grad():
        for key, p in model.detector.named_parameters():
            if not key.startswith(VIT_PREFIX):
                p.normal_(std=0.1)  # away from the initialisation
    state = model.detector.state_dict()
    head = {k: v for k, v in state.items() if not k.startswith(VIT_PREFIX)}
    assert "transformer.decoder.bbox_embed.2.layers.2.bias" in head and "bbox_embed.2.layers.2.bias" in head
    torch.save({"model": head}, tmp_path / "head.pth")  # the released layout: every key but the ViT's
    torch.save({"model": {f"module.{k}": v for k, v in head.items()}}, tmp_path / "ckpt.pth")
    torch.save(state, tmp_path / "whole.pth")
    images = [torch.randn(3, 64, 96), torch.randn(3, 48, 80)]
    expected = _boxes(model, images)
    assert expected.shape == (2, 10, 4)
    for name in ("head.pth", "ckpt.pth"):
        loaded = _small_hub_detector(weights=str(tmp_path / name), backbone_weights=str(backbone_file)).eval()
        assert torch.equal(_boxes(loaded, images), expected), name
    whole = _small_hub_detector(weights=tmp_path / "whole.pth").eval()  # no backbone_weights needed
    assert torch.equal(_boxes(whole, images), expected)

    detector = model.detector
    missing = {k: v for k, v in head.items() if not k.startswith("query_embed.")}
    with pytest.raises(WeightsMismatchError, match=r"1 missing key\(s\): \['query_embed.weight'\]"):
        det.load_detector_weights(detector, {"model": missing})
    with pytest.raises(WeightsMismatchError, match=r"1 unexpected key\(s\): \['transformer.extra'\]"):
        det.load_detector_weights(detector, {**head, "transformer.extra": torch.zeros(1)})
    classes = {**head, "class_embed.0.weight": torch.zeros(91, 64)}  # a head for COCO's 91 ids, not 5
    with pytest.raises(WeightsMismatchError, match=r"shape mismatch.*weights \[91, 64\] vs model \[5, 64\]"):
        det.load_detector_weights(detector, classes)
    assert torch.equal(_boxes(model, images), expected)  # nothing was copied
    torch.save(head, tmp_path / "head-0a1b2c3d.pth")
    with pytest.raises(RuntimeError, match="expected 0a1b2c3d"):
        _small_hub_detector(weights=tmp_path / "head-0a1b2c3d.pth", pretrained=False, check_hash=True)


def test_the_hub_model_returns_scored_labelled_pixel_boxes_per_image():
    torch.manual_seed(0)
    model = _small_hub_detector(pretrained=False)
    vit = model.detector.backbone[0]._backbone.backbone
    assert model.training and not vit.training  # as released: only the backbone is put in eval mode
    assert not any(p.requires_grad for p in vit.parameters())
    assert model.detector.num_queries == 10 and model.detector.transformer.two_stage_num_proposals == 10
    images = [torch.randn(3, 64, 96), torch.randn(3, 48, 80)]
    with torch.no_grad():
        results = model.eval()(images)
    assert len(results) == 2
    for result, image in zip(results, images):
        assert list(result) == ["scores", "labels", "boxes"]
        scores, labels, boxes = result["scores"], result["labels"], result["boxes"]
        assert scores.shape == (25,) and labels.shape == (25,) and boxes.shape == (25, 4)
        assert torch.all(scores[:-1] >= scores[1:]) and scores.min() > 0 and scores.max() < 1
        assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() < 5
        height, width = image.shape[1:]
        assert torch.all(boxes[:, 0] <= boxes[:, 2]) and torch.all(boxes[:, 1] <= boxes[:, 3])  # XYXY
        assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= width  # pixels, clipped to the image
        assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= height


def test_refused_inputs_and_settings():
    vit = DinoVisionTransformerV3(**check.VIT)
    with pytest.raises(NotImplementedError, match="reparam=False is not served; only True"):
        det.build_model(vit, det.dinov3_detector_config(vit, 2, reparam=False))
    with pytest.raises(NotImplementedError, match="decoder_type='global_ape' is not served"):
        det.build_model(vit, det.dinov3_detector_config(vit, 2, decoder_type="global_ape"))
    with pytest.raises(ValueError, match="rpe_type must be one of linear, abs_log8, got 'box_norm'"):
        det.build_model(vit, det.dinov3_detector_config(vit, 2, **SMALL_HEAD, decoder_rpe_type="box_norm"))
    with pytest.raises(ValueError, match="hidden_dim must be a multiple of 32"):
        det.build_model(vit, det.dinov3_detector_config(vit, 0, **{**SMALL_HEAD, "hidden_dim": 48, "nheads": 4}))
    with pytest.raises(ValueError, match=r"\[3, H, W\] images.*got shapes \[\(64, 64\)\]"):
        pad_images([torch.zeros(64, 64)])
