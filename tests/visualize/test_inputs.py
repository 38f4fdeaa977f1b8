"""What the picture commands give the model: a warning (tokens, attention memory, the flag) for huge inputs, a
note for tiny images enlarged to the patch grid, and a progress bar over the blocks for long forward passes."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

import dinov2.visualize.images as images
import dinov2.visualize.progress as progress
from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.visualize.__main__ import main
from dinov2.visualize.attention import last_block, last_block_attention, write_attention_pictures
from dinov2.visualize.pca import patch_features


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dinov2" and r.levelno == logging.WARNING]


def test_a_3000_px_input_warns_with_tokens_memory_and_the_flag(caplog):
    image = Image.new("RGB", (4000, 3000))
    _, picture = images.to_model_input(image, 3000, 14)
    with caplog.at_level(logging.WARNING, logger="dinov2"):
        images.check_input_size("photo.jpg", image.size, picture.size, 14, 6, 3000)
    (message,) = _warnings(caplog)
    assert "photo.jpg: 3990x2996 px input = 285x214 = 60,990 patch tokens per image" in message
    assert "6 heads x 60,990^2 x 4 bytes = 83.1 GiB" in message and "lower --resolution (now 3000)" in message
    caplog.clear()
    _, picture = images.to_model_input(image, 448, 14)  # the default resolution: 32 x 42 patches, no warning
    images.check_input_size("photo.jpg", image.size, picture.size, 14, 6, 448)
    assert _warnings(caplog) == []


def test_the_command_warns_above_the_threshold_and_notes_an_upscaled_pixel(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(images, "LARGE_INPUT_TOKENS", 8)  # 3 x 3 patches of 14 px at --resolution 42
    Image.fromarray(np.full((1, 1, 3), 200, dtype=np.uint8)).save(tmp_path / "dot.png")
    Image.fromarray(np.zeros((42, 42, 3), dtype=np.uint8)).save(tmp_path / "square.png")
    argv = ["--model", "dinov2_vits14", "--random-init", "--resolution", "42", "--output-dir", str(tmp_path / "o")]
    for command in ("pca", "attention"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="dinov2"):
            assert main([command, str(tmp_path / "dot.png"), str(tmp_path / "square.png"), *argv]) == 0
        messages = _warnings(caplog)
        assert [m.split(":")[0] for m in messages] == [str(tmp_path / n) for n in ("dot.png", "dot.png", "square.png")]
        assert "42x42 px input = 3x3 = 9 patch tokens per image (above 8)" in messages[0]
        assert "a 1x1 px image, upscaled 42x to 42x42 px (3x3 patches of 14 px)" in messages[1]


def _model(depth: int, block_chunks: int = 0) -> DinoVisionTransformer:
    torch.manual_seed(0)
    return DinoVisionTransformer(
        img_size=28, patch_size=14, embed_dim=32, depth=depth, num_heads=2, block_chunks=block_chunks
    ).eval()


@pytest.mark.parametrize("block_chunks", [0, 2])
def test_long_forward_passes_show_progress_over_the_blocks(block_chunks, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress, "PROGRESS_DELAY_S", 0.0)
    model = _model(depth=3, block_chunks=block_chunks)
    inputs = [torch.randn(1, 3, 28, 28), torch.randn(1, 3, 28, 42)]
    with torch.inference_mode():
        expected = [model.forward_features(x)["x_norm_patchtokens"][0] for x in inputs]
    grids = patch_features(model, inputs)
    err = capsys.readouterr().err
    assert "PCA features: 100%" in err and "6/6" in err  # 2 images x 3 blocks
    assert all(torch.equal(g.reshape(-1, 32), e) for g, e in zip(grids, expected))  # hooks change nothing
    assert all(not block._forward_hooks for block in progress.transformer_blocks(model))  # and are removed
    assert last_block(model) is progress.transformer_blocks(model)[-1]
    last_block_attention(model, inputs[0])
    assert capsys.readouterr().err == ""  # the library call stays quiet: the pictures' loop shows the bar
    Image.fromarray(np.zeros((28, 28, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    write_attention_pictures(model, [tmp_path / "x.png"], tmp_path / "out", resolution=28)
    err = capsys.readouterr().err
    assert "attention of x: 100%" in err and "3/3" in err


def test_short_runs_show_no_progress(capsys):
    patch_features(_model(depth=2), [torch.randn(1, 3, 28, 28)])
    assert capsys.readouterr().err == ""
