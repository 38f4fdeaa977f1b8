"""Depth heads and the depther: equal to the released hub depthers (reference file), released key layouts for
every arch, trainable end to end."""

from __future__ import annotations

import pytest
import torch

from dinov2.heads.depth.dpt import DPTHead
from dinov2.heads.depth.linear import LinearDepthHead, bins_to_depth
from dinov2.heads.depth.model import DepthEncoderDecoder
from dinov2.hub import depthers
from tests.conftest import load_reference
from tests.heads.depth_reference import case_input, case_state_dict, tolerance

CASES = ["pub_s_ld4", "pub_s_ld1", "pub_s_dd"]


def _reference():
    return load_reference("depth_heads.pt")


@pytest.mark.parametrize("name", CASES)
def test_depthers_equal_the_release(name):
    reference = _reference()
    case, seed = reference["cases"][name], reference["meta"]["seed"]
    model = getattr(depthers, case["entry"])(**case["kwargs"])
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == dict(case["keys"])
    assert list(model.state_dict()) == list(case["keys"])  # same order too
    model.load_state_dict(case_state_dict(case, seed), strict=True)
    image = case["input"]  # the released run's input; its documented recipe gives it, up to float32 randn's last
    # bits, which differ on CPUs without AVX2 (and on ARM)
    torch.testing.assert_close(case_input(name, case, seed), image, rtol=0, atol=1e-5)  # measured there: 1.8e-6
    assert (model.decode_head.min_depth, model.decode_head.max_depth) == (case["min_depth"], case["max_depth"])
    with torch.inference_mode():
        out = model.eval().whole_inference(image, img_meta=None, rescale=True)
        via_call = model(image)
    assert out.shape == case["output"].shape
    assert (out - case["output"]).abs().max().item() <= tolerance(case)
    assert torch.equal(out, via_call)


def test_bins_to_depth_is_the_expected_depth_over_uniform_bins():
    logits = torch.tensor([[-1.0, 2.0, 0.5]]).reshape(1, 3, 1, 1)
    probs = torch.tensor([0.1, 2.1, 0.6]) / 2.8  # relu + 0.1, normalised
    expected = (probs * torch.tensor([1.0, 2.0, 3.0])).sum()
    assert torch.allclose(bins_to_depth(logits, 1.0, 3.0), expected.reshape(1, 1, 1, 1))
    assert torch.allclose(bins_to_depth(logits, 1.0, 3.0, "softmax"), (logits.softmax(1).flatten() * torch.tensor(
        [1.0, 2.0, 3.0])).sum().reshape(1, 1, 1, 1))  # fmt: skip
    with pytest.raises(ValueError, match="norm_strategy"):
        bins_to_depth(logits, 1.0, 3.0, "cubic")


# head parameter counts of the released hub heads (research note, measured on the released code)
LINEAR_PARAMS = {"vit_small": (196_864, 786_688), "vit_base": (393_472, 1_573_120),
                 "vit_large": (524_544, 2_097_408), "vit_giant2": (786_688, 3_145_984)}  # fmt: skip
DPT_PARAMS = {"vit_small": 13_961_377, "vit_base": 24_193_921, "vit_large": 34_190_017, "vit_giant2": 61_800_769}
EMBED = {"vit_small": 384, "vit_base": 768, "vit_large": 1024, "vit_giant2": 1536}


@pytest.mark.parametrize("arch", sorted(EMBED))
def test_head_sizes_and_keys_for_every_arch(arch):
    embed = EMBED[arch]
    with torch.device("meta"):
        linear1, linear4, dpt = LinearDepthHead(embed, 1), LinearDepthHead(embed, 4), DPTHead(embed)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(linear1), count(linear4)) == LINEAR_PARAMS[arch]
    assert count(dpt) == DPT_PARAMS[arch]
    assert linear4.conv_depth.weight.shape == (256, 8 * embed, 1, 1)
    keys = set(dpt.state_dict())
    assert len(keys) == 56 and "fusion_blocks.0.res_conv_unit1.conv1.conv.weight" not in keys
    assert "reassemble_blocks.resize_layers.2.weight" not in keys  # Identity


def _tiny_depther(head: str) -> DepthEncoderDecoder:
    from dinov2.models.vision_transformer import DinoVisionTransformer

    torch.manual_seed(0)
    backbone = DinoVisionTransformer(img_size=56, patch_size=14, embed_dim=32, depth=4, num_heads=2, init_values=1.0)
    decode_head = LinearDepthHead(32, 4) if head == "linear" else DPTHead(32, channels=16)
    if head == "dpt":
        torch.nn.init.constant_(decode_head.conv_depth.head[4].bias, 1.0)  # positive depths: relu passes gradients
    return DepthEncoderDecoder(backbone, decode_head, [0, 1, 2, 3])


@pytest.mark.parametrize("head", ["linear", "dpt"])
def test_the_depther_is_trainable(head):
    model = _tiny_depther(head)
    image = torch.randn(2, 3, 30, 44)  # padded to 42 x 56 for the backbone
    raw = model.forward_head(image)
    raw.mean().backward()
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0  # through the centre padding
    assert all(p.grad is not None for p in model.decode_head.parameters())
    depth = model(image)
    assert depth.shape == (2, 1, 30, 44) and depth.requires_grad


def test_slide_inference_averages_overlapping_windows():
    model = _tiny_depther("linear").eval()
    image = torch.randn(1, 3, 40, 70)
    with torch.no_grad():
        slid = model.slide_inference(image, None, True, stride=(28, 28), crop_size=(42, 42))
        left = model.encode_decode(image[:, :, :, 0:42])
        right = model.encode_decode(image[:, :, :, 28:70])
    expected = torch.zeros(1, 1, 40, 70)
    expected[..., :28] = left[..., :28]
    expected[..., 28:42] = (left[..., 28:] + right[..., :14]) / 2
    expected[..., 42:] = right[..., 14:]
    assert torch.allclose(slid, expected, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize("name", CASES)
def test_depthers_equal_the_release_on_cuda(name):
    reference = _reference()
    case, seed = reference["cases"][name], reference["meta"]["seed"]
    model = getattr(depthers, case["entry"])(**case["kwargs"])
    model.load_state_dict(case_state_dict(case, seed), strict=True)
    allow_tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # full fp32, as the reference
    try:
        with torch.inference_mode():
            out = model.cuda().eval()(case_input(name, case, seed).cuda()).cpu()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    assert (out - case["output"]).abs().max().item() <= tolerance(case)
