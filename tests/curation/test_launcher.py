"""The curation launcher: flags, and a 2-task job on submitit's LocalExecutor equal to one process."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from dinov2.curation.cli import get_args_parser
from dinov2.curation.cli import main as curation_main
from dinov2.run.curation import curate
from tests.conftest import REPO_ROOT, preserved_logging
from tests.curation.synthetic import blobs, save


def test_bad_step_flags_fail_before_submission(capsys):
    with pytest.raises(SystemExit):
        curate.main(["--cluster", "local", "kmeans", "--embeddings", "x.npy"])  # --n-clusters missing
    assert "--n-clusters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        curate.main(["--cluster", "local"])


@pytest.mark.parametrize("step, extra", [("dedup", []), ("kmeans", ["--n-clusters", "2"])])
def test_steps_reading_rows_take_embeddings_and_an_optional_subset(step, extra):
    parse = get_args_parser().parse_args
    args = parse([step, "--embeddings", "x.npy", "--output-dir", "out", *extra])
    assert (args.embeddings, args.subset) == ("x.npy", None)
    assert parse([step, "--embeddings", "x.npy", "--subset", "s.npy", "--output-dir", "out", *extra]).subset == "s.npy"
    with pytest.raises(SystemExit):
        parse([step, "--output-dir", "out", *extra])


@pytest.mark.slow
@pytest.mark.skipif(
    torch.cuda.device_count() == 1 or importlib.util.find_spec("submitit") is None,
    reason="two local tasks need two GPUs under NCCL (or none: gloo), and submitit",
)
def test_local_job_with_two_tasks_gives_the_single_process_result(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))  # the job's processes import dinov2
    monkeypatch.setenv("DINOV2_CLUSTER", "generic")
    points, _ = blobs([40, 30, 20, 11], dim=8, spread=0.3, seed=0)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    data = save(tmp_path / "x.npy", points.astype(np.float32))
    step = [
        "kmeans",
        "--embeddings",
        str(data),
        "--n-clusters",
        "6",
        "2",
        "--n-resampling-steps",
        "1",
        "1",
        "--sample-size",
        "4",
        "2",
        "--n-iters",
        "5",
        "--device",
        "cpu",
        "--dtype",
        "float64",
    ]
    with preserved_logging():
        curation_main([*step, "--output-dir", str(tmp_path / "one")])
    job = curate.main(
        ["--cluster", "local", "--ngpus", "2", "--timeout", "10", *step, "--output-dir", str(tmp_path / "two")]
    )
    try:
        job.results()
    finally:
        job.cancel()
    assert (tmp_path / "two" / "submitit" / str(job.job_id) / f"{job.job_id}_1_log.out").exists()
    log = (tmp_path / "two" / "logs" / "log.txt.rank1").read_text()
    assert "level 2" in log  # rank 1 took part
    for name in ("level1/assignment.npy", "level2/assignment.npy", "level1/centroids.npy"):
        np.testing.assert_allclose(np.load(tmp_path / "two" / name), np.load(tmp_path / "one" / name), atol=1e-9)
