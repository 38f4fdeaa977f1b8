"""Launcher-environment parsing (mocked variables) and real 2-process starts through enable()."""

from __future__ import annotations

import datetime
import logging
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

import dinov2.distributed as distributed
from dinov2.distributed.env import (
    MainProcessFilter,
    detect_environment,
    parse_slurm_node_list,
    parse_slurm_tasks_per_node,
    port_from_job_id,
)

SLURM_TASK = {  # task 5 of a 2-node x 4-GPU job, as srun exports it
    "SLURM_JOB_ID": "123456",
    "SLURM_PROCID": "5",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_JOB_NODELIST": "learnfair[0123,0456]",
    "SLURM_TASKS_PER_NODE": "4(x2)",
}


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("node[01-03,07],other5", ["node01", "node02", "node03", "node07", "other5"]),
        ("gpu[008-010]", ["gpu008", "gpu009", "gpu010"]),
        ("r[1-2]-n[1-2]", ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]),
        ("a-b[3]-ib,c", ["a-b3-ib", "c"]),
        ("single", ["single"]),
    ],
)
def test_parse_slurm_node_list(text, hosts):
    assert parse_slurm_node_list(text) == hosts


@pytest.mark.parametrize("text", ["node[1-", "node[a-b]", "n]1[", ""])
def test_parse_slurm_node_list_rejects_malformed(text):
    with pytest.raises(ValueError, match="SLURM node"):
        parse_slurm_node_list(text)


def test_parse_slurm_tasks_per_node():
    assert parse_slurm_tasks_per_node("4(x2),3") == [4, 4, 3]
    assert parse_slurm_tasks_per_node("8") == [8]
    with pytest.raises(ValueError, match="'4x'"):
        parse_slurm_tasks_per_node("4x")


def test_port_from_job_id_is_deterministic_and_in_range():
    assert port_from_job_id("123456") == port_from_job_id(123456) == 20_000 + 123456 % 40_000
    assert 20_000 <= port_from_job_id("98765_3") < 60_000  # array job ids keep their digits


def test_detect_slurm():
    env = detect_environment(SLURM_TASK)
    assert (env.source, env.rank, env.world_size, env.local_rank, env.local_world_size) == ("slurm", 5, 8, 1, 4)
    assert (env.master_addr, env.master_port) == ("learnfair0123", port_from_job_id("123456"))


def test_detect_slurm_prefers_step_variables_and_master_port():
    step = {
        **SLURM_TASK,
        "SLURM_STEP_NUM_TASKS": "3",
        "SLURM_STEP_NODELIST": "x[7-8]",
        "SLURM_STEP_TASKS_PER_NODE": "2,1",
        "SLURM_PROCID": "2",
        "SLURM_LOCALID": "0",
        "MASTER_PORT": "29999",
    }
    env = detect_environment(step)
    assert (env.world_size, env.local_world_size, env.master_addr, env.master_port) == (3, 1, "x7", 29999)


def test_detect_torchrun_wins_over_slurm():
    torchrun = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "1234",
    }
    env = detect_environment({**SLURM_TASK, **torchrun})
    assert (env.source, env.rank, env.world_size, env.local_rank, env.local_world_size) == ("torchrun", 3, 4, 1, 2)
    assert (env.master_addr, env.master_port) == ("h", 1234)


def test_detect_submitit_local_and_single():
    local = {
        "SUBMITIT_EXECUTOR": "local",
        "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1",
        "SUBMITIT_LOCAL_JOB_ID": "4242",
    }
    env = detect_environment(local)
    assert (env.source, env.rank, env.world_size, env.master_port) == ("submitit-local", 1, 2, port_from_job_id(4242))
    single = detect_environment({})
    assert (single.source, single.rank, single.world_size, single.local_rank) == ("single", 0, 1, 0)


@pytest.fixture
def clean_env(monkeypatch):
    for key in [
        *SLURM_TASK,
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SUBMITIT_EXECUTOR",
        "SLURM_STEP_NUM_TASKS",
        "SLURM_STEP_NODELIST",
    ]:
        monkeypatch.delenv(key, raising=False)
    distributed.disable()
    yield monkeypatch
    distributed.disable()


def test_enable_single_process_is_a_cheap_no_op(clean_env):
    env = distributed.enable()
    assert env.source == "single" and not distributed.is_enabled()
    assert distributed.get_local_rank() == 0 and distributed.get_global_size() == 1
    assert distributed.enable() is env  # idempotent


def test_enable_reports_conflicting_variables(clean_env):
    for key, value in SLURM_TASK.items():
        clean_env.setenv(key, value)
    clean_env.setenv("RANK", "0")  # a stale value that disagrees with SLURM_PROCID=5
    with pytest.raises(RuntimeError, match="RANK='0'.*'5'.*overwrite=True"):
        distributed.enable()


def test_main_process_filter(monkeypatch):
    record = {
        lvl: logging.LogRecord("dinov2", lvl, __file__, 1, "m", None, None) for lvl in (logging.INFO, logging.WARNING)
    }
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    assert not MainProcessFilter().filter(record[logging.INFO]) and MainProcessFilter().filter(record[logging.WARNING])
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 0)
    assert MainProcessFilter().filter(record[logging.INFO])


def _free_port() -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if 20_000 <= port < 60_000:
            return port


def _start(rank: int, world: int, torchrun_port: int, slurm_job_id: str, queue) -> None:
    """Join a process group twice through enable(): torchrun variables, then SLURM variables."""
    try:
        torch.set_num_threads(1)
        seen = []
        os.environ.update(
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK=str(rank),
            LOCAL_WORLD_SIZE=str(world),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(torchrun_port),
        )
        for _ in range(2):  # torchrun variables first, then SLURM ones
            env = distributed.enable(timeout=datetime.timedelta(seconds=60))
            total = torch.tensor([rank + 1.0])
            distributed.all_reduce(total)
            seen.append(
                (
                    env.source,
                    distributed.get_global_rank(),
                    distributed.get_global_size(),
                    distributed.get_local_rank(),
                    torch.distributed.get_backend(),
                    total.item(),
                )
            )
            distributed.disable()
            for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
                os.environ.pop(key)
            os.environ.update(
                SLURM_JOB_ID=slurm_job_id,
                SLURM_PROCID=str(rank),
                SLURM_NTASKS=str(world),
                SLURM_LOCALID=str(rank),
                SLURM_NODEID="0",
                SLURM_JOB_NODELIST="localhost",
                SLURM_TASKS_PER_NODE=str(world),
            )
        queue.put((rank, seen))
    except BaseException as error:  # report to the parent instead of hanging it
        queue.put((rank, repr(error)))


def test_enable_starts_two_processes_from_torchrun_and_slurm_variables():
    torchrun_port, slurm_port = _free_port(), _free_port()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    args = (2, torchrun_port, str(slurm_port - 20_000), queue)
    procs = [ctx.Process(target=_start, args=(r, *args), daemon=True) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=180) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    for rank in range(2):
        expected = [(source, rank, 2, rank, "gloo", 3.0) for source in ("torchrun", "slurm")]
        assert results[rank] == expected
