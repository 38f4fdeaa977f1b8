"""The submitit launchers of the dense probes: flags, early errors, and a segmentation job on the local executor."""

from __future__ import annotations

import json

import pytest

from dinov2.run.eval import depth as depth_launcher
from dinov2.run.eval import segmentation as segmentation_launcher
from tests.conftest import REPO_ROOT
from tests.eval.conftest import CONFIG


@pytest.fixture
def local_env(monkeypatch):
    monkeypatch.setenv("DINOV2_CLUSTER", "generic")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the job's process imports dinov2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return monkeypatch


def test_launchers_take_the_probe_flags_and_fail_early(local_env, tmp_path, capsys):
    for launcher in (segmentation_launcher, depth_launcher):
        with pytest.raises(SystemExit):
            launcher.main(["--help"])
        help_text = capsys.readouterr().out
        assert all(flag in help_text for flag in ("--recipe", "--train-dataset", "--nodes", "--pretrained-weights"))
    with pytest.raises(SystemExit):
        depth_launcher.main(["--config-file", "missing.yaml", "--pretrained-weights", "w.pth"])
    assert "missing.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        segmentation_launcher.main(["--config-file", CONFIG, "--pretrained-weights", str(tmp_path / "w.pth")])
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_segmentation_job_runs_on_the_local_executor(local_env, backbone_files, tmp_path):
    keys = f"SyntheticDense:root={tmp_path / 'scenes'}:num_classes=2:images=4:val_images=2:size=40x30"
    argv = [
        "--cluster", "local", "--ngpus", "1", "--nodes", "1", "--timeout", "10", "--config-file", CONFIG,
        "--pretrained-weights", str(backbone_files.hub), "--output-dir", str(tmp_path / "seg_%j"),
        "--train-dataset", keys, "--val-dataset", f"{keys}:split=VAL", "--recipe", "linear",
        "train.iterations=2", "train.batch_size=2", "train.num_workers=0", "eval.num_workers=0",
        "train.crop_size=[28,28]", "train.short_side=28", "test.crop_size=[28,28]", "test.short_side=null",
    ]  # fmt: skip
    job = segmentation_launcher.main(argv)
    try:
        result = job.result()
    finally:
        job.cancel()
    output_dir = tmp_path / f"seg_{job.job_id}"
    summary = json.loads((output_dir / "results_eval_segmentation.json").read_text())
    assert summary["mIoU"] == pytest.approx(result["mIoU"]) and (output_dir / "segmentation_linear_head.pth").is_file()
