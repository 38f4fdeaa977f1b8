"""DINOv3's segmentor (``dinov2.heads.segmentation.dinov3``: the ViT adapter and the Mask2Former head) and its hub
entry point ``dinov3_vit7b16_ms``: equal to the release (numbers kept in ``dinov3_segmentor_release.json``, printed
from the release by ``scripts/check_dinov3_segmentor.py``, which also shows bit-identical outputs and seeded
initialisations), released files gated, weights loaded strictly, trainable on CPU through deformable attention."""

from __future__ import annotations

import inspect
import json
import warnings
from functools import partial
from pathlib import Path

import pytest
import torch

from dinov2.heads.segmentation import dinov3 as seg
from dinov2.heads.segmentation.linear import LinearHead
from dinov2.heads.segmentation.mask2former import Mask2FormerHead
from dinov2.hub import dinov3_backbones
from dinov2.hub import segmentors as hub
from dinov2.models.convnext import ConvNeXt
from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3
from dinov2.models.weights import WeightsMismatchError
from scripts import check_dinov3_segmentor as check
from tests.heads.release_numbers import assert_like_release

RELEASE = json.loads((Path(__file__).parent / "dinov3_segmentor_release.json").read_text())


@pytest.fixture(scope="module")
def small():
    """The first small case (ViT width 64, head width 64, 5 classes) with the seeded weights, and its input."""
    return check.our_segmentor("vit64_even_taps"), check.case_input("vit64_even_taps")


@pytest.mark.parametrize("name", sorted(check.CASES))
def test_small_segmentors_give_the_released_outputs(name):
    got = check.outputs(check.our_segmentor(name), name)
    for output, reference in RELEASE["cases"][name].items():
        assert_like_release(got[output], reference, output)


def test_the_hub_segmentor_is_the_released_model():
    # adapter and head keys and shapes in order, sizes, whole-model keys, taps, what trains and what is in eval mode
    assert check.hub_summary(hub.dinov3_vit7b16_ms) == RELEASE["hub"]["dinov3_vit7b16_ms"]


def test_the_hub_entry_point_has_the_released_signature_and_gated_files(tmp_path):
    import hubconf

    assert hubconf.dinov3_vit7b16_ms is hub.dinov3_vit7b16_ms
    assert list(inspect.signature(hub.dinov3_vit7b16_ms).parameters) == [
        "pretrained", "weights", "backbone_weights", "check_hash", "autocast_dtype", "kwargs"
    ]  # fmt: skip
    with pytest.raises(ValueError, match="licence form.*dinov3_vit7b16_ade20k_m2f_head-bf307cb1.pth"):
        hub.dinov3_vit7b16_ms()
    with pytest.raises(ValueError, match="dinov3_vit7b16_ade20k_m2f_head-0a1b2c3d.pth"):
        hub.dinov3_vit7b16_ms(weights="ADE20K", hash="0a1b2c3d")  # the release's file-name suffix argument
    torch.save({"segmentation_model.1.x": torch.zeros(1)}, tmp_path / "head.pth")
    with pytest.raises(ValueError, match="licence form.*dinov3_vit7b16_pretrain_lvd1689m"):  # then the backbone's
        hub.dinov3_vit7b16_ms(weights=str(tmp_path / "head.pth"))
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['num_classes'\]"):
        hub.dinov3_vit7b16_ms(pretrained=False, num_classes=21)
    with pytest.raises(ValueError, match="was not released for this backbone"):
        hub.make_dinov3_m2f_segmentor("dinov3_vitl16")
    with pytest.raises(ValueError, match="no DINOv3 segmentor on 'dinov3_convnext_tiny'; valid: dinov3_vits16"):
        hub.make_dinov3_m2f_segmentor("dinov3_convnext_tiny", pretrained=False)
    with torch.device("meta"):
        model = hub.dinov3_vit7b16_ms(pretrained=False, hidden_dim=1024)  # the release's head-width argument
    head = model.segmentation_model[1]
    assert head.predictor.class_embed.weight.shape == (151, 1024) and model.autocast_dtype == torch.bfloat16


