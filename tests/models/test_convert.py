"""State-dict conversions: chunked <-> flat round trips, prefixes, training-checkpoint layouts."""

from __future__ import annotations

import pytest
import torch

from dinov2.models.convert import chunked_to_flat, flat_to_chunked, is_chunked, strip_prefix, to_backbone_state_dict
from dinov2.models.vision_transformer import DinoVisionTransformer


def _model(depth: int, block_chunks: int) -> DinoVisionTransformer:
    torch.manual_seed(depth)
    return DinoVisionTransformer(
        img_size=28, patch_size=14, embed_dim=16, depth=depth, num_heads=2, init_values=1.0, block_chunks=block_chunks
    )


@pytest.mark.parametrize(("depth", "block_chunks"), [(8, 4), (3, 2), (4, 1), (5, 5)])
def test_flat_and_chunked_layouts_round_trip_and_load_strictly(depth, block_chunks):
    chunked = _model(depth, block_chunks)
    flat = _model(depth, 0)
    flat_state = chunked_to_flat(chunked.state_dict())
    assert not is_chunked(flat_state) and is_chunked(chunked.state_dict())
    flat.load_state_dict(flat_state, strict=True)
    back = flat_to_chunked(flat.state_dict(), depth, block_chunks)
    assert list(back) == list(chunked.state_dict())  # same names, same order
    chunked.load_state_dict(back, strict=True)
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        torch.testing.assert_close(flat.eval()(x), chunked.eval()(x), rtol=0, atol=0)


def test_conversions_keep_prefixes_and_non_block_keys():
    state = {"backbone.blocks.1.3.norm1.weight": torch.ones(1), "backbone.norm.bias": torch.zeros(1)}
    flat = chunked_to_flat(state)
    assert list(flat) == ["backbone.blocks.3.norm1.weight", "backbone.norm.bias"]
    assert list(flat_to_chunked(flat, depth=4, block_chunks=2)) == list(state)


def test_conversion_errors_name_the_problem():
    with pytest.raises(ValueError, match="appears in two chunks"):
        chunked_to_flat({"blocks.0.1.a": torch.ones(1), "blocks.1.1.a": torch.ones(1)})
    with pytest.raises(ValueError, match="depth=2"):
        flat_to_chunked({"blocks.5.norm1.weight": torch.ones(1)}, depth=2, block_chunks=1)
    with pytest.raises(ValueError, match="already chunked"):
        flat_to_chunked({"blocks.0.0.norm1.weight": torch.ones(1)}, depth=2, block_chunks=1)


def test_strip_prefix_keeps_or_drops_other_keys():
    state = {"module.a": 1, "b": 2}
    assert strip_prefix(state, "module.") == {"a": 1, "b": 2}
    assert strip_prefix(state, "module.", keep_others=False) == {"a": 1}


def test_training_checkpoint_layout_becomes_a_hub_state_dict():
    chunked = _model(4, 2)
    checkpoint = {
        "teacher": {
            **{f"module.backbone.{k}": v for k, v in chunked.state_dict().items()},
            "module.dino_head.last_layer.weight_g": torch.ones(3, 1),
        }
    }
    state = to_backbone_state_dict(checkpoint)
    flat = _model(4, 0)
    flat.load_state_dict(state, strict=True)
    assert torch.equal(flat.blocks[3].mlp.fc2.weight, chunked.blocks[1][3].mlp.fc2.weight)
