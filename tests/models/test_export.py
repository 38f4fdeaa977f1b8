"""torch.export with dynamic batch, height and width: one program runs at every size and gives the released numbers.

Programs are exported from the reference backbones (released configurations: offset 0.1 without antialias,
registers with antialias and offset 0, SwiGLU, chunked blocks) at 224 x 224 and run on every stored case
(182 x 252, 28 x 560, 518 x 518 and batch 1 vs 2).
"""

from __future__ import annotations

import functools

import pytest
import torch

from dinov2.export import export_program
from dinov2.models.pos_embed import bicubic_resize_matrix, exportable_pos_encoding
from dinov2.models.vision_transformer import DinoVisionTransformer
from tests.conftest import load_reference

VARIANTS = ["mlp", "reg4_aa", "swiglu", "chunked"]
CASES = ["224x224_b2", "182x252_b1", "28x560_b1", "518x518_b1"]
OUTPUT_TOL = {"rtol": 1e-5, "atol": 1e-4}  # reference/README.md: backbone outputs
KEYS = ("x_norm_clstoken", "x_norm_patchtokens", "x_norm_regtokens")
needs_is_exporting = pytest.mark.skipif(
    not hasattr(torch.compiler, "is_exporting"), reason="torch.compiler.is_exporting is missing in this PyTorch"
)


def _model(variant: str) -> DinoVisionTransformer:
    entry = load_reference("backbones.pt")[variant]
    model = DinoVisionTransformer(**entry["kwargs"]).eval()
    model.load_state_dict(entry["state_dict"], strict=True)
    return model


@functools.cache
def _program(variant: str):
    model = _model(variant)
    return model, export_program(model, torch.randn(2, 3, 224, 224), dynamic=True).module()


@needs_is_exporting
@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
@torch.no_grad()
def test_one_program_gives_the_released_outputs_at_every_size(variant):
    model, program = _program(variant)
    for case in load_reference("backbones.pt")[variant]["cases"]:
        if case["name"] not in CASES:
            continue
        outputs = program(case["input"])
        eager = model.forward_features(case["input"])
        for key, out in zip(KEYS, outputs):
            torch.testing.assert_close(out, case["forward_features"][key], **OUTPUT_TOL)
            if variant == "reg4_aa" or case["name"] == "518x518_b1":  # the same kernels as eager: bit-identical
                assert torch.equal(out, eager[key]), (case["name"], key)
            else:  # scale-factor resize as weight matrices: float32 summation order only
                torch.testing.assert_close(out, eager[key], rtol=1e-5, atol=2e-5)


@needs_is_exporting
@pytest.mark.slow
@torch.no_grad()
def test_sides_must_be_multiples_of_the_patch_in_a_program():
    model, program = _program("reg4_aa")
    x = torch.randn(3, 3, 100, 131)
    with pytest.raises(AssertionError, match="% 14 == 0"):  # the eager model crops; the program asks for it
        program(x)
    cropped = x[..., :98, :126]
    for out, key in zip(program(cropped), KEYS):
        assert torch.equal(out, model.forward_features(x)[key])


@torch.no_grad()
def test_a_static_export_is_specialised_to_its_shape():
    model = _model("mlp")
    program = export_program(model, torch.randn(1, 3, 182, 252), dynamic=False).module()
    x = load_reference("backbones.pt")["mlp"]["cases"][2]["input"]  # 182 x 252
    torch.testing.assert_close(program(x)[0], model.forward_features(x)["x_norm_clstoken"], rtol=1e-5, atol=2e-5)
    with pytest.raises(AssertionError, match="(?i)guard|shape|expected"):
        program(torch.randn(1, 3, 224, 224))


@pytest.mark.parametrize("grid", [(16, 16), (13, 18), (2, 40), (37, 37), (38, 37), (1, 1), (73, 73)])
def test_exportable_pos_encoding_matches_the_eager_interpolation(grid):
    torch.manual_seed(0)
    for offset, antialias in ((0.1, False), (0.0, True), (0.0, False)):
        model = DinoVisionTransformer(img_size=518, patch_size=14, embed_dim=8, depth=1, num_heads=2,
                                      interpolate_offset=offset, interpolate_antialias=antialias)  # fmt: skip
        with torch.no_grad():
            model.pos_embed.normal_()
        h, w = 14 * grid[0], 14 * grid[1]
        x = torch.zeros(1, 1 + grid[0] * grid[1], 8)
        eager = model.interpolate_pos_encoding(x, h, w)
        ours = exportable_pos_encoding(model.pos_embed, x, h, w, 14, offset, antialias)
        if grid == (37, 37) or not offset:  # the stored table, or the kernel itself
            assert torch.equal(ours, eager)
        else:
            torch.testing.assert_close(ours, eager, rtol=1e-5, atol=1e-5)


def test_resize_matrix_rows_sum_to_one_and_scale_one_is_the_identity():
    m = bicubic_resize_matrix(37, 37, torch.tensor(1.0))
    assert torch.equal(m, torch.eye(37))
    rows = bicubic_resize_matrix(16, 37, torch.tensor(37 / 16.1, dtype=torch.float32)).sum(1)
    torch.testing.assert_close(rows, torch.ones(16))


@needs_is_exporting
def test_offset_with_antialias_is_refused_under_export_only():
    model = DinoVisionTransformer(img_size=56, patch_size=14, embed_dim=8, depth=1, num_heads=2,
                                  interpolate_offset=0.1, interpolate_antialias=True).eval()  # fmt: skip
    model(torch.randn(1, 3, 28, 42))  # eager: fine
    with pytest.raises(Exception, match="interpolate_offset > 0 with interpolate_antialias=True"):
        export_program(model, torch.randn(1, 3, 28, 42))
