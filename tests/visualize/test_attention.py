"""Attention maps: read without changing the model, equal to the attention the block computes, PNG outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.visualize.attention import last_block, last_block_attention, write_attention_pictures


def _model(registers: int = 0, block_chunks: int = 0) -> DinoVisionTransformer:
    torch.manual_seed(0)
    model = DinoVisionTransformer(img_size=56, patch_size=14, embed_dim=24, depth=2, num_heads=3, init_values=1.0,
                                  num_register_tokens=registers, block_chunks=block_chunks).eval()  # fmt: skip
    with torch.no_grad():
        model.cls_token.normal_()  # the released init leaves cls ~ 0: make attention maps non-trivial
        if registers:
            model.register_tokens.normal_()
    return model


@pytest.mark.parametrize(("registers", "block_chunks"), [(0, 0), (2, 0), (2, 2)])
@torch.no_grad()
def test_maps_equal_the_attention_the_last_block_computes(registers, block_chunks):
    model = _model(registers, block_chunks)
    image = torch.randn(1, 3, 42, 70)  # 3 x 5 patches
    before = model.forward_features(image)["x_prenorm"]
    maps = last_block_attention(model, image)
    assert torch.equal(model.forward_features(image)["x_prenorm"], before)  # the hook is gone, nothing changed
    assert maps.cls_to_patches.shape == (3, 3, 5)
    assert maps.cls_to_registers.shape == (3, registers)
    assert maps.registers_to_patches.shape == (registers, 3, 3, 5)
    totals = maps.cls_to_patches.sum((-2, -1)) + maps.cls_to_registers.sum(-1)  # + the cls token itself
    assert (totals < 1).all() and (totals > 0.5).all()

    # independent check: rebuild the class token's attention output from the maps and compare with the block's
    block = last_block(model)
    tokens = model.prepare_tokens_with_masks(image)
    for b in model._flat_blocks()[:-1]:
        tokens = b(tokens)
    normed = block.norm1(tokens)  # [1, T, D]
    qkv = block.attn.qkv(normed).view(1, tokens.shape[1], 3, 3, 8)
    values = qkv[:, :, 2].permute(0, 2, 1, 3)[0]  # [H, T, hd]
    cls_self = 1 - totals  # what the maps leave for the cls token's attention to itself
    weights = torch.cat([cls_self[:, None], maps.cls_to_registers, maps.cls_to_patches.flatten(1)], dim=1)  # [H, T]
    rebuilt = block.attn.proj((weights[:, None, :] @ values).transpose(0, 1).reshape(1, 24))  # [1, D]
    expected = block.attn(normed)[:, 0]
    torch.testing.assert_close(rebuilt, expected, rtol=1e-5, atol=1e-6)
    ref = F.scaled_dot_product_attention(*qkv.permute(2, 0, 3, 1, 4).unbind(0))  # [1, H, T, hd]
    torch.testing.assert_close((weights[:, None, :] @ values)[:, 0], ref[0, :, 0], rtol=1e-5, atol=1e-6)


def test_one_image_at_a_time():
    with pytest.raises(ValueError, match="one image"):
        last_block_attention(_model(), torch.randn(2, 3, 28, 28))


def test_attention_pictures(tmp_path):
    model = _model(registers=2)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    written = write_attention_pictures(model, [tmp_path / "x.png"], tmp_path / "out", resolution=56)
    per_image = {name.split("/", 1)[1] for name in written if name.startswith("x/")}
    assert per_image == {"cls_head0.png", "cls_head1.png", "cls_head2.png", "cls_mean.png", "register0.png",
                         "register1.png", "cls_to_registers.png"}  # fmt: skip
    for name in ("cls_head0.png", "cls_mean.png", "register1.png"):
        picture = np.asarray(Image.open(written[f"x/{name}"]))
        assert picture.shape == (56, 70, 3)  # 60x80 -> 56x75 -> cropped to 56x70
        assert picture.std() > 0
    assert Image.open(written["x/cls_to_registers.png"]).size == (2 * 16, 3 * 16)  # registers x heads tiles
    assert Image.open(written["attention_sheet.png"]).size == ((1 + 1 + 3 + 2) * 70 + 8 * 4, 56 + 2 * 4)
    shares = json.loads(written["attention.json"].read_text())["cls_attention_on_registers_per_head"]["x"]
    assert len(shares) == 3 and all(0 < s < 1 for s in shares)
