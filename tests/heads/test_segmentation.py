"""Segmentation head and test-time pipeline: released key layout, mmseg 0.27 sliding-window / multi-scale
semantics against an independent computation, PIL input, palettes and overlays."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dinov2.data.dense_transforms import keep_ratio_size
from dinov2.heads.segmentation.classes import ADE20K_PALETTE, VOC2012_CLASS_NAMES, VOC2012_PALETTE
from dinov2.heads.segmentation.inference import SegmentationTestConfig
from dinov2.heads.segmentation.linear import LinearSegmentationHead
from dinov2.heads.segmentation.model import SegmentationEncoderDecoder, image_to_tensor
from dinov2.heads.segmentation.render import colorize_segmentation, overlay_segmentation, tensor_to_image
from dinov2.heads.sliding_window import window_boxes
from dinov2.models.vision_transformer import DinoVisionTransformer

K = 5  # classes of the tiny segmentor


def test_released_key_layout():
    head = LinearSegmentationHead([384] * 4, 150)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "conv_seg.weight": (150, 1536, 1, 1), "conv_seg.bias": (150,), "bn.weight": (1536,), "bn.bias": (1536,),
        "bn.running_mean": (1536,), "bn.running_var": (1536,), "bn.num_batches_tracked": (),
    }  # fmt: skip
    assert list(shapes)[:2] == ["conv_seg.weight", "conv_seg.bias"]  # mmseg registers conv_seg first
    assert head.state_dict()["bn.num_batches_tracked"].dtype == torch.int64
    assert head.conv_seg.weight.std().item() == pytest.approx(0.01, rel=0.05) and head.conv_seg.bias.abs().sum() == 0


def test_keep_ratio_size_follows_mmcv_imrescale():
    assert keep_ratio_size(480, 640, 512) == (512, 683)  # factor 16/15: 682.67 rounds half up
    assert keep_ratio_size(512, 512, 640) == (640, 640)
    assert keep_ratio_size(40, 90, 42) == (42, 95)  # 94.5 -> 95
    assert keep_ratio_size(375, 500, int(640 * 1.32)) == (844, 1125)  # short side int(640 * ratio)
    assert keep_ratio_size(100, 3000, 512, long_side=2048) == (68, 2048)  # long side binds


def _tiny_segmentor(n_blocks: int, test_cfg: SegmentationTestConfig) -> SegmentationEncoderDecoder:
    torch.manual_seed(0)
    backbone = DinoVisionTransformer(img_size=56, patch_size=14, embed_dim=24, depth=4, num_heads=2, init_values=1.0)
    head = LinearSegmentationHead([24] * n_blocks, K)
    with torch.no_grad():
        head.conv_seg.weight.normal_(0, 0.5)  # visible logits
        head.bn.running_mean.normal_(0, 0.1)
        head.bn.running_var.uniform_(0.5, 2.0)
    return SegmentationEncoderDecoder(backbone, head, list(range(4 - n_blocks, 4)), test_cfg).eval()


def _windows_independently(height, width, crop, stride):
    """Window starts: every ``stride`` below ``size - crop``, plus the last one ending at the border."""

    def starts(size):
        return [0] if size <= crop else sorted({*range(0, size - crop, stride), size - crop})

    return [(y, min(y + crop, height), x, min(x + crop, width)) for y in starts(height) for x in starts(width)]


def _reference_logits(model, image, crop, stride):
    """Mean over the windows containing each pixel of the window's logits (resized to the window)."""
    height, width = image.shape[-2:]
    sums, counts = torch.zeros(1, K, height, width), torch.zeros(1, 1, height, width)
    for y1, y2, x1, x2 in _windows_independently(height, width, crop, stride):
        window = image[..., y1:y2, x1:x2]
        padded_h, padded_w = -(-window.shape[-2] // 14) * 14, -(-window.shape[-1] // 14) * 14
        top, left = (padded_h - window.shape[-2]) // 2, (padded_w - window.shape[-1]) // 2
        canvas = torch.zeros(1, 3, padded_h, padded_w)
        canvas[..., top : top + window.shape[-2], left : left + window.shape[-1]] = window
        tokens = model.backbone.get_intermediate_layers(canvas, n=model.out_index, reshape=True, norm=True)
        logits = model.decode_head.conv_seg(model.decode_head.bn(torch.cat(tokens, dim=1)))
        logits = F.interpolate(logits, size=window.shape[-2:], mode="bilinear", align_corners=False)
        mask = torch.zeros(1, 1, height, width)
        mask[..., y1:y2, x1:x2] = 1
        sums += F.pad(logits, (x1, width - x2, y1, height - y2)) * mask
        counts += mask
    return sums / counts


def test_window_grid_equals_an_independent_enumeration():
    for height, width, crop, stride in [(40, 90, 56, 28), (512, 683, 512, 341), (700, 1000, 640, 320), (56, 56, 56, 9)]:
        assert list(window_boxes(height, width, crop, stride)) == _windows_independently(height, width, crop, stride)


@pytest.mark.parametrize("n_blocks", [1, 4])
def test_sliding_window_and_multi_scale_equal_an_independent_computation(n_blocks):
    # 40 x 90 image, crop 56, stride 28: windows clipped in height (40 < 56), overlapping in width.
    cfg = SegmentationTestConfig("slide", (56, 56), (28, 28), short_side=None, ratios=(1.0,), flip=False)
    model = _tiny_segmentor(n_blocks, cfg)
    image = torch.randn(1, 3, 40, 90)
    with torch.no_grad():
        classes, probs = model.predict(image, return_probabilities=True)
        expected_probs = _reference_logits(model, image, 56, 28).softmax(1)
    assert torch.allclose(probs, expected_probs, atol=1e-5)
    assert torch.equal(classes, expected_probs.argmax(1))
    assert len(classes.unique()) > 1

    # Multi-scale + flip: short side 42 x (1.0, 1.5) -> 42 x 95 and 63 x 142 (hand-computed, mmcv rounding).
    ms = SegmentationTestConfig("slide", (56, 56), (28, 28), short_side=42, ratios=(1.0, 1.5), flip=True)
    with torch.no_grad():
        classes, probs = model.predict(image, return_probabilities=True, **vars(ms))
        total = torch.zeros(1, K, 40, 90)
        for size in [(42, 95), (63, 142)]:
            resized = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
            for flip in (False, True):
                x = resized.flip(-1) if flip else resized
                logits = F.interpolate(_reference_logits(model, x, 56, 28), size=(40, 90), mode="bilinear")
                p = logits.softmax(1)
                total += p.flip(-1) if flip else p
    assert torch.allclose(probs, total / 4, atol=1e-5)
    assert torch.equal(classes, (total / 4).argmax(1))


def test_whole_mode_and_pil_input():
    cfg = SegmentationTestConfig("whole", short_side=None)
    model = _tiny_segmentor(1, cfg)
    rng = np.random.default_rng(0)
    pil = Image.fromarray(rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8))
    tensor = image_to_tensor(pil)
    assert tensor.shape == (1, 3, 30, 50)
    with torch.no_grad():
        from_pil, from_tensor = model.predict(pil), model.predict(tensor)
        whole = model(tensor).argmax(1)
    assert torch.equal(from_pil, from_tensor) and torch.equal(from_tensor, whole) and from_pil.shape == (1, 30, 50)
    assert np.array_equal(np.asarray(tensor_to_image(tensor[0])), np.asarray(pil))  # round trip
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.predict(torch.zeros(3, 30, 50))


