"""``python -m dinov2.export`` on DINOv3 backbones: ``torch.export`` with dynamic batch, height and width
(ConvNeXt program; the ViT through its ONNX export), ONNX checked with onnxruntime at three sizes and free of ``If``
nodes, safetensors whose metadata rebuilds the model; the transformers folder is refused clearly."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from dinov2.export import onnx_branch_nodes
from dinov2.export.__main__ import main
from dinov2.features import load_backbone
from dinov2.models.families import get_family
from dinov2.models.weights import load_backbone_state_dict

needs_is_exporting = pytest.mark.skipif(
    not hasattr(torch.compiler, "is_exporting"), reason="torch.compiler.is_exporting is missing in this PyTorch"
)


@needs_is_exporting
@pytest.mark.slow
@torch.no_grad()
def test_dynamic_program_of_a_convnext_runs_at_other_sizes(dinov3_files, tmp_path):
    """(The ViT's dynamic ``torch.export`` is what its ONNX export below runs on, checked at three sizes there.)"""
    weights = str(dinov3_files.convnext)
    assert main(["program", "--weights", weights, "--output", str(tmp_path / "m.pt2"), "--dynamic"]) == 0
    program = torch.export.load(tmp_path / "m.pt2").module()
    model = load_backbone(weights, device="cpu").model
    inputs = [torch.randn(shape) for shape in ((1, 3, 64, 96), (3, 3, 160, 64), (2, 3, 128, 128))]  # 32 px multiples
    got = [program(x) for x in inputs]
    expected = [(f["x_norm_clstoken"], f["x_norm_patchtokens"]) for f in map(model.forward_features, inputs)]
    assert [tuple(t.shape) for pair in got for t in pair] == [
        (1, 64),
        (1, 6, 64),
        (3, 64),
        (3, 10, 64),
        (2, 64),
        (2, 16, 64),
    ]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=2e-5)


@needs_is_exporting
@pytest.mark.slow
def test_onnx_of_a_dinov3_vit_matches_eager_at_three_sizes_without_branches(dinov3_files, tmp_path, capsys):
    pytest.importorskip("onnxscript", reason="ONNX export needs onnx + onnxscript (export extra)")
    pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime (export extra)")
    argv = ["onnx", "--weights", str(dinov3_files.vit), "--output", str(tmp_path / "m.onnx"), "--dynamic"]
    assert main([*argv, "--resolution", "48", "--batch-size", "2"]) == 0  # 0: every size within tolerance
    report = [line for line in capsys.readouterr().out.splitlines() if line.startswith("onnxruntime vs eager")]
    assert [line.split(" on ")[1].split(":")[0] for line in report] == [
        "(2, 3, 48, 48)",
        "(3, 3, 80, 32)",
        "(1, 3, 32, 96)",
    ]
    assert all("storage_tokens" in line for line in report)
    assert onnx_branch_nodes(tmp_path / "m.onnx") == []  # no data-dependent branch: TensorRT takes the graph


@pytest.mark.parametrize("family", ["vit", "convnext"])
def test_safetensors_metadata_rebuilds_the_model(dinov3_files, family, tmp_path):
    weights = str(dinov3_files.of(family))
    assert main(["safetensors", "--weights", weights, "--output", str(tmp_path / "m.safetensors")]) == 0
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        metadata = f.metadata()
    assert metadata["dinov2_family"] == f"dinov3_{family}" and metadata["dinov2_model"] == weights
    kwargs = json.loads(metadata["dinov2_config"])
    rebuilt = get_family(metadata["dinov2_family"]).archs[metadata["dinov2_arch"]](**kwargs)
    rebuilt.load_state_dict(load_backbone_state_dict(tmp_path / "m.safetensors"), strict=True)
    model = load_backbone(weights, device="cpu").model
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model(x))


@pytest.mark.parametrize("family", ["vit", "convnext"])
def test_a_hugging_face_folder_of_dinov3_loads_back_through_the_door(dinov3_files, tmp_path, capsys, family):
    assert main(["hf", "--weights", str(dinov3_files.of(family)), "--output", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()
    again, model = load_backbone(tmp_path / "hf", device="cpu"), load_backbone(dinov3_files.of(family), device="cpu")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), model.model(x), rtol=1e-5, atol=1e-5)