def _small_hub_segmentor(**files):
    """``make_dinov3_m2f_segmentor`` on a ViT-S/16 with a 32-wide head for 4 classes."""
    return hub.make_dinov3_m2f_segmentor("dinov3_vits16", hidden_dim=32, num_classes=4, **files)


def test_a_head_file_an_evaluation_checkpoint_or_a_whole_segmentor_loads_strictly(tmp_path):
    torch.manual_seed(0)
    backbone_file = tmp_path / "dinov3_vits16_pretrain_lvd1689m-08c60483.pth"  # the released file name
    torch.save(dinov3_backbones.dinov3_vits16(pretrained=False).state_dict(), backbone_file)
    model = _small_hub_segmentor(pretrained=False)
    model.segmentation_model[0].backbone.load_state_dict(torch.load(backbone_file, weights_only=True))
    with torch.no_grad():
        for key, p in model.named_parameters():
            if not key.startswith(seg.BACKBONE_PREFIX):
                p.normal_(std=0.1)  # away from the initialisation
    state = model.state_dict()
    head = {k: v for k, v in state.items() if not k.startswith(seg.BACKBONE_PREFIX)}
    torch.save(head, tmp_path / "head.pth")  # the released layout: every key but the backbone's
    torch.save({"model": {f"module.{k}": v for k, v in head.items()}}, tmp_path / "ckpt.pth")
    torch.save(state, tmp_path / "whole.pth")
    image = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        expected = model(image)["pred_masks"]
    assert expected.shape == (1, 100, 8, 16)
    for name in ("head.pth", "ckpt.pth"):
        loaded = _small_hub_segmentor(weights=str(tmp_path / name), backbone_weights=str(backbone_file))
        with torch.no_grad():
            assert torch.equal(loaded(image)["pred_masks"], expected), name
    whole = _small_hub_segmentor(weights=tmp_path / "whole.pth")  # no backbone_weights needed
    with torch.no_grad():
        assert torch.equal(whole(image)["pred_masks"], expected)

    # what the release's training saves (only the head, segmentation_model.1.*) lacks the adapter
    m2f_only = {k: v for k, v in head.items() if k.startswith("segmentation_model.1.")}
    with pytest.raises(WeightsMismatchError, match=r"missing key\(s\): \['segmentation_model.0.level_embed'"):
        seg.load_segmentor_weights(model, m2f_only)
    with pytest.raises(WeightsMismatchError, match=r"1 unexpected key\(s\): \['segmentation_model.1.extra'\]"):
        seg.load_segmentor_weights(model, {**head, "segmentation_model.1.extra": torch.zeros(1)})
    classes = {**head, "segmentation_model.1.predictor.class_embed.weight": torch.zeros(3, 32)}  # 2 classes
    torch.save(classes, tmp_path / "classes.pth")
    with pytest.raises(WeightsMismatchError, match=r"shape mismatch.*weights \[3, 32\] vs model \[5, 32\]"):
        seg.load_segmentor_weights(model, tmp_path / "classes.pth")
    with torch.no_grad():
        assert torch.equal(model(image)["pred_masks"], expected)  # nothing was copied
    torch.save(head, tmp_path / "head-0a1b2c3d.pth")
    with pytest.raises(RuntimeError, match="expected 0a1b2c3d"):
        _small_hub_segmentor(weights=tmp_path / "head-0a1b2c3d.pth", pretrained=False, check_hash=True)


