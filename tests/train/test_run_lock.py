"""RunLock: a second run on the same output directory is refused; dead or requeued owners are taken over."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dinov2.train import run_lock
from dinov2.train.run_lock import LOCK_FILE, TAKE_OVER_ENV, LockOwner, RunLock, RunLockError
from tests.conftest import REPO_ROOT, preserved_logging
from tests.dist_helpers import run_distributed

HOLDER = """
import sys
from dinov2.train.run_lock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture(autouse=True)
def _no_ambient_overrides(monkeypatch):
    monkeypatch.delenv(TAKE_OVER_ENV, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)


@pytest.fixture
def dinov2_log(caplog):
    """caplog for the ``dinov2`` logger, also when logging set-up stopped it propagating to the root logger."""
    logger = logging.getLogger("dinov2")
    listen = not logger.propagate
    if listen:
        logger.addHandler(caplog.handler)
    with caplog.at_level(logging.INFO, logger="dinov2"):
        yield caplog
    if listen:
        logger.removeHandler(caplog.handler)


def _wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _start_holder(directory: Path, **env: str) -> subprocess.Popen:
    """Another process that takes the lock and holds it until its stdin gets a line."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
    )
    assert process.stdout.readline().strip() == "locked", process.stderr.read()
    return process


def _owner_in_file(directory: Path) -> LockOwner:
    return LockOwner.parse((directory / LOCK_FILE).read_text())


def _write_lock(directory: Path, age: float = 0.0, **changes) -> LockOwner:
    """A lock file as another run would leave it (e.g. ``host="node-a"``), last refreshed ``age`` seconds ago."""
    owner = dataclasses.replace(LockOwner.current(), **changes)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    path.write_text(json.dumps(dataclasses.asdict(owner)))
    os.utime(path, (time.time() - age, time.time() - age))
    return owner


def test_second_run_is_refused_with_the_first_named(tmp_path, monkeypatch):
    before = time.time()
    holder = _start_holder(tmp_path, SLURM_JOB_ID="4242")
    try:
        owner = _owner_in_file(tmp_path)
        assert (owner.pid, owner.host, owner.slurm_job_id) == (holder.pid, socket.gethostname(), "4242")
        assert before <= owner.start_time <= time.time()
        monkeypatch.setenv("SLURM_JOB_ID", "4242")  # a second launch inside the same job is refused as well
        with pytest.raises(RunLockError) as caught:
            RunLock(tmp_path).acquire()
        message = str(caught.value)
        started = datetime.datetime.fromtimestamp(owner.start_time).astimezone().isoformat(timespec="seconds")
        for part in (
            f"{tmp_path} is in use by another training run",
            f"pid {holder.pid} on host {socket.gethostname()}, started {started}, SLURM job 4242",
            str(tmp_path / LOCK_FILE),
            "--output-dir",
            f"set {TAKE_OVER_ENV}=1",
        ):
            assert part in message, (part, message)
        assert _owner_in_file(tmp_path) == owner  # the refused run left the lock alone
    finally:
        holder.communicate("stop\n", timeout=60)
    assert holder.returncode == 0 and not (tmp_path / LOCK_FILE).exists()  # released on a normal exit
    with RunLock(tmp_path):
        assert _owner_in_file(tmp_path).pid == os.getpid()


def test_lock_of_a_killed_process_is_taken_over(tmp_path, dinov2_log):
    holder = _start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=60)
    assert _owner_in_file(tmp_path).pid == holder.pid  # a killed run cannot clean up
    with RunLock(tmp_path):
        assert _owner_in_file(tmp_path).pid == os.getpid()
    assert not (tmp_path / LOCK_FILE).exists()
    warnings = [r.getMessage() for r in dinov2_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"process {holder.pid} is no longer running" in warnings[0]


def test_pid_reused_by_another_process_is_not_the_owner(tmp_path):
    if run_lock._process_start(os.getpid()) is None:
        pytest.skip("needs /proc to tell process start times apart")
    _write_lock(tmp_path, pid_start=run_lock._process_start(os.getpid()) + 1)  # our pid, another start time
    with RunLock(tmp_path):
        assert _owner_in_file(tmp_path).pid_start == run_lock._process_start(os.getpid())
    _write_lock(tmp_path)  # our own pid and start: alive
    with pytest.raises(RunLockError, match=f"pid {os.getpid()} on host"):
        RunLock(tmp_path).acquire()


def test_requeued_slurm_job_takes_over_its_own_lock_from_another_host(tmp_path, monkeypatch, dinov2_log):
    _write_lock(tmp_path, host="node-a", slurm_job_id="77")
    monkeypatch.setenv("SLURM_JOB_ID", "78")  # another job: refused, the lock is fresh
    with pytest.raises(RunLockError, match="pid .* on host node-a, started .*, SLURM job 77"):
        RunLock(tmp_path).acquire()
    monkeypatch.setenv("SLURM_JOB_ID", "77")  # the same job requeued (possibly on another node)
    with RunLock(tmp_path):
        assert _owner_in_file(tmp_path).slurm_job_id == "77" and _owner_in_file(tmp_path).host != "node-a"
    assert any("SLURM job 77 again (requeued)" in r.getMessage() for r in dinov2_log.records)


def test_other_host_lock_is_stale_once_not_refreshed(tmp_path):
    _write_lock(tmp_path, age=50, host="node-b")
    with pytest.raises(RunLockError, match="refreshed 50 s ago"):
        RunLock(tmp_path, stale_after=60, heartbeat=1).acquire()
    _write_lock(tmp_path, age=61, host="node-b")
    with RunLock(tmp_path, stale_after=60, heartbeat=1):
        assert _owner_in_file(tmp_path).host == socket.gethostname()
    (tmp_path / LOCK_FILE).write_text("")  # e.g. killed between creating and writing the file
    with pytest.raises(RunLockError, match="cannot be read"):
        RunLock(tmp_path).acquire()
    os.utime(tmp_path / LOCK_FILE, (time.time() - 1000, time.time() - 1000))
    with RunLock(tmp_path):
        assert _owner_in_file(tmp_path).pid == os.getpid()


def test_take_over_escape_hatch(tmp_path, monkeypatch):
    _write_lock(tmp_path, host="node-c")
    monkeypatch.setenv(TAKE_OVER_ENV, "1")
    with RunLock(tmp_path):
        assert _owner_in_file(tmp_path).host == socket.gethostname()


def test_released_after_the_block_and_after_an_exception(tmp_path):
    lock = RunLock(tmp_path / "new" / "dir")  # creates the output directory
    with lock:
        owner = _owner_in_file(lock.directory)
        assert owner == lock.owner and owner.pid == os.getpid()
    assert not lock.path.exists() and lock.owner is None
    with pytest.raises(ValueError, match="inside"), RunLock(tmp_path):
        assert (tmp_path / LOCK_FILE).exists()
        raise ValueError("inside")
    assert not (tmp_path / LOCK_FILE).exists()
    with pytest.raises(ValueError, match="heartbeat < stale_after"):
        RunLock(tmp_path, heartbeat=10, stale_after=5)


def test_heartbeat_refreshes_and_notices_a_take_over(tmp_path, dinov2_log):
    first = RunLock(tmp_path, heartbeat=0.05, stale_after=1)
    first.acquire()
    try:
        os.utime(first.path, (time.time() - 100, time.time() - 100))
        _wait_for(lambda: time.time() - first.path.stat().st_mtime < 50)  # refreshed by the background thread
        second = RunLock(tmp_path, take_over=True)
        second.acquire()

        def taken_over_logged() -> bool:
            return any(r.levelno == logging.ERROR and "was taken over" in r.getMessage() for r in dinov2_log.records)

        _wait_for(taken_over_logged)
    finally:
        first.release()
    assert _owner_in_file(tmp_path) == second.owner  # the first run left the new owner's lock alone
    second.release()
    assert not (tmp_path / LOCK_FILE).exists()


def _lock_on_two_ranks(rank: int, world: int, directory: str) -> dict:
    out = {}
    try:
        with RunLock(directory):
            out["entered"] = True
    except RunLockError as error:
        out["refused"] = str(error)
    torch.distributed.barrier()
    if rank == 0:
        os.unlink(Path(directory) / LOCK_FILE)  # the other run ended
    torch.distributed.barrier()
    with RunLock(directory):
        out["owner"] = _owner_in_file(Path(directory)).pid
        torch.distributed.barrier()  # both ranks look while it is held
    torch.distributed.barrier()
    out["pid"], out["left"] = os.getpid(), (Path(directory) / LOCK_FILE).exists()
    return out


@pytest.mark.slow
def test_only_rank_zero_locks_and_every_rank_is_refused(tmp_path):
    _write_lock(tmp_path, host="node-d")
    results = run_distributed(_lock_on_two_ranks, 2, str(tmp_path))
    for result in results:
        assert "entered" not in result and "on host node-d" in result["refused"]
        assert result["owner"] == results[0]["pid"] and not result["left"]
    assert results[1]["refused"].startswith(f"rank 0 could not lock {tmp_path}: RunLockError:")


@pytest.mark.parametrize("eval_only", [False, True])
def test_trainer_refuses_an_output_directory_in_use(tmp_path, eval_only):
    from dinov2.train.train import get_args_parser, main
    from tests.train.tiny import FP32_OPTS, TINY_OPTS

    out = tmp_path / "run"
    owner = _write_lock(out, host="node-e", slurm_job_id="5")
    dataset = f"Synthetic:root={tmp_path}/data:num_classes=3:images_per_class=6:size=40x32"
    argv = ["--output-dir", str(out)] + (["--eval-only"] if eval_only else [])
    args = get_args_parser().parse_args(argv + [*TINY_OPTS, *FP32_OPTS, f"train.dataset_path={dataset}"])
    (out / "config.yaml").write_text("the running run's config\n")
    with preserved_logging(), pytest.raises(RunLockError, match="on host node-e, started .*, SLURM job 5"):
        main(args)
    assert _owner_in_file(out) == owner
    assert (out / "config.yaml").read_text() == "the running run's config\n"  # refused before setup wrote it
    assert not list(out.glob("model_*")) and not (out / "eval").exists()
    assert not (out / "training_metrics.json").exists()
    if eval_only:  # once the other run is gone: the export is written and the lock released
        (out / LOCK_FILE).unlink()
        with preserved_logging():
            exported = main(args)
        assert exported == out / "eval" / "manual_0" / "teacher_checkpoint.pth" and exported.is_file()
        assert not (out / LOCK_FILE).exists()
