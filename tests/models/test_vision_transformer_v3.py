"""Behaviour of the DINOv3 ViT and ConvNeXt on tiny configurations."""

from __future__ import annotations

import contextlib
import inspect

import pytest
import torch
from torch.testing import assert_close

from dinov2.eval.utils import ModelWithIntermediateLayers
from dinov2.models.convnext import ConvNeXt
from dinov2.models.vision_transformer_v3 import DinoVisionTransformerV3

TINY = {"patch_size": 4, "embed_dim": 16, "depth": 2, "num_heads": 2, "n_storage_tokens": 3, "mask_k_bias": True}


def _vit(**kwargs) -> DinoVisionTransformerV3:
    torch.manual_seed(0)
    model = DinoVisionTransformerV3(**{**TINY, "pos_embed_rope_dtype": "fp32", "layerscale_init": 0.1, **kwargs})
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize("size", [(8, 12), (16, 4)])
def test_outputs_for_any_multiple_of_the_patch(size):
    model = _vit()
    x = torch.randn(2, 3, *size)
    out = model.forward_features(x)
    n = size[0] // 4 * size[1] // 4
    assert out["x_norm_clstoken"].shape == (2, 16) and out["x_storage_tokens"].shape == (2, 3, 16)
    assert out["x_norm_patchtokens"].shape == (2, n, 16) and out["x_prenorm"].shape == (2, 1 + 3 + n, 16)
    assert torch.equal(model(x), out["x_norm_clstoken"])
    ((patches, cls, storage),) = model.get_intermediate_layers(
        x, n=1, reshape=True, return_class_token=True, return_extra_tokens=True
    )
    assert patches.shape == (2, 16, size[0] // 4, size[1] // 4)
    assert_close(cls, out["x_norm_clstoken"])
    assert_close(storage, out["x_storage_tokens"])


def test_get_intermediate_layers_takes_keywords_after_x_as_released_and_the_eval_feature_model_serves_it():
    model = _vit()
    parameters = list(inspect.signature(model.get_intermediate_layers).parameters.values())
    assert [p.name for p in parameters] == ["x", "n", "reshape", "return_class_token", "return_extra_tokens", "norm"]
    assert [p.kind for p in parameters[1:]] == [inspect.Parameter.KEYWORD_ONLY] * 5
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(TypeError):
        model.get_intermediate_layers(x, 2)  # the release's signature: n by keyword only
    features = ModelWithIntermediateLayers(model, 2, contextlib.nullcontext)(x)
    expected = model.get_intermediate_layers(x, n=2, return_class_token=True)
    assert len(features) == 2 and all(torch.equal(a, b) for f, e in zip(features, expected) for a, b in zip(f, e))


def test_masks_replace_patches_by_the_mask_token():
    model = _vit()
    x = torch.randn(1, 3, 8, 8)
    masks = torch.tensor([[True, False, False, True]])
    tokens, hw = model.prepare_tokens_with_masks(x, masks)
    assert hw == (2, 2)
    assert torch.equal(tokens[0, 4], model.mask_token[0]) and torch.equal(tokens[0, 7], model.mask_token[0])
    assert model.forward_features(x, masks)["masks"] is masks


def test_untied_norms():
    model = _vit(untie_cls_and_patch_norms=True, untie_global_and_local_cls_norm=True)
    with torch.no_grad():
        model.cls_norm.weight.fill_(2.0)
        model.local_cls_norm.weight.fill_(3.0)
    crops = [torch.randn(2, 3, 8, 8), torch.randn(2, 3, 4, 4)]
    prenorm = [o["x_prenorm"] for o in model.forward_features(crops)]
    global_out, local_out = model.forward_features(crops)
    assert_close(global_out["x_norm_clstoken"], model.cls_norm(prenorm[0][:, 0]))
    assert_close(local_out["x_norm_clstoken"], model.cls_norm(prenorm[1][:, 0]))  # eval: local norm unused
    model.train()
    with torch.no_grad():
        local_train = model.forward_features(crops)[1]
    assert_close(local_train["x_norm_clstoken"], model.local_cls_norm(local_train["x_prenorm"][:, 0]))
    assert_close(local_train["x_norm_patchtokens"], model.norm(local_train["x_prenorm"][:, 4:]))


def test_bad_choices_raise():
    with pytest.raises(ValueError, match="ffn_layer"):
        DinoVisionTransformerV3(**TINY, ffn_layer="moe")
    with pytest.raises(ValueError, match="norm_layer"):
        DinoVisionTransformerV3(**TINY, norm_layer="batchnorm")


def test_convnext_intermediate_layers_resized_to_patch_grid():
    torch.manual_seed(0)
    model = ConvNeXt(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16), patch_size=16).eval()
    x = torch.randn(1, 3, 64, 96)
    outs = model.get_intermediate_layers(x, n=[0, 3], reshape=True, return_class_token=True)
    assert [o[0].shape for o in outs] == [(1, 8, 4, 6), (1, 16, 4, 6)]
    assert model.state_dict()["norms.3.weight"] is not None and model.norms[3] is model.norm


