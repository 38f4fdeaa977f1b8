"""Tools handed a bare model read its token facts from its family (one lookup: ``family_for_model``)."""

from __future__ import annotations

import pytest
from torch import nn

from dinov2.features.tokens import ExtraTokens, extra_tokens, token_stride
from dinov2.heads.encoder_decoder import EncoderDecoder
from dinov2.models.convnext import ConvNeXt
from dinov2.models.families import family_for_model
from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    small = dict(embed_dim=16, depth=1, num_heads=2)
    return {
        "plain": DinoVisionTransformer(img_size=32, patch_size=8, **small),
        "registers": DinoVisionTransformer(img_size=32, patch_size=8, num_register_tokens=2, **small),
        "v3": DinoVisionTransformerV3(img_size=32, patch_size=16, n_storage_tokens=4, **small),
        "convnext": ConvNeXt(depths=[1, 1, 1, 1], dims=[8, 8, 8, 8]),
        "convnext16": ConvNeXt(depths=[1, 1, 1, 1], dims=[8, 8, 8, 8], patch_size=16),
    }


def test_the_family_of_a_built_model(models):
    names = {key: family_for_model(model).name for key, model in models.items()}
    assert names == {
        "plain": "dinov2_vit",
        "registers": "dinov2_vit",
        "v3": "dinov3_vit",
        "convnext": "dinov3_convnext",
        "convnext16": "dinov3_convnext",
    }
    with pytest.raises(ValueError, match="no registered model family .* recognises the Linear given"):
        family_for_model(nn.Linear(2, 2))


def test_token_facts_of_a_bare_model_are_its_familys(models):
    strides = {key: token_stride(model) for key, model in models.items()}
    assert strides == {"plain": 8, "registers": 8, "v3": 16, "convnext": 32, "convnext16": 16}
    assert token_stride(models["convnext"], patch_size=16) == 16
    with pytest.raises(ValueError, match="patch_size=0"):
        token_stride(models["plain"], patch_size=0)
    assert extra_tokens(models["registers"]) == ExtraTokens("register_tokens", "x_norm_regtokens", 2)
    assert extra_tokens(models["v3"]) == ExtraTokens("storage_tokens", "x_storage_tokens", 4)
    assert extra_tokens(models["plain"]) is None and extra_tokens(models["convnext"]) is None


def test_dense_models_pad_to_the_familys_patch_size(models):
    head = nn.Module()
    head.align_corners = False
    paddings = {key: EncoderDecoder(models[key], head, [0]).center_padding.multiple for key in models}
    assert paddings == {"plain": 8, "registers": 8, "v3": 16, "convnext": 32, "convnext16": 16}
