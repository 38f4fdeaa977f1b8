"""What the released names added for completeness do (the list itself is checked in tests/test_imports.py): the
dino.txt modules at ``dinov2.hub.text.*``, the DINOv2 release's text block and SwiGLU layout, its colour maps, its
submitit task classes and small helpers."""

from __future__ import annotations

import argparse
import importlib
import inspect
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dinov2 import layers
from dinov2.eval.segmentation.utils import colormaps
from dinov2.heads.segmentation import classes
from dinov2.hub.dinotxt import dinotxt_file_content
from dinov2.hub.text import dinotxt_model, text_transformer, tokenizer, vision_tower
from dinov2.hub.text.dinov2_wrapper import DINOv2Wrapper
from dinov2.layers.block import CausalAttentionBlock
from dinov2.loss import DINOLoss
from dinov2.loss.ibot_patch_loss import lossfunc
from dinov2.run.eval import knn, linear, log_regression
from dinov2.text import DinoTxt, TextTransformer, released_config
from tests.text.helpers import TINY_TEXT, tiny_backbone

RELEASED_CAUSAL_BLOCK = [
    "dim", "num_heads", "ffn_ratio", "ls_init_value", "is_causal", "act_layer", "norm_layer", "dropout_prob",
]  # fmt: skip


def test_the_hub_text_modules_are_the_text_package():
    import dinov2.text as text

    assert dinotxt_model.DinoTxt is text.DinoTxt and dinotxt_model.DinoTxtConfig is text.DinoTxtConfig
    assert text_transformer.TextTransformer is text.TextTransformer and tokenizer.Tokenizer is text.Tokenizer
    assert vision_tower.VisionTower is text.VisionTower and vision_tower.VisionHead is text.VisionHead


def test_the_causal_text_block_has_the_released_signature_layout_and_initialisation():
    assert list(inspect.signature(CausalAttentionBlock).parameters) == RELEASED_CAUSAL_BLOCK
    assert layers.CausalAttentionBlock is layers.CausalSelfAttentionBlock  # DINOv2's and DINOv3's names
    torch.manual_seed(0)
    block = CausalAttentionBlock(32, 4, ls_init_value=0.1)
    block.init_weights()  # the released defaults: attn std dim^-1/2, fc std (2 dim)^-1/2, proj std = attn std
    assert set(block.state_dict()) == {
        "ls1.gamma", "ls2.gamma", "attention_norm.weight", "attention_norm.bias", "attention.qkv.weight",
        "attention.proj.weight", "attention.proj.bias", "ffn_norm.weight", "ffn_norm.bias", "feed_forward.fc1.weight",
        "feed_forward.fc1.bias", "feed_forward.fc2.weight", "feed_forward.fc2.bias",
    }  # fmt: skip
    assert block.attention.qkv.weight.std().item() == pytest.approx(32**-0.5, rel=0.1)
    assert block.feed_forward.fc1.weight.std().item() == pytest.approx(64**-0.5, rel=0.1)
    x = torch.randn(2, 5, 32)
    causal = block(x)
    assert torch.allclose(block(torch.cat([x[:, :3], torch.randn(2, 2, 32)], 1))[:, :3], causal[:, :3], atol=1e-6)
    block.is_causal = False
    assert not torch.allclose(block(x)[:, :3], causal[:, :3])


def test_the_causal_block_drops_after_the_projection_as_released():
    torch.manual_seed(0)
    block = CausalAttentionBlock(16, 2, dropout_prob=0.5).train()
    assert isinstance(block.attention.proj_drop, nn.Dropout) and block.attention.proj_drop.p == 0.5
    block.eval()
    x = torch.randn(1, 4, 16)
    assert torch.equal(block(x), block(x))  # no dropout in eval mode
    attention = layers.CausalSelfAttention(16, 2, proj_drop=0.5)  # the attention's own dropout off (attn_drop=0)
    kept = attention.eval()(x)
    dropped = attention.train()(x)  # the projection's output, half of it zeroed, the rest scaled by 2
    zeroed = dropped == 0
    assert 0 < zeroed.float().mean() < 1
    torch.testing.assert_close(dropped[~zeroed], 2 * kept[~zeroed])


def test_the_text_transformer_takes_the_released_layer_arguments_and_files_refuse_what_they_cannot_name():
    assert list(inspect.signature(TextTransformer).parameters)[7:] == [
        "ls_init_value", "act_layer", "norm_layer", "dropout_prob",
    ]  # fmt: skip
    plain = TextTransformer(**{k: v for k, v in TINY_TEXT.items() if k not in ("ls_init_value", "dropout_prob")})
    assert plain.arch_kwargs == TINY_TEXT
    custom = TextTransformer(**TINY_TEXT, norm_layer=nn.RMSNorm)
    assert isinstance(custom.ln_final, nn.RMSNorm) and isinstance(custom.blocks[0].ffn_norm, nn.RMSNorm)
    assert custom.arch_kwargs is None
    model = DinoTxt(released_config(64), tiny_backbone(), custom)
    with pytest.raises(ValueError, match="custom act_layer / norm_layer.*build it with the defaults"):
        dinotxt_file_content(model)


