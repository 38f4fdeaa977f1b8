"""dino.txt model: the released state-dict layouts (meta device), and pooling, projection and logits against an
independent computation written with plain tensor operations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dinov2.hub.backbones import make_backbone
from dinov2.text import TEXT_1280D20H24L, DinoTxt, TextTransformer, released_config
from dinov2.text.vision_tower import VisionTower
from tests.text.helpers import TINY_TEXT, tiny_dinotxt


@pytest.fixture(scope="module")
def released_on_meta() -> DinoTxt:
    with torch.device("meta"):
        backbone = make_backbone("dinov2_vitl14_reg", pretrained=False)
        return DinoTxt(released_config(), backbone, TextTransformer(**TEXT_1280D20H24L))


def _numel(state_dict) -> int:
    return sum(t.numel() for t in state_dict.values())


def test_vision_head_file_layout(released_on_meta):
    state = released_on_meta.visual_model.head.state_dict()
    per_block = {
        "norm1.weight": [1024],
        "norm1.bias": [1024],
        "attn.qkv.weight": [3072, 1024],
        "attn.proj.weight": [1024, 1024],
        "attn.proj.bias": [1024],
        "ls1.gamma": [1024],
        "norm2.weight": [1024],
        "norm2.bias": [1024],
        "mlp.w1.weight": [2752, 1024],
        "mlp.w1.bias": [2752],
        "mlp.w2.weight": [2752, 1024],
        "mlp.w2.bias": [2752],
        "mlp.w3.weight": [1024, 2752],
        "mlp.w3.bias": [1024],
        "ls2.gamma": [1024],
    }
    expected = {f"block_list.{i}.{k}": v for i in range(2) for k, v in per_block.items()}
    expected.update({"ln_final.weight": [1024], "ln_final.bias": [1024]})
    assert {k: list(v.shape) for k, v in state.items()} == expected
    assert len(state) == 32 and _numel(state) == 25_326_336


def test_text_encoder_file_layout(released_on_meta):
    state = released_on_meta.text_model.state_dict()
    assert len(state) == 269 and _numel(state) == 538_131_200
    shapes = {k: list(v.shape) for k, v in state.items()}
    assert shapes["backbone.token_embedding.weight"] == [49408, 1280]
    assert shapes["backbone.positional_embedding"] == [77, 1280]
    assert shapes["head.linear_projection.weight"] == [2048, 1280]
    assert shapes["backbone.blocks.23.attention.qkv.weight"] == [3840, 1280]
    assert "backbone.blocks.0.attention.qkv.bias" not in shapes
    block = {k.split(".", 3)[3] for k in shapes if k.startswith("backbone.blocks.0.")}
    assert block == {
        f"{m}.{p}"
        for m in ("attention_norm", "ffn_norm", "attention.proj", "feed_forward.fc1", "feed_forward.fc2")
        for p in ("weight", "bias")
    } | {"attention.qkv.weight"}


def test_whole_model_layout_and_frozen_backbone(released_on_meta):
    keys = list(released_on_meta.state_dict())
    assert sum(k.startswith("visual_model.backbone.") for k in keys) > 0
    assert sum(k.startswith("visual_model.head.") for k in keys) == 32
    assert sum(k.startswith("text_model.") for k in keys) == 269
    assert "logit_scale" in keys
    backbone = released_on_meta.visual_model.backbone
    assert not any(p.requires_grad for p in backbone.parameters())
    assert math.isclose(released_on_meta.model_config.init_logit_scale, math.log(1 / 0.07))


# ------------------------------------------------------------------------------- independent reference (tiny)
def _layer_norm(x, norm):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _attention(x, qkv_w, qkv_b, proj_w, proj_b, heads, causal):
    b, n, d = x.shape
    qkv = x @ qkv_w.T + (qkv_b if qkv_b is not None else 0)
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in qkv.split(d, dim=-1))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    if causal:
        scores = scores.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d)
    return out @ proj_w.T + proj_b


def _reference_head(tokens, head, heads):
    for blk in head.block_list:
        a = _attention(
            _layer_norm(tokens, blk.norm1),
            blk.attn.qkv.weight,
            None,
            blk.attn.proj.weight,
            blk.attn.proj.bias,
            heads,
            causal=False,
        )
        tokens = tokens + a * blk.ls1.gamma
        h = _layer_norm(tokens, blk.norm2)
        m = F.linear(
            F.silu(F.linear(h, blk.mlp.w1.weight, blk.mlp.w1.bias)) * F.linear(h, blk.mlp.w2.weight, blk.mlp.w2.bias),
            blk.mlp.w3.weight,
            blk.mlp.w3.bias,
        )
        tokens = tokens + m * blk.ls2.gamma
    return _layer_norm(tokens, head.ln_final)


def _reference_image(model, images):
    out = model.visual_model.backbone.forward_features(images)  # the backbone's own path, not the tower's
    tokens = torch.cat([out["x_norm_clstoken"][:, None], out["x_norm_regtokens"], out["x_norm_patchtokens"]], 1)
    tokens = _reference_head(tokens, model.visual_model.head, 4)
    return torch.cat([tokens[:, 0], tokens[:, 5:].mean(1)], dim=-1)


def _reference_text(model, ids):
    tt = model.text_model.backbone
    x = tt.token_embedding.weight[ids] + tt.positional_embedding[: ids.shape[1]]
    for blk in tt.blocks:
        x = x + _attention(
            _layer_norm(x, blk.attention_norm),
            blk.attention.qkv.weight,
            None,
            blk.attention.proj.weight,
            blk.attention.proj.bias,
            tt.num_heads,
            causal=True,
        )
        ff = blk.feed_forward
        h = F.linear(_layer_norm(x, blk.ffn_norm), ff.fc1.weight, ff.fc1.bias)
        x = x + F.linear(0.5 * h * (1 + torch.erf(h / math.sqrt(2))), ff.fc2.weight, ff.fc2.bias)
    x = _layer_norm(x, tt.ln_final)
    eot = [int(torch.nonzero(row == row.max())[0]) for row in ids]  # first position of the largest id
    return x[torch.arange(len(ids)), eot] @ model.text_model.head.linear_projection.weight.T


@pytest.fixture(scope="module")
def tiny():
    return tiny_dinotxt()


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 3, 28, 42, generator=g)
    ids = torch.randint(1, 49000, (4, 12), generator=g)
    ids[:, 0] = 49406
    ids[0, 5], ids[1, 11], ids[2, 7], ids[3, 7] = 49407, 49407, 49407, 49407
    ids[2, 8:] = 0  # zero padding after the end token
    return images, ids


def test_image_embedding_equals_reference(tiny, inputs):
    images, _ = inputs
    with torch.no_grad():
        got, want = tiny.encode_image(images), _reference_image(tiny, images)
    assert got.shape == (3, 64)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        tiny.encode_image(images, normalize=True), F.normalize(want, dim=-1), atol=1e-5, rtol=1e-5
    )


def test_text_embedding_equals_reference_and_ignores_padding(tiny, inputs):
    _, ids = inputs
    with torch.no_grad():
        got = tiny.encode_text(ids)
        torch.testing.assert_close(got, _reference_text(tiny, ids), rtol=1e-5, atol=1e-5)
        changed = ids.clone()
        changed[2, 8:] = 1234  # after the end token: causal attention and argmax pooling ignore it
        torch.testing.assert_close(tiny.encode_text(changed)[2], got[2], rtol=0, atol=0)
        changed[2, 3] = 999  # before the end token: the embedding changes
        assert not torch.allclose(tiny.encode_text(changed)[2], got[2])


def test_logits_and_forward(tiny, inputs):
    images, ids = inputs
    with torch.no_grad():
        image_logits, text_logits = tiny.get_logits(images, ids)
        img = F.normalize(_reference_image(tiny, images), dim=-1)
        txt = F.normalize(_reference_text(tiny, ids), dim=-1)
        want = (1 / 0.07) * img @ txt.T
        torch.testing.assert_close(image_logits, want, rtol=1e-5, atol=1e-4)
        assert torch.equal(text_logits, image_logits.T)
        image_features, text_features, scale = tiny(images, ids)
    torch.testing.assert_close(scale, torch.tensor([1 / 0.07]))
    torch.testing.assert_close(image_features, img, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(text_features, txt, rtol=1e-5, atol=1e-5)


def test_patch_token_layer_takes_cls_from_last_and_patches_from_earlier_block():
    model = tiny_dinotxt(vision_model_patch_token_layer=2)
    images = torch.randn(2, 3, 28, 28)
    backbone = model.visual_model.backbone
    with torch.no_grad():
        cls, patches, registers = model.visual_model.get_backbone_features(images)
        last = backbone.forward_features(images)
        earlier = backbone.get_intermediate_layers(images, n=2, return_class_token=True)[0]
    torch.testing.assert_close(cls, last["x_norm_clstoken"])
    torch.testing.assert_close(patches, earlier[0])
    assert registers.shape == (2, 4, 32)


def test_other_poolers_and_bad_arguments():
    tokens = torch.rand(2, 5, 3)
    from dinov2.text.vision_tower import pool_patch_tokens

    torch.testing.assert_close(pool_patch_tokens(tokens, "max"), tokens.amax(1))
    torch.testing.assert_close(pool_patch_tokens(tokens, "gem"), tokens.clamp(min=1e-6).pow(3).mean(1).pow(1 / 3))
    with pytest.raises(ValueError, match="pooler type 'median'"):
        pool_patch_tokens(tokens, "median")
    with pytest.raises(ValueError, match="token backbone"):
        VisionTower(torch.nn.Linear(2, 2), True, 4, 0, 0.0, True, True, 1, "mean", False)


def test_a_dinov3_backbone_gives_its_storage_tokens_to_the_head():
    from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3

    torch.manual_seed(0)
    backbone = DinoVisionTransformerV3(
        img_size=32,
        patch_size=16,
        embed_dim=32,
        depth=2,
        num_heads=4,
        n_storage_tokens=4,
        layerscale_init=1.0,
        pos_embed_rope_dtype="fp32",
    ).eval()
    model = DinoTxt(released_config(64), backbone, TextTransformer(**TINY_TEXT)).eval()
    images = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        cls, patches, storage = model.visual_model.get_backbone_features(images)
        out = backbone.forward_features(images)
        embedding = model.encode_image(images)
    torch.testing.assert_close(cls, out["x_norm_clstoken"])
    torch.testing.assert_close(storage, out["x_storage_tokens"])
    torch.testing.assert_close(patches, out["x_norm_patchtokens"])
    assert model.visual_model.num_register_tokens == 4 and embedding.shape == (2, 64)