def test_the_head_trains_on_cpu_through_deformable_attention_and_the_backbone_is_frozen(small):
    segmentor, image = small
    adapter, head = segmentor.segmentation_model
    assert not any(p.requires_grad for p in adapter.backbone.parameters())  # frozen, as released
    trainable = [(k, p) for k, p in segmentor.named_parameters() if not k.startswith(seg.BACKBONE_PREFIX)]
    assert all(p.requires_grad for _, p in trainable)  # the adapter and the head train
    segmentor.zero_grad()
    out = segmentor(image)  # the adapter in eval mode and the head in training mode, as the release builds them
    loss = out["pred_masks"].sigmoid().mean() + out["pred_logits"].logsumexp(-1).mean()
    loss = loss + sum(aux["pred_masks"].mean() for aux in out["aux_outputs"])
    loss.backward()  # through grid_sample: the release needs its compiled CUDA extension here
    missing = [k for k, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    offsets = adapter.interactions[0].extractor.attn.sampling_offsets.weight  # deformable sampling learns
    assert offsets.grad.abs().sum() > 0 and head.pixel_decoder.encoder.level_encoding.grad.abs().sum() > 0
    assert all(p.grad is None for p in adapter.backbone.parameters())
    segmentor.zero_grad()


def test_autocast_is_cuda_only_as_released_and_quiet_on_cpu(small):
    segmentor, image = small
    with torch.no_grad():
        expected = segmentor(image)["pred_masks"]
        segmentor.autocast_dtype = torch.bfloat16  # the hub default: CUDA autocast, nothing on a CPU input
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert torch.equal(segmentor(image)["pred_masks"], expected)
            predicted = segmentor.predict(image, rescale_to=(20, 30))["pred_masks"]
        segmentor.autocast_dtype = torch.float32
        assert predicted.shape == (2, 100, 20, 30) and predicted.is_inference()
        segmentor.autocast_ctx = partial(torch.autocast, "cpu", dtype=torch.bfloat16)  # a released-style context
        low = segmentor(image)["pred_masks"]
        segmentor.autocast_ctx = None
    assert not torch.equal(low, expected) and (low - expected).abs().max() < 0.1 * expected.abs().max()


def test_refused_inputs_and_settings(small):
    segmentor, _ = small
    with pytest.raises(ValueError, match=r"multiples of 32, got \(48, 64\)"):
        segmentor(torch.zeros(1, 3, 48, 64))
    backbone = segmentor.segmentation_model[0].backbone
    with pytest.raises(ValueError, match="decoder_type must be one of m2f, linear, got 'upernet'"):
        seg.build_segmentation_decoder(backbone, decoder_type="upernet")
    with pytest.raises(ValueError, match="interaction_indexes must list 4 blocks"):
        seg.build_segmentation_decoder(backbone, seg.BackboneLayersSet.LAST, decoder_type="m2f")
    with pytest.raises(ValueError, match="hidden_dim must be a multiple of 32"):
        Mask2FormerHead({str(i): [64, 16, 16, 4] for i in range(1, 5)}, hidden_dim=48)


def _linear_segmentor(seed: int = 0, **kwargs) -> seg.FeatureDecoder:
    """The release's default decoder on a small initialised DINOv3 ViT (width 64, 8 blocks) for 5 classes."""
    torch.manual_seed(seed)
    backbone = DinoVisionTransformerV3(**check.CASES["linear_vit64_even_taps"][0])
    backbone.init_weights()
    return seg.build_segmentation_decoder(backbone, num_classes=5, **kwargs)


def test_the_linear_decoder_is_the_default_and_trains_its_head_only_on_a_frozen_backbone():
    assert inspect.signature(seg.build_segmentation_decoder).parameters["decoder_type"].default == "linear"
    segmentor = _linear_segmentor()
    encoder, head = segmentor.segmentation_model
    assert isinstance(encoder, seg.ModelWithIntermediateLayers) and isinstance(head, LinearHead)
    assert encoder.n == [1, 3, 5, 7] and head.in_channels == [64] * 4 and not encoder.feature_model.training
    trainable = [k.removeprefix("segmentation_model.1.") for k, p in segmentor.named_parameters() if p.requires_grad]
    assert trainable == ["batchnorm_layer.weight", "batchnorm_layer.bias", "conv.weight", "conv.bias"]
    backbone = {k: v.clone() for k, v in encoder.feature_model.state_dict().items()}
    image, target = torch.randn(2, 3, 64, 96), torch.randint(0, 5, (2, 4, 6))
    optimizer = torch.optim.SGD([p for p in segmentor.parameters() if p.requires_grad], lr=1.0)
    losses = []
    for _ in range(5):  # dropout, training-mode batch norm; the features come without gradients (inference mode)
        loss = torch.nn.functional.cross_entropy(segmentor(image), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    assert all(torch.equal(v, backbone[k]) for k, v in encoder.feature_model.state_dict().items())
    assert segmentor.predict(image, rescale_to=(64, 96)).shape == (2, 5, 64, 96)
    last = _linear_segmentor(backbone_out_layers="LAST", dropout=0.0).segmentation_model
    assert last[0].n == [7] and last[1].in_channels == [64] and last[1].dropout.p == 0.0


def test_a_linear_head_file_or_a_whole_linear_segmentor_loads_strictly(tmp_path):
    trained, fresh = _linear_segmentor(), _linear_segmentor(seed=1)
    with torch.no_grad():
        trained.segmentation_model[1].conv.weight.normal_()
    fresh.segmentation_model[0].feature_model.load_state_dict(trained.segmentation_model[0].feature_model.state_dict())
    state = trained.state_dict()
    head = {k: v for k, v in state.items() if not k.startswith(seg.LINEAR_BACKBONE_PREFIX)}
    assert sorted(head) == [f"segmentation_model.1.{k}" for k in sorted(trained.segmentation_model[1].state_dict())]
    image = torch.randn(1, 3, 32, 48)
    trained.eval()
    fresh.eval()
    with torch.no_grad():
        expected = trained(image)
        assert not torch.equal(fresh(image), expected)
        seg.load_segmentor_weights(fresh, head, "the linear head")
        assert torch.equal(fresh(image), expected)
    torch.save(state, tmp_path / "whole.pth")
    whole = _linear_segmentor(seed=2).eval()
    seg.load_segmentor_weights(whole, tmp_path / "whole.pth")
    with torch.no_grad():
        assert torch.equal(whole(image), expected)
    with pytest.raises(WeightsMismatchError, match=r"shape mismatch.*weights \[3, 256, 1, 1\] vs model \[5, 256"):
        seg.load_segmentor_weights(fresh, {**head, "segmentation_model.1.conv.weight": torch.zeros(3, 256, 1, 1)})


def test_the_linear_head_joins_class_tokens_and_names_what_it_was_built_for():
    head = LinearHead([8, 8], n_output_channels=3, use_cls_token=True).eval()
    maps, tokens = [torch.randn(2, 8, 4, 6) for _ in range(2)], [torch.randn(2, 8) for _ in range(2)]
    with torch.no_grad():
        logits = head(list(zip(maps, tokens)))
        by_hand = torch.cat([torch.cat((m, t[:, :, None, None].expand_as(m)), 1) for m, t in zip(maps, tokens)], 1)
        assert torch.allclose(logits, head.conv(head.batchnorm_layer(by_hand)), atol=1e-6)
    assert logits.shape == (2, 3, 4, 6) and head.channels == 32
    with pytest.raises(ValueError, match=r"needs \(patch tokens, class token\) pairs"):
        head(maps)
    with pytest.raises(ValueError, match=r"built for 16 input channels \(in_channels=\[8, 8\]\), got maps of \[8\]"):
        LinearHead([8, 8], 3)([maps[0]])
    assert isinstance(LinearHead([8], 3, use_batchnorm=False).batchnorm_layer, torch.nn.Identity)


def test_the_linear_decoder_on_a_convnext_takes_each_stage_width():
    torch.manual_seed(0)
    backbone = ConvNeXt(depths=[1, 1, 1, 1], dims=[8, 16, 24, 32])
    segmentor = seg.build_segmentation_decoder(backbone, backbone_out_layers="FOUR_LAST", num_classes=4).eval()
    assert segmentor.segmentation_model[1].in_channels == [8, 16, 24, 32]
    with torch.no_grad():
        assert segmentor(torch.randn(1, 3, 64, 64)).shape == (1, 4, 16, 16)  # the finest stage's grid (stride 4)