def test_each_block_draws_its_own_rope_augmentation():
    model = _vit(pos_embed_rope_rescale_coords=2.0, depth=3)
    model.rope_embed.generator = torch.Generator().manual_seed(0)
    tables = []
    original = model.rope_embed.forward
    model.rope_embed.forward = lambda **kw: tables.append(original(**kw)) or tables[-1]
    model.train()
    with torch.no_grad():
        model.forward_features(torch.randn(2, 3, 8, 8))
    assert len(tables) == 3
    assert not torch.equal(tables[0][0], tables[1][0]) and not torch.equal(tables[1][0], tables[2][0])
    tables.clear()
    model.eval()
    model.forward_features(torch.randn(2, 3, 8, 8))
    assert all(torch.equal(t[0], tables[0][0]) for t in tables)


def _per_block_rope_reference(model: DinoVisionTransformerV3, x: torch.Tensor) -> torch.Tensor:
    """The release's block loop: the RoPE table recomputed before every block."""
    tokens, (h, w) = model.prepare_tokens_with_masks(x)
    for blk in model.blocks:
        tokens = blk(tokens, model.rope_embed(H=h, W=w))
    return tokens


@pytest.mark.parametrize(
    ("train", "augment", "tables"), [(False, True, 1), (True, False, 1), (True, True, 3)], ids=["eval", "train", "aug"]
)
def test_rope_table_computed_once_unless_each_block_draws(train, augment, tables):
    aug = {"pos_embed_rope_shift_coords": 0.5, "pos_embed_rope_rescale_coords": 2.0} if augment else {}
    model = _vit(depth=3, drop_path_rate=0.5, **aug).train(train)  # stochastic depth draws between the RoPE draws
    calls = []
    model.rope_embed.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(4, 3, 8, 12)
    torch.manual_seed(1)
    prenorm = model.forward_features(x)["x_prenorm"]
    assert len(calls) == tables
    torch.manual_seed(1)
    assert torch.equal(prenorm, _per_block_rope_reference(model, x))  # bit-identical to the per-block loop


def test_the_released_constructor_extras_device_ignored_arguments_and_list_form(caplog):
    from dinov2.models.convnext import get_convnext_arch

    on_meta = DinoVisionTransformerV3(**TINY, device="meta")
    assert all(t.is_meta for t in [*on_meta.parameters(), *on_meta.buffers()])  # built there, as released
    with caplog.at_level("WARNING", logger="dinov2"):
        model = _vit(patch_embed_norm=None)  # unknown arguments are ignored with a warning, as released
        convnext = get_convnext_arch("convnext_tiny")(patch_size=16, drop_path_rate=0.0, unused=1)
    assert "ignores the arguments ['patch_embed_norm']" in caplog.text and "['unused']" in caplog.text
    assert convnext.embed_dims == [96, 192, 384, 768] and convnext.patch_size == 16
    with pytest.raises(NotImplementedError, match="convnext_tiny, convnext_small"):
        get_convnext_arch("convnext_huge")
    crops = [torch.randn(2, 3, 8, 8), torch.randn(1, 3, 4, 4)]
    listed = model.forward_features_list(crops, [None, None])
    for out, expected in zip(listed, model.forward_features(crops)):
        torch.testing.assert_close(out["x_norm_clstoken"], expected["x_norm_clstoken"])
    assert len(convnext.eval().forward_features_list([torch.randn(1, 3, 32, 32)], [None])) == 1
