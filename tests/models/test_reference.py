"""Every case of tests/reference/backbones.pt (released DINOv2 outputs) reproduced by our backbone."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from dinov2.models.convert import chunked_to_flat
from dinov2.models.vision_transformer import DinoVisionTransformer
from tests.conftest import load_reference

VARIANTS = ["mlp", "reg4_aa", "swiglu", "chunked"]
CASES = ["224x224_b2", "224x224_b2_masked", "182x252_b1", "28x560_b1", "518x518_b1"]
OUTPUT_TOL = {"rtol": 1e-5, "atol": 1e-4}  # reference/README.md: backbone outputs
POS_TOL = {"rtol": 1e-5, "atol": 1e-5}  # reference/README.md: pos_embed_interp


def _entry(variant: str) -> dict:
    return load_reference("backbones.pt")[variant]


def _case(variant: str, name: str) -> dict:
    return next(c for c in _entry(variant)["cases"] if c["name"] == name)


@functools.cache
def _model(variant: str, flat: bool = False) -> DinoVisionTransformer:
    entry = _entry(variant)
    kwargs = dict(entry["kwargs"], block_chunks=0) if flat else entry["kwargs"]
    model = DinoVisionTransformer(**kwargs).eval()
    state_dict = chunked_to_flat(entry["state_dict"]) if flat else entry["state_dict"]
    model.load_state_dict(state_dict, strict=True)
    return model


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_keys_in_released_order(variant):
    entry = _entry(variant)
    model = DinoVisionTransformer(**entry["kwargs"])
    assert list(model.state_dict()) == entry["state_dict_keys"]
    for key, value in model.state_dict().items():
        assert value.shape == entry["state_dict"][key].shape, key


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_forward_features_forward_and_tokens(variant, case):
    ref = _case(variant, case)
    model = _model(variant)
    out = model.forward_features(ref["input"], masks=ref["masks"])
    for key, expected in ref["forward_features"].items():
        torch.testing.assert_close(out[key], expected, **OUTPUT_TOL, msg=lambda m, key=key: f"{key}: {m}")
    assert out["masks"] is ref["masks"]
    torch.testing.assert_close(model(ref["input"], masks=ref["masks"]), ref["forward"], **OUTPUT_TOL)
    tokens = model.prepare_tokens_with_masks(ref["input"], ref["masks"])
    if ref["prepare_tokens"] is not None:
        torch.testing.assert_close(tokens, ref["prepare_tokens"], **OUTPUT_TOL)
    height, width = ref["input"].shape[-2:]
    patch_tokens = tokens[:, model.num_register_tokens :]  # [B, 1 + N, D] as the release passes it
    pos = model.interpolate_pos_encoding(patch_tokens, height, width)
    torch.testing.assert_close(pos, ref["pos_embed_interp"], **POS_TOL)


@pytest.mark.parametrize("case", [c for c in CASES if c != "518x518_b1"])  # 518: no intermediate stored
@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_get_intermediate_layers(variant, case):
    ref = _case(variant, case)
    inter = ref["intermediate"]
    model = _model(variant)
    x = ref["input"]
    got = model.get_intermediate_layers(x, n=2, reshape=True, return_class_token=True, norm=True)
    assert len(got) == len(inter["n_last_2"]) == 2
    for (patch, cls), (ref_patch, ref_cls) in zip(got, inter["n_last_2"]):
        torch.testing.assert_close(patch, ref_patch, **OUTPUT_TOL)
        torch.testing.assert_close(cls, ref_cls, **OUTPUT_TOL)
    depth = model.n_blocks
    got = model.get_intermediate_layers(x, n=[0, depth - 1], norm=False)
    for out, expected in zip(got, inter["idx_0_last_nonorm"], strict=True):
        torch.testing.assert_close(out, expected, **OUTPUT_TOL)
    if inter["idx_0_2_nonorm"] is None:  # the release raised: fewer than 3 blocks
        assert "idx_0_2_nonorm" in ref["errors"]
        with pytest.raises(ValueError, match=r"out of range.*2 blocks"):
            model.get_intermediate_layers(x, n=[0, 2], norm=False)
    else:
        got = model.get_intermediate_layers(x, n=[0, 2], norm=False)
        for out, expected in zip(got, inter["idx_0_2_nonorm"], strict=True):
            torch.testing.assert_close(out, expected, **OUTPUT_TOL)


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_multicrop_list_cases(variant):
    for ref in _entry(variant)["list_cases"]:
        outs = _model(variant).forward_features(ref["input"], ref["masks"])
        assert len(outs) == len(ref["forward_features"])
        for out, expected in zip(outs, ref["forward_features"]):
            for key, value in expected.items():
                torch.testing.assert_close(out[key], value, **OUTPUT_TOL)


@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_sides_not_multiple_of_patch_are_cropped_not_rejected(variant):
    # The release raised (bad_size_error); the model card promises cropping to the closest smaller multiple.
    bad = _entry(variant)["bad_size_error"]
    assert bad["input_shape"] == [1, 3, 225, 224] and "not a multiple" in bad["error"]
    ref = _case(variant, "224x224_b2")
    x = F.pad(ref["input"][:1], (0, 0, 0, 1), value=7.0)  # 225 x 224: one extra bottom row
    out = _model(variant).forward_features(x)
    torch.testing.assert_close(out["x_prenorm"], ref["forward_features"]["x_prenorm"][:1], **OUTPUT_TOL)


@torch.no_grad()
def test_chunked_checkpoint_flattened_gives_the_same_outputs():
    ref = _case("chunked", "224x224_b2_masked")
    out = _model("chunked", flat=True).forward_features(ref["input"], masks=ref["masks"])
    torch.testing.assert_close(out["x_prenorm"], ref["forward_features"]["x_prenorm"], **OUTPUT_TOL)
