"""The hub ``_lc`` linear-head format: input layout, which grid entries have it, the blocks the hub reads."""

from __future__ import annotations

import torch

from dinov2.heads.classifier import backbone_blocks, hub_head_layers, is_linear_head_state_dict, linear_head_input
from dinov2.models.vision_transformer import DinoVisionTransformer


def test_input_layout_cls_tokens_oldest_first_then_mean_patch_token():
    blocks = [(torch.randn(2, 6, 3), torch.randn(2, 3)) for _ in range(4)]
    four = linear_head_input(blocks, 4)
    expected = torch.cat([blocks[0][1], blocks[1][1], blocks[2][1], blocks[3][1], blocks[3][0].mean(dim=1)], dim=1)
    assert torch.equal(four, expected) and four.shape == (2, 5 * 3)
    assert torch.equal(linear_head_input(blocks, 1), torch.cat([blocks[3][1], blocks[3][0].mean(dim=1)], dim=1))
    assert torch.equal(linear_head_input(blocks, 2, avgpool=False), torch.cat([blocks[2][1], blocks[3][1]], dim=1))
    half = [(p.half(), c.half()) for p, c in blocks]
    assert linear_head_input(half, 4).dtype == torch.float16  # the tokens' dtype (eval casts to float32 itself)


def test_hub_layouts_and_head_files():
    assert [hub_head_layers(n, avgpool) for n, avgpool in [(1, True), (4, True), (4, False), (2, True)]] == [
        1, 4, None, None,
    ]  # fmt: skip
    assert is_linear_head_state_dict({"weight": 1, "bias": 2})
    assert not is_linear_head_state_dict({"linear_head.weight": 1, "linear_head.bias": 2})


def test_the_hub_reads_forward_features_for_one_layer_and_intermediate_layers_for_four():
    torch.manual_seed(0)
    model = DinoVisionTransformer(img_size=28, patch_size=14, embed_dim=16, depth=4, num_heads=2, block_chunks=0)
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        ((patches, cls_token),) = backbone_blocks(model, x, 1)
        features = model.forward_features(x)
        assert torch.equal(patches, features["x_norm_patchtokens"])
        assert torch.equal(cls_token, features["x_norm_clstoken"])
        four = backbone_blocks(model, x, 4)
        reference = model.get_intermediate_layers(x, n=4, return_class_token=True)
        assert all(torch.equal(a, b) for pair, ref in zip(four, reference) for a, b in zip(pair, ref))
