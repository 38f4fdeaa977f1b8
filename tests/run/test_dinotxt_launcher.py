"""The dino.txt SLURM launcher (``dinov2/run/train/dinotxt.py``): usage errors before submission, and a real tiny
run on submitit's LocalExecutor preempted with SIGUSR2, requeued, resumed from its checkpoint and finished."""

from __future__ import annotations

import os
import signal

import pytest

from dinov2.run.train import dinotxt as launcher
from dinov2.text import tokenizer as tok
from tests.conftest import REPO_ROOT
from tests.run.test_submit import _wait_for, generic_env  # noqa: F401 (a fixture)
from tests.train.test_dinotxt import make_caption_data, tiny_opts


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["optim.lrr=1"], "did you mean 'optim.lr'"),
        (["--config-file", "no/such/config.yaml"], "'no/such/config.yaml' not found"),
        (["data.dataset=Nope:root=x"], "data.dataset: unknown dataset 'Nope'"),
        (["data.dataset=''"], "data.dataset: required"),
        (["--entry-point", "os.path.join"], "--entry-point: entry point must look like"),
        (["--output-dir=", "data.dataset=CaptionFolder:root=x"], "--output-dir"),
    ],
)
def test_usage_errors_before_submission(argv, expected, generic_env, tmp_path, capsys):  # noqa: F811
    with pytest.raises(SystemExit) as exit_info:
        launcher.main(["--cluster", "local", "--output-dir", str(tmp_path / "run"), *argv])
    assert exit_info.value.code == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing written, nothing submitted


def test_parser_has_the_launcher_and_training_flags():
    args = launcher.get_args_parser().parse_intermixed_args(
        ["--nodes", "2", "--ngpus", "4", "--output-dir", "d", "train.fsdp=true", "--no-resume", "optim.lr=1"]
    )
    assert (args.nodes, args.ngpus, args.output_dir, args.no_resume) == (2, 4, "d", True)
    assert args.opts == ["train.fsdp=true", "optim.lr=1"] and args.entry_point == launcher.ENTRY_POINT


@pytest.mark.slow
@pytest.mark.skipif(tok.find_vocab() is None, reason="no CLIP BPE vocabulary (pip install open_clip_torch)")
def test_local_job_is_requeued_on_preemption_and_resumes(generic_env, tmp_path):  # noqa: F811
    generic_env.setenv("PYTHONPATH", str(REPO_ROOT))  # the job's process imports dinov2 and tests.run
    data, output_dir = make_caption_data(tmp_path / "data"), tmp_path / "run"
    opts = [*tiny_opts(data), "optim.iterations=16", "checkpoint_period=4", "eval.dataset=''"]
    job = launcher.main(
        ["--cluster", "local", "--ngpus", "1", "--timeout", "60", "--output-dir", str(output_dir)]
        + ["--entry-point", "tests.run.dinotxt_entry:main", "--no-resume", *opts]  # the requeued task resumes
    )
    pid = output_dir / "pid"
    try:
        _wait_for((output_dir / "checkpoints" / "model_0000003").exists, 120, "the first checkpoint")
        os.kill(first_pid := int(pid.read_text()), signal.SIGUSR2)  # what SLURM sends on preemption
        result = job.result()
    finally:
        job.cancel()
    assert int(pid.read_text()) != first_pid  # a new process ran after the requeue
    assert 0 < len(result["losses"]) < 16  # the requeued run resumed from a checkpoint, not from iteration 0
    assert (output_dir / "checkpoints" / "model_0000015").exists() and (output_dir / "dinotxt.pth").is_file()
