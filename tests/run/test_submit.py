"""Launcher flags, cluster defaults, and the training launcher end to end on submitit's LocalExecutor."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from dinov2.run import submit
from dinov2.run.train import train as train_launcher
from dinov2.utils import cluster
from tests.conftest import REPO_ROOT

_ENV_KEYS = [
    "DINOV2_CLUSTER",
    "DINOV2_CHECKPOINT_PATH",
    "DINOV2_SLURM_PARTITION",
    "DINOV2_SLURM_ACCOUNT",
    "DINOV2_SLURM_QOS",
    "DINOV2_SLURM_CPUS_PER_TASK",
    "DINOV2_SUBMITIT_CLUSTER",
]


@pytest.fixture
def generic_env(monkeypatch):
    for key in _ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DINOV2_CLUSTER", "generic")
    return monkeypatch


def test_launcher_flags_and_aliases(generic_env):
    parser = submit.get_args_parser(add_help=False)
    args = parser.parse_args([])
    assert (args.ngpus, args.nodes, args.timeout, args.partition, args.cluster) == (8, 1, 2800, None, None)
    args = parser.parse_args(["--gpus-per-node", "4", "--nnodes", "2", "--exclude", "n1", "--use-volta32"])
    assert (args.ngpus, args.nodes, args.exclude, args.use_volta32) == (4, 2, "n1", True)
    assert parser.parse_args(["--gpus", "2"]).ngpus == 2


def test_train_launcher_parses_training_flags(generic_env):
    parser = submit.get_args_parser(parents=[train_launcher.get_train_args_parser(add_help=False)])
    args = parser.parse_args(
        [
            "--nodes",
            "2",
            "--config-file",
            "c.yaml",
            "--output-dir",
            "d",
            "--no-resume",
            "train.batch_size_per_gpu=32",
            "optim.epochs=10",
        ]
    )
    assert (args.nodes, args.config_file, args.output_dir, args.no_resume) == (2, "c.yaml", "d", True)
    assert args.opts == ["train.batch_size_per_gpu=32", "optim.epochs=10"]


def test_executor_parameters_generic_with_environment_defaults(generic_env):
    generic_env.setenv("DINOV2_SLURM_PARTITION", "gpu")
    generic_env.setenv("DINOV2_SLURM_ACCOUNT", "proj")
    generic_env.setenv("DINOV2_SLURM_CPUS_PER_TASK", "6")
    params = cluster.get_slurm_executor_parameters(nodes=2, num_gpus_per_node=4)
    assert params == {
        "nodes": 2,
        "tasks_per_node": 4,
        "gpus_per_node": 4,
        "cpus_per_task": 6,
        "slurm_partition": "gpu",
        "slurm_account": "proj",
    }
    # a flag overrides the environment; None (flag left unset) keeps nothing
    params = cluster.get_slurm_executor_parameters(2, 0, slurm_partition="other", slurm_qos=None)
    assert params["slurm_partition"] == "other" and "slurm_qos" not in params
    assert params["tasks_per_node"] == 1 and "gpus_per_node" not in params


def test_released_cluster_defaults(generic_env):
    fair = cluster.get_slurm_executor_parameters(1, 8, cluster_type=cluster.ClusterType.FAIR)
    assert (fair["slurm_partition"], fair["mem_gb"], fair["cpus_per_task"]) == ("learnlab", 0, 10)
    rsc = cluster.get_slurm_executor_parameters(1, 8, cluster_type=cluster.ClusterType.RSC)
    assert (rsc["slurm_partition"], rsc["cpus_per_task"]) == ("learn", 12)
    assert "mem_gb" not in cluster.get_slurm_executor_parameters(1, 8, cluster_type=cluster.ClusterType.AWS)
    assert cluster.get_checkpoint_path(cluster.ClusterType.FAIR) == Path("/checkpoint")


def test_cluster_detection_and_shared_folder(generic_env, tmp_path):
    assert cluster.get_cluster_type() is cluster.ClusterType.GENERIC
    with pytest.raises(RuntimeError, match="--output-dir"):
        submit.get_shared_folder()
    generic_env.setenv("DINOV2_CHECKPOINT_PATH", str(tmp_path))
    generic_env.setenv("USER", "alice")
    assert submit.get_shared_folder() == tmp_path / "alice" / "experiments"
    generic_env.setenv("DINOV2_CLUSTER", "mars")
    with pytest.raises(ValueError, match="DINOV2_CLUSTER='mars'"):
        cluster.get_cluster_type()


def test_entry_point_resolution():
    assert train_launcher.resolve_entry_point("os.path:join") is os.path.join
    with pytest.raises(ValueError, match="module:function"):
        train_launcher.resolve_entry_point("os.path.join")


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_local_job_is_requeued_on_preemption_and_resumes(generic_env, tmp_path):
    generic_env.setenv("PYTHONPATH", str(REPO_ROOT))  # the job's processes import dinov2 and tests.run
    config = tmp_path / "config.yaml"
    config.write_text("train: {}\n")
    job = train_launcher.main(
        [
            "--cluster",
            "local",
            "--ngpus",
            "1",
            "--nodes",
            "1",
            "--timeout",
            "60",
            "--config-file",
            str(config),
            "--output-dir",
            str(tmp_path / "run_%j"),
            "--entry-point",
            "tests.run.fake_train:main",
            "iters=25",
        ]
    )
    output_dir = tmp_path / f"run_{job.job_id}"
    checkpoint = output_dir / "checkpoint.json"
    try:
        _wait_for(checkpoint.exists, 90, "the first checkpoint")
        first_pid = int((output_dir / "pid").read_text())
        os.kill(first_pid, signal.SIGUSR2)  # what SLURM sends on preemption
        result = job.result()
    finally:
        job.cancel()
    starts = [line.split() for line in (output_dir / "progress.txt").read_text().splitlines()]
    assert len(starts) == 2, starts
    assert int(starts[0][1]) == 0 and int(starts[1][2]) != first_pid and int(starts[1][1]) > 0
    assert result == {"first_iteration": int(starts[1][1]), "last_iteration": 24, "output_dir": str(output_dir)}
    log = (output_dir / f"{job.job_id}_0_log.err").read_text()  # job folder = the output dir here
    assert "this job is preempted" in log  # submitit logs the requeue itself at INFO (not shown)


def test_local_job_with_two_tasks_forms_a_process_group(generic_env, tmp_path):
    generic_env.setenv("PYTHONPATH", str(REPO_ROOT))
    config = tmp_path / "config.yaml"
    config.write_text("train: {}\n")
    output_dir = tmp_path / "run"
    job = train_launcher.main(
        [
            "--cluster",
            "local",
            "--ngpus",
            "2",
            "--config-file",
            str(config),
            "--output-dir",
            str(output_dir),
            "--entry-point",
            "tests.run.fake_train:main",
            "iters=2",
            "sleep=0",
        ]
    )
    try:
        assert [r["last_iteration"] for r in job.results()] == [1, 1]
    finally:
        job.cancel()
    for name in ("progress.txt", "progress_rank1.txt"):
        line = (output_dir / name).read_text().split()
        assert line[3:] == ["world", "2", "sum", "3"], line  # both ranks joined one group of 2
    assert (output_dir / str(job.job_id) / f"{job.job_id}_1_log.out").exists()  # one log per task


def test_real_training_job_is_requeued_on_preemption_and_resumes(generic_env, tmp_path):
    """The real trainer through the launcher: SIGUSR2 mid-run, submitit requeues, the run resumes and finishes."""
    from tests.train.tiny import FP32_OPTS, TINY_OPTS

    generic_env.setenv("PYTHONPATH", str(REPO_ROOT))
    config = tmp_path / "config.yaml"
    config.write_text("train: {}\n")
    output_dir = tmp_path / "run"
    dataset = f"Synthetic:root={tmp_path}/data:num_classes=3:images_per_class=6:size=40x32"
    opts = [*TINY_OPTS, *FP32_OPTS, f"train.dataset_path={dataset}", "optim.epochs=10", "checkpointing.period=4"]
    job = train_launcher.main(
        ["--cluster", "local", "--ngpus", "1", "--timeout", "60", "--config-file", str(config)]
        + ["--output-dir", str(output_dir), "--entry-point", "tests.run.tiny_train_entry:main", *opts]
    )
    try:
        _wait_for(lambda: (output_dir / "model_0000003").exists(), 120, "the first checkpoint")
        first_pid = int((output_dir / "pid").read_text())
        os.kill(first_pid, signal.SIGUSR2)  # what SLURM sends on preemption
        result = job.result()
    finally:
        job.cancel()
    assert int((output_dir / "pid").read_text()) != first_pid  # a new process ran after the requeue
    assert (output_dir / "model_0000039").exists()  # the last of 40 iterations was reached and saved
    assert result["total_loss"] > 0
    log = (output_dir / "logs" / "log.txt").read_text()
    assert "resumed from" in log and "starting training from iteration 0 of 40" in log


def test_a_requeued_task_resumes_even_when_the_job_started_with_no_resume():
    """``--no-resume`` holds for the job's first start only: the task submitit requeues on preemption resumes from
    the run's checkpoint instead of starting afresh (every launcher's task is a ``SubmititTask``)."""
    import argparse

    args = argparse.Namespace(no_resume=True, output_dir="d", opts=["optim.lr=1"])
    requeued = train_launcher.Trainer(args).checkpoint()
    task = requeued.function
    assert isinstance(task, train_launcher.Trainer)
    assert task.args.no_resume is False
    assert (task.args.output_dir, task.args.opts) == ("d", ["optim.lr=1"])
    no_flag = argparse.Namespace(output_dir="d")  # a launcher without the flag is left as it is
    assert not hasattr(train_launcher.Trainer(no_flag).checkpoint().function.args, "no_resume")
