"""DINOv3 layers against independent computations: RoPE, RMSNorm, masked key bias, split SwiGLU, ConvNeXt block."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from dinov2.layers import (
    ConvNeXtBlock,
    LayerNorm2d,
    LinearKMaskedBias,
    RMSNorm,
    RopeAttention,
    RopeBlock,
    RopePositionEmbedding,
    SwiGLUFFNFused,
    SwiGLUFFNSplit,
)
from dinov2.layers.rope_attention import rope_apply, rope_apply_, rope_signed_sin


def _direct_angles(H: int, W: int, d_head: int, base: float, normalize: str) -> torch.Tensor:
    """Angles [HW, D_head / 2] (y then x) from the written-out definition, in float64."""
    denom = {"separate": (H, W), "max": (max(H, W),) * 2, "min": (min(H, W),) * 2}[normalize]
    periods = [base ** (2 * i / (d_head // 2)) for i in range(d_head // 4)]
    rows = []
    for y in range(H):
        for x in range(W):
            cy, cx = 2 * (y + 0.5) / denom[0] - 1, 2 * (x + 0.5) / denom[1] - 1
            rows.append([2 * math.pi * cy / p for p in periods] + [2 * math.pi * cx / p for p in periods])
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("normalize", ["separate", "max", "min"])
def test_rope_rotation_equals_complex_multiplication(normalize):
    H, W, heads, dim = 2, 3, 2, 128
    rope = RopePositionEmbedding(dim, num_heads=heads, normalize_coords=normalize, dtype=torch.float32).eval()
    sin, cos = rope(H=H, W=W)  # [6, 64]
    angles = _direct_angles(H, W, dim // heads, 100.0, normalize)  # [6, 32]
    assert_close(sin.double(), torch.sin(angles).tile(2), atol=1e-6, rtol=0)
    assert_close(cos.double(), torch.cos(angles).tile(2), atol=1e-6, rtol=0)
    # Pair (x_i, x_{i + D/2}) is a complex number rotated by exp(i * angle_i) (float64 table: exact comparison).
    sin64, cos64 = RopePositionEmbedding(dim, num_heads=heads, normalize_coords=normalize, dtype=torch.float64).eval()(
        H=H, W=W
    )
    x = torch.randn(3, heads, H * W, dim // heads, dtype=torch.float64)
    half = dim // heads // 2
    z = torch.complex(x[..., :half], x[..., half:]) * torch.exp(1j * angles)
    assert_close(rope_apply(x, sin64, cos64), torch.cat([z.real, z.imag], -1), atol=1e-12, rtol=0)


def test_rope_periods_from_min_max_and_argument_errors():
    rope = RopePositionEmbedding(64, num_heads=1, base=None, min_period=0.5, max_period=8.0)
    assert_close(rope.periods, 0.5 * 16 ** torch.linspace(0, 1, 16), rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="min_period"):
        RopePositionEmbedding(64, num_heads=1, base=100.0, min_period=0.5, max_period=8.0)
    with pytest.raises(ValueError, match="divisible"):
        RopePositionEmbedding(60, num_heads=2)
    with pytest.raises(ValueError, match="normalize_coords"):
        RopePositionEmbedding(64, num_heads=1, normalize_coords="diag")


def test_rope_training_augmentation_is_seeded_and_log_uniform():
    def draw(seed: int):
        rope = RopePositionEmbedding(64, num_heads=1, rescale_coords=2.0, generator=torch.Generator().manual_seed(seed))
        return rope.train()

    a, b = draw(0), draw(0)
    first = [a(H=2, W=2)[0] for _ in range(3)]
    assert all(torch.equal(x, y[0]) for x, y in zip(first, [b(H=2, W=2) for _ in range(3)]))
    assert not torch.equal(first[0], first[1])  # every call (every block) draws its own factor
    eval_rope = draw(0).eval()
    assert torch.equal(eval_rope(H=2, W=2)[0], eval_rope(H=2, W=2)[0])
    # Rescale factors: in [1/2, 2] and log-uniform (Kolmogorov-Smirnov distance to U(-ln 2, ln 2)).
    rope = draw(1)
    logs = torch.stack([rope._augment(torch.ones(1, 2))[0, 0] for _ in range(10_000)]).log().sort().values
    assert logs.min() >= -math.log(2) - 1e-6 and logs.max() <= math.log(2) + 1e-6
    cdf = (logs + math.log(2)) / (2 * math.log(2))
    assert (cdf - torch.arange(1, 10_001) / 10_000).abs().max() < 0.02


def test_rms_norm_formula():
    x = torch.randn(4, 7, 16, dtype=torch.bfloat16)
    norm = RMSNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x32 = x.float()
    expected = (x32 / torch.sqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16) * norm.weight
    assert torch.equal(norm(x), expected)


def test_masked_k_bias_has_no_effect_on_keys():
    torch.manual_seed(0)
    qkv = LinearKMaskedBias(8, 24)
    assert torch.isnan(qkv.bias_mask).all()  # un-initialised, as released
    qkv.reset_bias_mask()
    x = torch.randn(3, 8)
    expected = x @ qkv.weight.T + torch.cat([qkv.bias[:8], torch.zeros(8), qkv.bias[16:]])
    assert_close(qkv(x), expected)
    assert list(qkv.state_dict()) == ["weight", "bias", "bias_mask"]
    assert not hasattr(LinearKMaskedBias(8, 24, bias=False), "bias_mask")
    with pytest.raises(ValueError, match="out_features"):
        LinearKMaskedBias(8, 25)


def test_attention_changing_key_bias_leaves_output_unchanged():
    torch.manual_seed(0)
    attn = RopeAttention(16, num_heads=2, qkv_bias=True, mask_k_bias=True).eval()
    attn.qkv.reset_bias_mask()
    x = torch.randn(2, 5, 16)
    rope = RopePositionEmbedding(16, num_heads=2, dtype=torch.float32).eval()(H=2, W=2)
    before = attn(x, rope)
    with torch.no_grad():
        attn.qkv.bias[16:32] += 3.0
    assert torch.equal(attn(x, rope), before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_rope_in_place_with_signed_table_is_bit_identical_to_plain_rotation(dtype):
    torch.manual_seed(0)
    sin, cos = RopePositionEmbedding(32, num_heads=2, dtype=dtype).eval()(H=3, W=4)  # [12, 16]
    x = torch.randn(2, 2, 12, 16).to(dtype)
    x[0, 0, 0, :3] = torch.tensor([-0.0, math.inf, -math.inf])  # signs of zero and infinities survive too
    plain, leaf = (x.clone().requires_grad_(True) for _ in range(2))
    expected, got = rope_apply(plain, sin, cos), rope_apply_(leaf.clone(), rope_signed_sin(sin), cos)
    assert torch.equal(got, expected) and torch.equal(got.signbit(), expected.signbit())
    grad = torch.randn_like(expected)
    expected.backward(grad)
    got.backward(grad)
    assert torch.equal(leaf.grad, plain.grad)


@pytest.mark.parametrize("rope_dtype", [torch.float32, torch.bfloat16])
def test_apply_rope_leaves_its_inputs_alone(rope_dtype):
    torch.manual_seed(0)
    q, k = torch.randn(2, 2, 2, 5 + 6, 8).unbind(0)  # contiguous, float32: the rotation must still copy
    before = q.clone(), k.clone()
    rope = RopePositionEmbedding(16, num_heads=2, dtype=rope_dtype).eval()(H=2, W=3)
    q2, k2 = RopeAttention.apply_rope(q, k, rope)
    assert torch.equal(q, before[0]) and torch.equal(k, before[1])
    assert q2.dtype == k2.dtype == torch.float32 and not torch.equal(q2, q)


def test_rope_touches_patch_tokens_only():
    torch.manual_seed(0)
    B, heads, prefix, H, W, d = 2, 2, 5, 2, 3, 8
    q, k = torch.randn(2, B, heads, prefix + H * W, d).unbind(0)
    sin, cos = RopePositionEmbedding(heads * d, num_heads=heads, dtype=torch.float32).eval()(H=H, W=W)
    q2, k2 = RopeAttention.apply_rope(q, k, (sin, cos))
    assert torch.equal(q2[:, :, :prefix], q[:, :, :prefix]) and torch.equal(k2[:, :, :prefix], k[:, :, :prefix])
    assert_close(q2[:, :, prefix:], rope_apply(q[:, :, prefix:], sin, cos))
    assert not torch.allclose(q2[:, :, prefix:], q[:, :, prefix:])


def test_rope_block_matches_written_out_block():
    torch.manual_seed(0)
    block = RopeBlock(16, num_heads=2, qkv_bias=True, init_values=0.5, mask_k_bias=True).eval()
    block.attn.qkv.reset_bias_mask()
    x = torch.randn(2, 1 + 4 + 6, 16)
    rope = RopePositionEmbedding(16, num_heads=2, dtype=torch.float32).eval()(H=2, W=3)
    h = x + 0.5 * block.attn(block.norm1(x), rope)
    assert_close(block(x, rope), h + 0.5 * block.mlp(block.norm2(h)))


def test_split_swiglu_matches_fused_and_alignment():
    assert SwiGLUFFNSplit(384, 2304).w1.out_features == 1536
    assert SwiGLUFFNSplit(4096, 12288, align_to=64).w1.out_features == 8192
    assert SwiGLUFFNSplit(100, 100, align_to=64).w1.out_features == 128
    split, fused = SwiGLUFFNSplit(16, 48), SwiGLUFFNFused(16, 48)
    with torch.no_grad():
        fused.w12.weight.copy_(torch.cat([split.w1.weight, split.w2.weight]))
        fused.w12.bias.copy_(torch.cat([split.w1.bias, split.w2.bias]))
        fused.w3.load_state_dict(split.w3.state_dict())
    x = torch.randn(3, 16)
    assert_close(split(x), fused(x))


def test_convnext_block_formula():
    torch.manual_seed(0)
    block = ConvNeXtBlock(8, layer_scale_init_value=0.3).eval()
    x = torch.randn(2, 8, 5, 6)
    y = F.conv2d(x, block.dwconv.weight, block.dwconv.bias, padding=3, groups=8).permute(0, 2, 3, 1)
    y = F.layer_norm(y, (8,), block.norm.weight, block.norm.bias, eps=1e-6)
    y = F.gelu(y @ block.pwconv1.weight.T + block.pwconv1.bias) @ block.pwconv2.weight.T + block.pwconv2.bias
    assert_close(block(x), x + (0.3 * y).permute(0, 3, 1, 2))
    assert ConvNeXtBlock(8, layer_scale_init_value=0).gamma is None
    norm = LayerNorm2d(8)
    assert_close(norm(x), F.layer_norm(x.permute(0, 2, 3, 1), (8,), eps=1e-6).permute(0, 3, 1, 2), atol=1e-5, rtol=0)