def test_palettes_and_overlay():
    classes = torch.tensor([[0, 20], [255, 3]])
    colours = np.asarray(colorize_segmentation(classes, VOC2012_PALETTE))
    assert colours[0, 0].tolist() == [0, 0, 0] and VOC2012_CLASS_NAMES[0] == "background"
    assert colours[0, 1].tolist() == [0, 64, 128] and VOC2012_CLASS_NAMES[20] == "tvmonitor"  # no off-by-one
    assert colours[1, 0].tolist() == [0, 0, 0]  # ignore index: black
    assert colours[1, 1].tolist() == list(VOC2012_PALETTE[3]) == [128, 128, 0]
    assert len(ADE20K_PALETTE) == 150 and ADE20K_PALETTE[0] == (120, 120, 120)  # wall
    image = Image.new("RGB", (2, 2), (200, 100, 50))
    blended = np.asarray(overlay_segmentation(image, classes, VOC2012_PALETTE, alpha=0.5)).astype(int)
    assert np.abs(blended[0, 1] - np.array([100, 82, 89])).max() <= 1
    with pytest.raises(ValueError, match="size"):
        overlay_segmentation(Image.new("RGB", (3, 2)), classes, VOC2012_PALETTE)


@pytest.mark.cuda
def test_multi_scale_prediction_on_cuda_equals_cpu():
    cfg = SegmentationTestConfig("slide", (56, 56), (28, 28), short_side=42, ratios=(1.0, 1.5), flip=True)
    model = _tiny_segmentor(4, cfg)
    image = torch.randn(2, 3, 40, 90)
    with torch.no_grad():
        _, cpu = model.predict(image, return_probabilities=True)
        torch.backends.cuda.matmul.allow_tf32, previous = False, torch.backends.cuda.matmul.allow_tf32
        try:
            _, cuda = model.cuda().predict(image.cuda(), return_probabilities=True)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-4)


def test_the_multi_scale_test_shows_its_passes(monkeypatch, capsys):
    from dinov2.heads.segmentation import inference

    monkeypatch.setattr(inference, "PROGRESS_DELAY_S", 0.0)
    cfg = SegmentationTestConfig(mode="whole", short_side=16, ratios=(1.0, 1.5), flip=True)
    probs = inference.segmentation_probabilities(
        torch.zeros(1, 3, 16, 24), lambda x: x.new_zeros(x.shape[0], 2, *x.shape[-2:]), 2, cfg
    )
    assert probs.shape == (1, 2, 16, 24)
    err = capsys.readouterr().err
    assert "segmentation test passes" in err and "4/4" in err
