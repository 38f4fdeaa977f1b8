"""Layers: FFN sizes and arithmetic, layer-scale, drop path, attention (plain and packed), patch embedding."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from dinov2.layers import Attention, DropPath, LayerScale, Mlp, PatchEmbed, SwiGLUFFN, SwiGLUFFNFused
from dinov2.layers.packing import pack, unpack


def test_swiglu_fused_hidden_size_follows_dinov2_rounding():
    assert SwiGLUFFNFused(1536, 4 * 1536).w3.in_features == 4096  # ViT-g
    assert SwiGLUFFNFused(1536, 4 * 1536).w12.out_features == 2 * 4096
    assert SwiGLUFFNFused(64, 256).w3.in_features == (int(256 * 2 / 3) + 7) // 8 * 8 == 176
    assert SwiGLUFFN(64, 100).w3.in_features == 100  # the unfused layer keeps the given size
    assert SwiGLUFFNFused(4, 1).w3.in_features == 4  # the rule gives 0: in_features instead, as released
    assert inspect.signature(SwiGLUFFNFused) == inspect.signature(SwiGLUFFN)  # one constructor for both


def test_swiglu_computes_w3_of_silu_gate_times_value():
    torch.manual_seed(0)
    ffn = SwiGLUFFNFused(16, 64)
    x = torch.randn(2, 5, 16)
    hidden = ffn.w3.in_features
    x1 = F.linear(x, ffn.w12.weight[:hidden], ffn.w12.bias[:hidden])
    x2 = F.linear(x, ffn.w12.weight[hidden:], ffn.w12.bias[hidden:])
    torch.testing.assert_close(ffn(x), ffn.w3(F.silu(x1) * x2))


def test_mlp_is_fc2_of_exact_gelu_of_fc1():
    torch.manual_seed(0)
    mlp = Mlp(16, 32)
    x = torch.randn(3, 16)
    torch.testing.assert_close(mlp(x), mlp.fc2(F.gelu(mlp.fc1(x))))
    assert mlp.fc1.out_features == 32 and mlp.fc2.out_features == 16


def test_layer_scale_initial_value_and_product():
    ls = LayerScale(8, init_values=0.5)
    torch.testing.assert_close(ls.gamma.detach(), torch.full((8,), 0.5))
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(ls(x), x * 0.5)
    with torch.no_grad():
        ls.gamma.fill_(3.0)
    ls.reset_parameters()
    assert torch.equal(ls.gamma.detach(), torch.full((8,), 0.5))


def test_drop_path_keeps_or_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    dp = DropPath(0.25)
    x = torch.randn(64, 3, 4).abs() + 1
    assert torch.equal(dp.eval()(x), x)
    out = dp.train()(x)
    ratio = out / x  # one factor per sample: 0 or 1 / keep_prob
    per_sample = ratio.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample))
    factors = per_sample[:, 0]
    assert torch.all((factors == 0) | torch.isclose(factors, torch.tensor(1 / 0.75)))
    assert 0 < (per_sample[:, 0] == 0).sum() < 64


def test_drop_path_on_packed_tokens_drops_whole_images():
    torch.manual_seed(0)
    groups = [(6, 3), (10, 2)]
    x = torch.ones(6 * 3 + 10 * 2, 4)
    out = DropPath(0.5).train()(x, groups)
    for image in unpack(out, groups):  # [B_i, N_i, D]
        factors = image.flatten(1)
        assert torch.equal(factors, factors[:, :1].expand_as(factors))  # same factor for all tokens of an image
        assert set(factors[:, 0].tolist()) <= {0.0, 2.0}


def _reference_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    batch, tokens, dim = x.shape
    qkv = attn.qkv(x).reshape(batch, tokens, 3, attn.num_heads, dim // attn.num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]  # [B, H, N, hd]
    weights = (q @ k.transpose(-2, -1) / math.sqrt(dim // attn.num_heads)).softmax(dim=-1)
    return attn.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))


def test_attention_equals_softmax_attention():
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, qkv_bias=True).eval()
    x = torch.randn(3, 7, 32)
    torch.testing.assert_close(attn(x), _reference_attention(attn, x), rtol=1e-5, atol=1e-5)


def test_packed_attention_attends_within_each_image_only():
    torch.manual_seed(0)
    attn = Attention(32, num_heads=4, qkv_bias=True).eval()
    crops = [torch.randn(2, 9, 32), torch.randn(3, 4, 32), torch.randn(1, 6, 32)]
    packed, groups = pack(crops)
    outs = unpack(attn(packed, groups), groups)
    for crop, out in zip(crops, outs):
        for image in range(crop.shape[0]):  # each image alone: nothing from the others leaks in
            expected = _reference_attention(attn, crop[image : image + 1])
            torch.testing.assert_close(out[image : image + 1], expected, rtol=1e-5, atol=1e-5)


def test_attention_rejects_bad_shapes_and_head_counts():
    with pytest.raises(ValueError, match="not divisible"):
        Attention(30, num_heads=4)
    with pytest.raises(ValueError, match=r"\[B, N, D\]"):
        Attention(32, num_heads=4)(torch.randn(5, 32))


def test_patch_embed_crops_to_closest_smaller_multiple():
    torch.manual_seed(0)
    embed = PatchEmbed(img_size=28, patch_size=14, in_chans=3, embed_dim=8)
    x = torch.randn(2, 3, 30, 45)
    out = embed(x)
    assert out.shape == (2, 2 * 3, 8)
    torch.testing.assert_close(out, embed(x[:, :, :28, :42]), rtol=0, atol=0)
    grid = PatchEmbed(img_size=28, patch_size=14, embed_dim=8, flatten_embedding=False)(x)
    assert grid.shape == (2, 2, 3, 8)
