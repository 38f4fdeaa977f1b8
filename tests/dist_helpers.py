"""Run a function in several local processes joined by a process group (gloo on CPU; NCCL for CUDA tests)."""

from __future__ import annotations

import os
import pickle
import queue as queue_module
import socket
import traceback
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, queue, backend: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world_size),
    )
    torch.set_num_threads(1)
    try:
        if backend == "nccl":
            torch.cuda.set_device(rank)
        dist.init_process_group(backend, rank=rank, world_size=world_size)
        result = fn(rank, world_size, *args)
        # Plain pickle copies tensor data; torch's shared-memory reduction would die with this process.
        queue.put((rank, True, pickle.dumps(result)))
    except BaseException:  # report any failure (incl. assertion errors) to the parent test
        queue.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_distributed(
    fn: Callable, world_size: int = 2, *args: Any, timeout: float = 180.0, backend: str = "gloo"
) -> list:
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` processes (``backend``: gloo, or nccl with one GPU
    per rank); return results by rank.

    ``fn`` must be importable (module level); results may hold tensors. A failure on any rank re-raises here
    with its traceback.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_worker, args=(r, world_size, port, fn, args, queue, backend)) for r in range(world_size)
    ]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    errors = []
    for _ in range(world_size):
        try:
            rank, ok, payload = queue.get(timeout=timeout)
        except queue_module.Empty:
            for p in procs:
                p.kill()
            codes = [p.exitcode for p in procs]
            raise AssertionError(f"distributed test timed out after {timeout}s (exit codes {codes})") from None
        if ok:
            results[rank] = pickle.loads(payload)
        else:
            errors.append(f"rank {rank} failed:\n{payload}")
    for p in procs:
        p.join(timeout=timeout)
        if p.is_alive():
            p.kill()
    if errors:
        raise AssertionError("\n".join(errors))
    return [results[r] for r in range(world_size)]
