"""``python -m dinov2.visualize``: backbones by hub name or training config, weights in any format, PNG outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from dinov2.hub.backbones import dinov2_vits14, dinov2_vits14_reg
from dinov2.models import build_model_from_cfg
from dinov2.models.convert import export_hf
from dinov2.visualize.__main__ import main
from dinov2.visualize.backbone import load_backbone
from tests.train.tiny import tiny_cfg


def _images(folder, n: int = 2) -> list[str]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + 10 * i, 60, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_pca_and_attention_commands_with_a_random_hub_backbone(tmp_path, capsys):
    images = _images(tmp_path)
    common = ["--model", "dinov2_vits14_reg", "--random-init", "--resolution", "42"]
    assert main(["pca", *images, *common, "--output-dir", str(tmp_path / "pca")]) == 0
    assert main(["attention", *images, *common, "--output_dir", str(tmp_path / "att")]) == 0
    assert "pca_sheet.png" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "pca").iterdir()) == ["img0_pca.png", "img1_pca.png", "pca_sheet.png"]
    assert len(list((tmp_path / "att" / "img1").glob("cls_head*.png"))) == 6  # ViT-S: 6 heads
    assert len(list((tmp_path / "att" / "img1").glob("register*.png"))) == 4
    assert Image.open(tmp_path / "pca" / "img0_pca.png").size == (56, 42)  # 40x60 -> 42x63 -> 42x56


def test_weights_from_a_hugging_face_folder_and_from_a_training_export(tmp_path):
    torch.manual_seed(1)
    original = dinov2_vits14_reg(pretrained=False)
    export_hf(original, tmp_path / "hf")
    loaded = load_backbone("dinov2_vits14_reg", tmp_path / "hf")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in original.state_dict().items())

    trained = dinov2_vits14(pretrained=False, img_size=224)  # a training run at 224 px: 16 x 16 positions
    torch.save({"teacher": {f"backbone.{k}": v for k, v in trained.state_dict().items()}}, tmp_path / "teacher.pth")
    loaded = load_backbone("dinov2_vits14", tmp_path / "teacher.pth")
    assert loaded.pos_embed.shape == (1, 1 + 16 * 16, 384)  # kept as trained, not resized
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in trained.state_dict().items())


def test_teacher_of_a_training_config(tmp_path):
    cfg = tiny_cfg(tmp_path)
    OmegaConf.save(cfg, tmp_path / "config.yaml")
    teacher, _ = build_model_from_cfg(cfg, only_teacher=True)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in teacher.state_dict().items()}}, tmp_path / "export.pth")
    loaded = load_backbone(config_file=tmp_path / "config.yaml", weights=tmp_path / "export.pth")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in teacher.state_dict().items())
    assert not loaded.training
    with pytest.raises(ValueError, match="needs --weights"):
        load_backbone(config_file=tmp_path / "config.yaml")


def test_bad_choices_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'vit_huge'.*dinov2_vitb14"):
        load_backbone("vit_huge", random_init=True)
    with pytest.raises(ValueError, match="not both"):
        load_backbone("dinov2_vits14", config_file="x.yaml")
    with pytest.raises(SystemExit):  # argparse: mutually exclusive flags
        main(["pca", "a.png", "--model", "dinov2_vits14", "--random-init", "--weights", "w.pth", "--output-dir", "o"])


@pytest.mark.parametrize("command", ["pca", "attention"])
def test_an_unwritable_output_folder_is_a_usage_error_before_the_backbone(command, tmp_path, monkeypatch, capsys):
    import dinov2.features.backbone_args as backbone_args

    built = []
    monkeypatch.setattr(backbone_args, "load_backbone", lambda *a, **k: built.append(a) or pytest.fail("built"))
    (tmp_path / "file.txt").write_text("not a folder")
    output = tmp_path / "file.txt" / "out"  # fails for root too, unlike a chmod 0o500 folder
    argv = [command, *_images(tmp_path, 1), "--model", "dinov2_vits14", "--output-dir", str(output)]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert f"--output-dir: cannot create the folder {output}" in err and ".write-check-" not in err
    assert built == []  # nothing built, nothing downloaded


@pytest.mark.parametrize("command", ["pca", "attention", "text-seg"])
def test_a_missing_or_unreadable_image_is_a_usage_error_before_the_backbone(command, tmp_path, monkeypatch, capsys):
    import dinov2.features.backbone_args as backbone_args

    monkeypatch.setattr(backbone_args, "load_backbone", lambda *a, **k: pytest.fail("built"))
    (tmp_path / "notes.txt").write_text("not an image")
    model = ["--model", "dinov2_vits14"] if command != "text-seg" else ["--classes", "cat,dog"]
    for bad, says in ((tmp_path / "missing.jpg", "No such file"), (tmp_path / "notes.txt", "cannot identify")):
        argv = [command, *_images(tmp_path, 1), str(bad), *model, "--output-dir", str(tmp_path / "out")]
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "Traceback" not in err
        assert f"images: cannot read image {bad}" in err and says in err
    assert not (tmp_path / "out").exists()  # nothing made
