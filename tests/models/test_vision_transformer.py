"""DinoVisionTransformer behaviour beyond the reference: multi-crop packing, input checks, intermediate
layers, initialisation, meta-device construction, training mode."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from dinov2.models.vision_transformer import DinoVisionTransformer, vit_small


def _tiny(**kwargs) -> DinoVisionTransformer:
    torch.manual_seed(0)
    defaults = dict(img_size=56, patch_size=14, embed_dim=32, depth=3, num_heads=2, init_values=1.0, block_chunks=0)
    model = DinoVisionTransformer(**{**defaults, **kwargs})
    with torch.no_grad():  # non-trivial tokens so that the tests see registers / mask / cls
        for name in ("cls_token", "mask_token", "pos_embed"):
            getattr(model, name).normal_(std=0.5)
        if model.register_tokens is not None:
            model.register_tokens.normal_(std=0.5)
    return model


@pytest.mark.parametrize("kwargs", [{}, {"num_register_tokens": 2, "block_chunks": 2, "ffn_layer": "swiglufused"}])
@torch.no_grad()
def test_list_forward_equals_each_crop_alone(kwargs):
    model = _tiny(**kwargs).eval()
    global_crops, local_crops = torch.randn(4, 3, 56, 56), torch.randn(6, 3, 28, 42)
    masks = torch.rand(4, 16) < 0.4
    outs = model.forward_features([global_crops, local_crops], [masks, None])
    singles = [model.forward_features(global_crops, masks), model.forward_features(local_crops)]
    for out, single in zip(outs, singles, strict=True):
        for key in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
            torch.testing.assert_close(out[key], single[key], rtol=1e-5, atol=1e-5)
    assert outs[0]["masks"] is masks and outs[1]["masks"] is None
    heads = model([global_crops, local_crops])
    torch.testing.assert_close(heads[1], singles[1]["x_norm_clstoken"], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_list_forward_never_mixes_images():
    model = _tiny().eval()
    crops = [torch.randn(3, 3, 42, 42), torch.randn(2, 3, 28, 28)]
    before = model.forward_features(crops)
    crops[1][1] = torch.randn(3, 28, 28)  # change one local image only
    after = model.forward_features(crops)
    assert torch.equal(before[0]["x_prenorm"], after[0]["x_prenorm"])  # the other group is untouched
    assert torch.equal(before[1]["x_prenorm"][0], after[1]["x_prenorm"][0])  # so is the other image
    assert not torch.equal(before[1]["x_prenorm"][1], after[1]["x_prenorm"][1])


def test_forward_returns_cls_token_or_training_dict():
    model = _tiny(num_register_tokens=2).eval()
    x = torch.randn(2, 3, 56, 42)
    with torch.no_grad():
        features = model(x, is_training=True)
        torch.testing.assert_close(model(x), features["x_norm_clstoken"])
    assert features["x_norm_clstoken"].shape == (2, 32)
    assert features["x_norm_regtokens"].shape == (2, 2, 32)
    assert features["x_norm_patchtokens"].shape == (2, 4 * 3, 32)
    assert features["x_prenorm"].shape == (2, 1 + 2 + 12, 32)


@pytest.mark.parametrize("kwargs", [{}, {"num_register_tokens": 2, "block_chunks": 2, "ffn_layer": "swiglufused"}])
@torch.no_grad()
def test_eval_forward_runs_the_last_block_for_the_cls_token_only(kwargs):
    model = _tiny(**kwargs).eval()
    x, masks = torch.randn(3, 3, 56, 42), torch.rand(3, 12) < 0.5
    last = model._flat_blocks()[-1]
    seen = []
    handle = last.mlp.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    fast = model(x, masks=masks)
    handle.remove()
    assert seen == [(3, 1, 32)]  # the FFN of the last block saw one token per image
    expected = model.forward_features(x, masks)["x_norm_clstoken"]
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5)
    model.cls_only_last_block = False  # the release's arithmetic: every token through the last block
    assert torch.equal(model(x, masks=masks), expected)
    model.cls_only_last_block = True
    model.train()  # training (and lists) always take the full path
    assert torch.equal(model(x, masks=masks), expected)


@pytest.mark.parametrize(
    ("x", "masks", "message"),
    [
        (torch.randn(3, 56, 56), None, r"\[B, C, H, W\].*unsqueeze"),
        (torch.randn(1, 1, 56, 56), None, "3 input channels, got 1"),
        (torch.zeros(1, 3, 56, 56, dtype=torch.uint8), None, r"floating-point.*torch.uint8"),
        (torch.randn(1, 3, 10, 56), None, "smaller than one 14x14 patch"),
        (torch.randn(2, 3, 56, 56), torch.zeros(2, 15, dtype=torch.bool), r"\[B, N\] = \[2, 16\]"),
        (torch.randn(2, 3, 56, 56), torch.zeros(2, 16), r"bool.*torch.float32"),
    ],
)
def test_bad_inputs_raise_value_errors_that_say_what_was_expected(x, masks, message):
    with pytest.raises(ValueError, match=message):
        _tiny().forward_features(x, masks)


def test_non_tensor_input_is_a_type_error():
    with pytest.raises(TypeError, match="image tensor"):
        _tiny().forward_features("image.png")


@torch.no_grad()
def test_masked_patches_are_replaced_by_the_mask_token_before_pos_embed():
    model = _tiny().eval()
    x = torch.randn(2, 3, 56, 56)
    masks = torch.zeros(2, 16, dtype=torch.bool)
    masks[0, 3] = masks[1, 7] = True
    tokens = model.prepare_tokens_with_masks(x, masks)
    pos = model.interpolate_pos_encoding(tokens, 56, 56)
    torch.testing.assert_close(tokens[0, 1 + 3], model.mask_token[0] + pos[0, 1 + 3])
    torch.testing.assert_close(tokens[1, 1 + 7], model.mask_token[0] + pos[0, 1 + 7])
    unmasked = model.prepare_tokens_with_masks(x)
    changed = (tokens != unmasked).any(dim=-1)
    assert changed.sum() == 2 and changed[0, 4] and changed[1, 8]


@torch.no_grad()
def test_get_intermediate_layers_argument_combinations():
    model = _tiny(num_register_tokens=2, block_chunks=3).eval()
    x = torch.randn(2, 3, 56, 42)
    last_two = model.get_intermediate_layers(x, n=2)
    by_index = model.get_intermediate_layers(x, n=[1, 2])
    negative = model.get_intermediate_layers(x, n=[-2, -1])
    for a, b, c in zip(last_two, by_index, negative, strict=True):
        assert a.shape == (2, 12, 32)  # registers and cls dropped
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    features = model.forward_features(x)
    (raw,) = model.get_intermediate_layers(x, n=1, norm=False)
    torch.testing.assert_close(raw, features["x_prenorm"][:, 3:], rtol=1e-6, atol=1e-6)
    ((grid, cls),) = model.get_intermediate_layers(x, n=1, reshape=True, return_class_token=True)
    assert grid.shape == (2, 32, 4, 3)
    torch.testing.assert_close(grid.flatten(2).transpose(1, 2), features["x_norm_patchtokens"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cls, features["x_norm_clstoken"], rtol=1e-6, atol=1e-6)
    for bad in (0, 4, [3], [-4]):
        with pytest.raises(ValueError, match="3 blocks"):
            model.get_intermediate_layers(x, n=bad)


def test_init_follows_the_released_distributions():
    torch.manual_seed(0)
    model = vit_small(patch_size=14, img_size=518, init_values=1e-5, num_register_tokens=4, block_chunks=0)
    assert torch.equal(model.mask_token, torch.zeros(1, 384))
    assert model.cls_token.abs().max() < 1e-5 and model.register_tokens.abs().max() < 1e-5
    assert model.pos_embed.std().item() == pytest.approx(0.02, rel=0.05)
    block = model.blocks[0]
    assert block.attn.qkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.equal(block.attn.qkv.bias, torch.zeros(3 * 384))
    assert torch.equal(block.ls1.gamma, torch.full((384,), 1e-5))
    assert torch.equal(block.norm1.weight, torch.ones(384)) and block.norm1.eps == 1e-6
    assert model.norm.eps == 1e-6


def test_meta_device_build_then_init_weights_fills_every_parameter():
    with torch.device("meta"):
        model = _tiny(init_values=0.1, num_register_tokens=2)
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    model.init_weights()
    state = model.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values())
    assert torch.equal(state["blocks.0.ls1.gamma"], torch.full((32,), 0.1))
    assert torch.equal(state["norm.weight"], torch.ones(32)) and torch.equal(state["norm.bias"], torch.zeros(32))
    assert state["patch_embed.proj.weight"].std() > 0


def test_drop_path_rates_uniform_or_linear():
    linear = _tiny(drop_path_rate=0.4, depth=5)
    assert [b.sample_drop_ratio for b in linear.blocks] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    uniform = _tiny(drop_path_rate=0.4, depth=5, drop_path_uniform=True)
    assert [b.sample_drop_ratio for b in uniform.blocks] == [0.4] * 5


def test_training_mode_is_stochastic_and_eval_mode_deterministic():
    model = _tiny(drop_path_rate=0.5, drop_path_uniform=True)
    plain = _tiny()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(4, 3, 56, 56)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model(x), model(x))
        model.eval()
        torch.testing.assert_close(model(x), plain.eval()(x), rtol=0, atol=0)  # no drop path in eval


def test_training_list_forward_backpropagates_to_every_parameter():
    model = _tiny(drop_path_rate=0.2, drop_path_uniform=True, num_register_tokens=1).train()
    outs = model([torch.randn(4, 3, 56, 56), torch.randn(4, 3, 28, 28)], [torch.rand(4, 16) < 0.5, None],
                 is_training=True)  # fmt: skip
    loss = sum(o["x_norm_clstoken"].sum() + o["x_norm_patchtokens"].square().mean() for o in outs)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_unknown_ffn_layer_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown ffn_layer 'gelu'.*identity.*mlp.*swiglu"):
        _tiny(ffn_layer="gelu")


@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None, reason="xformers is installed here")
def test_use_xformers_without_xformers_is_a_clear_import_error():
    with pytest.raises(ImportError, match="pip install xformers"):
        _tiny(use_xformers=True)


@pytest.mark.cuda
@pytest.mark.skipif(importlib.util.find_spec("xformers") is None, reason="needs xformers")
@torch.no_grad()
def test_xformers_attention_matches_sdpa_on_cuda():
    torch.backends.cuda.matmul.allow_tf32 = False
    plain = _tiny().eval().to("cuda")
    fast = _tiny(use_xformers=True).eval().to("cuda")
    fast.load_state_dict(plain.state_dict())
    crops = [torch.randn(4, 3, 56, 56, device="cuda"), torch.randn(6, 3, 28, 28, device="cuda")]
    for a, b in zip(plain.forward_features(crops), fast.forward_features(crops)):
        torch.testing.assert_close(a["x_prenorm"], b["x_prenorm"], rtol=1e-4, atol=1e-4)
