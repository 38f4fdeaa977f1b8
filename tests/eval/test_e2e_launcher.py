"""The submitit launchers: flags, early errors, and a k-NN job on submitit's LocalExecutor end to end."""

from __future__ import annotations

import json

import pytest

from dinov2.run.eval import knn as knn_launcher
from dinov2.run.eval import launcher
from tests.conftest import REPO_ROOT
from tests.eval.conftest import CONFIG, CROP


@pytest.fixture
def local_env(monkeypatch):
    monkeypatch.setenv("DINOV2_CLUSTER", "generic")
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the job's process imports dinov2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return monkeypatch


def test_launchers_take_every_protocol_flag_and_fail_early(local_env, tmp_path, capsys):
    for protocol, flag in (
        ("knn", "--nb_knn"),
        ("linear", "--learning-rates"),
        ("log_regression", "--finetune-on-val"),
    ):
        with pytest.raises(SystemExit):
            launcher.launch(protocol, ["--help"])
        help_text = capsys.readouterr().out
        assert flag in help_text and "--nodes" in help_text and "--pretrained-weights" in help_text
    with pytest.raises(SystemExit):
        knn_launcher.main(["--config-file", "missing.yaml", "--pretrained-weights", "w.pth"])
    assert "missing.yaml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        knn_launcher.main(["--config-file", CONFIG, "--pretrained-weights", str(tmp_path / "w.pth")])
    assert "does not exist" in capsys.readouterr().err


def test_knn_job_runs_on_the_local_executor(local_env, synthetic, backbone_files, tmp_path):
    argv = [
        "--cluster", "local", "--ngpus", "1", "--nodes", "1", "--timeout", "10",
        "--config-file", CONFIG, "--pretrained-weights", str(backbone_files.hub),
        "--output-dir", str(tmp_path / "knn_%j"), "--train-dataset", synthetic.train, "--val-dataset", synthetic.val,
        "--nb_knn", "5", "--num-workers", "0", "--no-progress", *CROP,
    ]  # fmt: skip
    job = knn_launcher.main(argv)
    try:
        assert job.result() == 0
    finally:
        job.cancel()
    output_dir = tmp_path / f"knn_{job.job_id}"
    lines = [json.loads(line) for line in (output_dir / "results_eval_knn.json").read_text().splitlines()]
    assert [next(iter(line)) for line in lines] == ["('full', 5) Top 1", "('full', 5) Top 5"]
