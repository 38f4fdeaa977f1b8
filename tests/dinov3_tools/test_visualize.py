"""``visualize pca|attention`` on DINOv3 backbones: PCA maps of both families from a weights file alone, the
attention maps of the ViT equal to what its last block computes (RoPE applied to the patches, storage tokens out of
the patch grid), and a clear error for the ConvNeXt, which has no attention."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from dinov2.visualize.__main__ import main
from dinov2.visualize.attention import last_block, last_block_attention
from tests.dinov3_tools.conftest import tiny_convnext, tiny_vit


@pytest.mark.parametrize(("family", "patch"), [("vit", 16), ("convnext", 32)])
def test_pca_of_both_families_from_a_weights_file(dinov3_files, family, patch, tmp_path):
    common = ["--weights", str(dinov3_files.of(family)), "--resolution", "64", "--output-dir", str(tmp_path)]
    assert main(["pca", *dinov3_files.images, *common]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["img0_pca.png", "img1_pca.png", "pca_sheet.png"]
    width = 64 * 70 // 50 // patch * patch  # 50x70 -> 64x89, cropped to whole patches
    assert Image.open(tmp_path / "img0_pca.png").size == (width, 64)


@torch.no_grad()
def test_vit_attention_maps_equal_the_last_block_with_rope():
    model = tiny_vit()
    image = torch.randn(1, 3, 48, 64)  # 3 x 4 patches
    maps = last_block_attention(model, image)
    heads, storage = 2, 4
    assert maps.cls_to_patches.shape == (heads, 3, 4) and maps.cls_to_registers.shape == (heads, storage)
    assert maps.registers_to_patches.shape == (storage, heads, 3, 4)
    totals = maps.cls_to_patches.sum((-2, -1)) + maps.cls_to_registers.sum(-1)  # + the class token itself
    assert (totals < 1).all() and (totals > 0).all()

    # independent check: the class token's attention output rebuilt from the maps equals the block's own
    block, rope = last_block(model), model.rope_embed(H=3, W=4)
    tokens, _ = model.prepare_tokens_with_masks(image)
    for earlier in model.blocks[:-1]:
        tokens = earlier(tokens, rope)
    normed = block.norm1(tokens)  # [1, T, D]
    values = block.attn.qkv(normed).view(1, tokens.shape[1], 3, heads, 32)[0, :, 2].transpose(0, 1)  # [H, T, hd]
    weights = torch.cat([(1 - totals)[:, None], maps.cls_to_registers, maps.cls_to_patches.flatten(1)], dim=1)
    rebuilt = block.attn.proj((weights[:, None, :] @ values).transpose(0, 1).reshape(1, 64))
    torch.testing.assert_close(rebuilt, block.attn(normed, rope=rope)[:, 0], rtol=1e-5, atol=1e-6)
    without_rope = block.attn(normed)[:, 0]  # RoPE matters: without it the output moves 100x the tolerance above
    assert (rebuilt - without_rope).abs().max() > 0.01 * rebuilt.abs().max()


def test_attention_of_a_convnext_is_a_clear_error(dinov3_files, tmp_path, capsys):
    with pytest.raises(ValueError, match="ConvNeXt has no attention blocks"):
        last_block_attention(tiny_convnext(), torch.randn(1, 3, 64, 64))
    with pytest.raises(SystemExit) as exit_:
        main(
            ["attention", *dinov3_files.images, "--weights", str(dinov3_files.convnext), "--output-dir", str(tmp_path)]
        )
    assert (
        exit_.value.code == 2 and "dinov3_convnext backbone convnext_tiny has no attention" in capsys.readouterr().err
    )


def test_attention_command_on_a_dinov3_vit(dinov3_files, tmp_path):
    argv = ["attention", *dinov3_files.images, "--weights", str(dinov3_files.vit), "--resolution", "48"]
    assert main([*argv, "--output-dir", str(tmp_path)]) == 0
    names = sorted(p.name for p in (tmp_path / "img1").glob("*.png"))
    assert names == ["cls_head0.png", "cls_head1.png", "cls_mean.png", "cls_to_registers.png"] + [
        f"register{r}.png" for r in range(4)
    ]  # 2 heads; the 4 storage tokens shown apart from the patch grid
    assert Image.open(tmp_path / "img1" / "cls_mean.png").size == (48, 48)
