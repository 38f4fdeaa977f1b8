"""``python -m dinov2.export``: every format from a training config's teacher, read back and compared with eager."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf
from safetensors import safe_open

from dinov2.export.__main__ import main
from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.models.weights import load_backbone_state_dict
from dinov2.visualize.backbone import load_backbone
from tests.train.tiny import tiny_cfg

needs_is_exporting = pytest.mark.skipif(
    not hasattr(torch.compiler, "is_exporting"), reason="torch.compiler.is_exporting is missing in this PyTorch"
)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    """The tiny training config (ViT with 32 dims, 2 blocks, patch 4, a 4 x 4 position grid) and its teacher."""
    folder = tmp_path_factory.mktemp("export")
    OmegaConf.save(tiny_cfg(folder), folder / "config.yaml")
    return folder / "config.yaml"


def _args(config, fmt: str, output, *extra: str) -> list[str]:
    return [fmt, "--config-file", str(config), "--random-init", "--output", str(output), *extra]


@needs_is_exporting
@pytest.mark.slow
@torch.no_grad()
def test_dynamic_program_runs_at_other_sizes(config, tmp_path):
    assert main(_args(config, "program", tmp_path / "m.pt2", "--dynamic", "--resolution", "16")) == 0
    program = torch.export.load(tmp_path / "m.pt2").module()
    model = load_backbone(config_file=config, random_init=True)
    for shape in ((2, 3, 16, 16), (1, 3, 24, 12), (3, 3, 8, 36)):
        x = torch.randn(shape)
        expected = model.forward_features(x)
        cls, patches = program(x)
        torch.testing.assert_close(cls, expected["x_norm_clstoken"], rtol=1e-5, atol=2e-5)
        torch.testing.assert_close(patches, expected["x_norm_patchtokens"], rtol=1e-5, atol=2e-5)


@needs_is_exporting
@pytest.mark.slow
def test_onnx_matches_eager(config, tmp_path, capsys):
    pytest.importorskip("onnxscript", reason="ONNX export needs onnx + onnxscript (export extra)")
    pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime (export extra)")
    assert main(_args(config, "onnx", tmp_path / "m.onnx", "--dynamic", "--resolution", "16", "--batch-size", "2")) == 0
    report = [line for line in capsys.readouterr().out.splitlines() if line.startswith("onnxruntime vs eager")]
    assert [line.split(" on ")[1].split(":")[0] for line in report] == ["(2, 3, 16, 16)", "(3, 3, 24, 12)",
                                                                        "(1, 3, 8, 28)"]  # fmt: skip
    from dinov2.export import check_onnx, onnx_branch_nodes

    assert onnx_branch_nodes(tmp_path / "m.onnx") == []  # the position-table resize exports without an If node
    model = load_backbone(config_file=config, random_init=True)
    for gaps in check_onnx(model, tmp_path / "m.onnx", [torch.randn(1, 3, 20, 32), torch.randn(4, 3, 16, 16)]):
        assert gaps.pop("scale") > 0.1
        assert max(gaps.values()) < 1e-4, gaps


def test_safetensors_and_hf_exports_read_back_exactly(config, tmp_path):
    model = load_backbone(config_file=config, random_init=True)
    assert main(_args(config, "safetensors", tmp_path / "m.safetensors")) == 0
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        kwargs = json.loads(f.metadata()["dinov2_config"])
    rebuilt = DinoVisionTransformer(**kwargs)  # the metadata rebuilds the architecture
    rebuilt.load_state_dict(load_backbone_state_dict(tmp_path / "m.safetensors"), strict=True)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model(x))
    assert main(_args(config, "hf", tmp_path / "hf")) == 0
    config_json = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config_json["image_size"], config_json["patch_size"], config_json["hidden_size"]) == (16, 4, 32)
    state = load_backbone_state_dict(tmp_path / "hf")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("fmt", ["onnx", "safetensors", "hf"])
def test_an_unwritable_output_is_a_usage_error_before_the_backbone(fmt, config, tmp_path, monkeypatch, capsys):
    import dinov2.features.backbone_args as backbone_args

    built = []
    monkeypatch.setattr(backbone_args, "load_backbone", lambda *a, **k: built.append(a) or pytest.fail("built"))
    (tmp_path / "file.txt").write_text("not a folder")
    folder = tmp_path / "file.txt" / "out"  # fails for root too, unlike a chmod 0o500 folder
    output = folder if fmt == "hf" else folder / "model.bin"
    with pytest.raises(SystemExit) as exit_:
        main(_args(config, fmt, output))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert f"--output: cannot create the folder {folder}" in err and ".write-check-" not in err
    assert built == []  # nothing built