def test_the_dinov2_wrapper_gives_the_grid_and_the_register_tokens():
    torch.manual_seed(0)
    backbone = tiny_backbone()
    wrapper = DINOv2Wrapper(backbone)
    images = torch.randn(2, 3, 28, 42)
    out = wrapper(images, is_training=True)
    assert (out["h"], out["w"]) == (2, 3)
    with pytest.raises(ValueError, match="is_training=True"):
        wrapper(images, is_training=False)
    ((patches, cls, registers),) = wrapper.get_intermediate_layers(
        images, n=1, reshape=True, return_class_token=True, return_register_tokens=True
    )
    assert patches.shape == (2, 32, 2, 3)
    torch.testing.assert_close(cls, out["x_norm_clstoken"])
    torch.testing.assert_close(registers, out["x_norm_regtokens"])
    ((plain_patches, plain_cls),) = backbone.get_intermediate_layers(images, n=1, reshape=True, return_class_token=True)
    torch.testing.assert_close(plain_patches, patches)
    ((_, only_registers),) = wrapper.get_intermediate_layers(images, n=[1], return_register_tokens=True)
    torch.testing.assert_close(only_registers, registers)


def test_the_released_colour_maps_are_the_class_tables_with_the_release_s_offset():
    assert len(colormaps.ADE20K_COLORMAP) == len(colormaps.ADE20K_CLASS_NAMES) == 151
    assert colormaps.ADE20K_COLORMAP[0] == (0, 0, 0) and colormaps.ADE20K_CLASS_NAMES[0] == ""
    assert colormaps.ADE20K_COLORMAP[1:] == list(classes.ADE20K_PALETTE)
    assert colormaps.ADE20K_CLASS_NAMES[1] == "wall" and colormaps.ADE20K_COLORMAP[1] == (120, 120, 120)
    assert len(colormaps.VOC2012_COLORMAP) == len(colormaps.VOC2012_CLASS_NAMES) == 21
    assert colormaps.VOC2012_CLASS_NAMES[:2] == ["", "aeroplane"] and colormaps.VOC2012_COLORMAP[1] == (128, 0, 0)


def test_the_released_small_helpers():
    t, s = torch.softmax(torch.randn(2, 5, 7), -1), torch.randn(2, 5, 7)
    torch.testing.assert_close(lossfunc(t, s, 0.1), torch.sum(t * F.log_softmax(s / 0.1, dim=-1), dim=-1))
    assert lossfunc(t[0], s[0], 0.1).shape == (5,)
    assert layers.patch_embed.make_2tuple(14) == (14, 14) and layers.patch_embed.make_2tuple((14, 16)) == (14, 16)
    assert isinstance(layers.attention.XFORMERS_ENABLED, bool) and isinstance(layers.block.XFORMERS_AVAILABLE, bool)
    aligned = layers.SwiGLUFFNAligned(16, 64)  # hidden int(64 * 2 / 3) = 42, rounded up to a multiple of 8
    assert aligned.w1.out_features == aligned.w2.out_features == 48 and aligned.w3.in_features == 48
    assert layers.swiglu_ffn.SwiGLU is layers.SwiGLUFFN


@pytest.mark.parametrize("launcher", [knn, linear, log_regression], ids=lambda m: m.__name__)
def test_the_released_evaluator_task_classes_run_their_protocol_and_pickle_by_name(launcher):
    protocol = launcher.__name__.rsplit(".", 1)[1]
    task = launcher.Evaluator(argparse.Namespace(output_dir="out_%j"))
    assert type(pickle.loads(pickle.dumps(task))) is launcher.Evaluator
    assert launcher.Evaluator.eval_module == f"dinov2.eval.{protocol}.cli"
    released_main = importlib.import_module(f"dinov2.eval.{protocol}").main  # what the released task ran
    assert importlib.import_module(launcher.Evaluator.eval_module).main is released_main


def test_the_released_block_and_loss_methods():
    torch.manual_seed(0)
    block = layers.NestedTensorBlock(16, 2, init_values=1.0).eval()
    crops = [torch.randn(2, 5, 16), torch.randn(3, 2, 16)]
    nested = block.forward_nested(crops)
    assert [o.shape for o in nested] == [c.shape for c in crops]
    assert all(torch.allclose(o, block(c), atol=1e-6) for o, c in zip(nested, crops))  # each crop on its own
    assert torch.equal(block(x_or_x_list=crops[0]), block(crops[0]))  # the released argument name
    loss = DINOLoss(8)
    teacher = torch.randn(4, 8)
    loss.reduce_center_update(teacher)  # the release's name: starts the update, apply folds it in
    loss.apply_center_update()
    torch.testing.assert_close(loss.center, 0.1 * teacher.mean(dim=0, keepdim=True))
    assert layers.PatchEmbed(224, 14, 3, 384).flops() == 57_901_056  # the release's count for ViT-S/14 at 224
    assert (
        layers.LayerScale(8, device="meta").gamma.is_meta
        and layers.SwiGLUFFNAligned(8, device="meta").w1.weight.is_meta
    )
    attention = layers.Attention(32, 4, qkv_bias=True)
    attention.init_weights()  # the release's defaults: qkv N(0, dim^-1/2), projection the same, biases zero
    assert attention.qkv.weight.std().item() == pytest.approx(32**-0.5, rel=0.1) and not attention.qkv.bias.any()
