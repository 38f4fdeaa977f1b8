"""``python -m dinov2.eval.transfer`` end to end on fake dataset trees and an image folder, random tiny backbone."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from dinov2.eval.transfer.cli import cli_main
from tests.conftest import preserved_logging
from tests.eval.transfer import trees
from tests.train.tiny import tiny_cfg


@pytest.mark.usefixtures("single_process_eval")  # one thread; the process group state forgotten after
def test_cli_end_to_end(tmp_path):
    root = tmp_path / "data"
    trees.make_dtd(root)
    trees.make_voc2007(root)
    for split, kept in (
        ("train", range(0, 3)),
        ("val", range(3, 4)),
        ("test", range(4, 6)),
    ):  # an image folder made of DTD images
        for name in ("banded", "dotted"):
            for i in kept:
                target = root / "toy" / split / name / f"{i}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(root / "dtd" / "dtd" / "images" / name / f"{name}_{i:04d}.jpg", target)
    OmegaConf.save(tiny_cfg(tmp_path), tmp_path / "config.yaml")
    out = tmp_path / "out"
    argv = ["--config-file", str(tmp_path / "config.yaml"), "--random-init", "--data-root", str(root)]
    argv += [
        "--datasets",
        "dtd",
        "voc2007",
        "--folder",
        f"toy:train={root}/toy/train:val={root}/toy/val:test={root}/toy/test",
    ]
    argv += ["--crop-size", "16", "--batch-size", "4", "--num-workers", "0", "--max-train-iters", "20"]
    argv += ["--c-values", "0.1", "10"]
    argv += ["--no-progress", "--output-dir", str(out)]
    with preserved_logging():
        assert cli_main(argv) == 0
    lines = [json.loads(line) for line in (out / "results_eval_transfer.json").read_text().splitlines()]
    flat = {k: v for line in lines for k, v in line.items()}
    assert list(flat) == ["dtd", "voc2007", "toy", "average"]
    assert flat["average"] == pytest.approx((flat["dtd"] + flat["voc2007"] + flat["toy"]) / 3)
    detailed = json.loads((out / "results_eval_transfer_detailed.json").read_text())["datasets"]
    assert detailed["dtd"]["sizes"] == {"train": 6, "val": 6, "test": 6} and detailed["dtd"]["metric"] == "top1"
    assert detailed["voc2007"]["metric"] == "map11" and len(detailed["voc2007"]["sweep"]) == 2
    assert detailed["toy"]["sizes"] == {"train": 6, "val": 2, "test": 4}


def test_usage_errors(tmp_path, capsys):
    base = ["--model", "dinov2_vits14", "--random-init"]
    with pytest.raises(SystemExit):
        cli_main(base)
    assert "nothing to evaluate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main([*base, "--data-root", str(tmp_path / "none")])
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main([*base, "--folder", "x:train=a"])
    assert "NAME:train=DIR:test=DIR" in capsys.readouterr().err


@pytest.mark.usefixtures("single_process_eval")
def test_a_train_split_too_small_for_the_hold_out_is_refused_before_any_feature(tmp_path, monkeypatch):
    """Two folders, the second without a val split and with 4 training images: refused before the first dataset's
    features are extracted (hours on a real dataset)."""
    root = tmp_path / "data"
    trees.make_dtd(root)
    for name in ("banded", "dotted"):
        for split, kept in (("train", range(0, 2)), ("test", range(2, 4))):
            for i in kept:
                target = root / "small" / split / name / f"{i}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(root / "dtd" / "dtd" / "images" / name / f"{name}_{i:04d}.jpg", target)

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted")

    monkeypatch.setattr("dinov2.eval.transfer.cli.extract_features", no_extraction)
    OmegaConf.save(tiny_cfg(tmp_path), tmp_path / "config.yaml")
    argv = ["--config-file", str(tmp_path / "config.yaml"), "--random-init", "--data-root", str(root)]
    argv += ["--datasets", "dtd", "--folder", f"small:train={root}/small/train:test={root}/small/test"]
    argv += ["--crop-size", "16", "--num-workers", "0", "--no-progress", "--output-dir", str(tmp_path / "out")]
    says = "4 training images of small leave no 10 % hold-out to choose C .*; add a val split"
    with preserved_logging(), pytest.raises(ValueError, match=says):
        cli_main(argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a process without CUDA")
@pytest.mark.usefixtures("single_process_eval")
@pytest.mark.parametrize("protocol", ["transfer", "video"])
def test_a_cuda_fit_device_without_cuda_is_refused_before_any_feature(tmp_path, monkeypatch, protocol):
    """--train-features-device cuda on a process without CUDA: refused when the run starts, before extraction (not
    at flag-check time, which also runs on a GPU-less SLURM login node)."""
    import importlib

    module = importlib.import_module(f"dinov2.eval.{protocol}.cli")
    monkeypatch.setattr(module, "extract_features", lambda *a, **k: pytest.fail("features were extracted"))
    root = tmp_path / "data"
    trees.make_dtd(root)
    OmegaConf.save(tiny_cfg(tmp_path), tmp_path / "config.yaml")
    argv = ["--config-file", str(tmp_path / "config.yaml"), "--random-init", "--train-features-device", "cuda"]
    if protocol == "transfer":
        argv += ["--data-root", str(root), "--datasets", "dtd"]
    else:  # clips of one DTD image each: <class>/<clip>/000.jpg
        for image in sorted((root / "dtd" / "dtd" / "images").glob("*/*.jpg")):
            clip = tmp_path / "clips" / image.parent.name / image.stem
            clip.mkdir(parents=True)
            shutil.copy(image, clip / "000.jpg")
        clips = str(tmp_path / "clips")
        argv += ["--train-root", clips, "--val-root", clips, "--num-frames", "1", "--finetune-on-val"]
    argv += ["--crop-size", "16", "--num-workers", "0", "--no-progress", "--output-dir", str(tmp_path / "out")]
    with preserved_logging(), pytest.raises(ValueError, match="--train-features-device cuda but this process sees no"):
        module.cli_main(argv)
