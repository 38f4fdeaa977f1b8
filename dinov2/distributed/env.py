"""Process-group set-up for one process, torchrun and SLURM (``enable`` / ``disable``).

``enable()`` reads the launcher's environment variables, in this order:

1. torchrun (or any launcher exporting ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``);
   checked first because torchrun inside a SLURM allocation also sees SLURM variables.
2. a SLURM task (``SLURM_JOB_ID``, ``SLURM_PROCID``, ``SLURM_NTASKS`` ...), e.g. started by ``srun`` or
   by submitit; the master is the first host of the step's node list and the port is derived from the
   job id, so every task computes the same address without talking to the others.
3. a submitit ``LocalExecutor`` job with several tasks (``SUBMITIT_LOCAL_*``), on 127.0.0.1.
4. nothing: a single process. No process group is created; the collectives of
   :mod:`dinov2.distributed` are then no-ops.

A detected world size of 1 also skips the process group. The backend is NCCL when CUDA is available,
gloo otherwise. Unlike the released code, ``enable()`` is idempotent (a second call returns the
environment of the first) and does not replace ``print``: use :class:`MainProcessFilter` for logging.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
from collections.abc import Mapping

import torch
import torch.distributed as dist

logger = logging.getLogger("dinov2")

_PORT_RANGE = (20_000, 60_000)
_ENABLED: DistributedEnvironment | None = None


@dataclasses.dataclass(frozen=True)
class DistributedEnvironment:
    """Where this process sits in the job: ranks, sizes and the rendezvous address."""

    source: str  # "torchrun" | "slurm" | "submitit-local" | "single"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str = "127.0.0.1"
    master_port: int = 0

    def exports(self) -> dict[str, str]:
        """The torchrun-style variables ``init_process_group(init_method="env://")`` reads."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def parse_slurm_node_list(node_list: str) -> list[str]:
    """Expand a SLURM host list: ``"node[01-03,07],gpu5"`` -> ``["node01", "node02", "node03", "node07", "gpu5"]``.

    Supports several bracket groups per name (``"r[1-2]-n[1-2]"``: all combinations, first group
    slowest) and keeps zero padding (``[08-10]`` -> ``08, 09, 10``).
    """
    hosts: list[str] = []
    for item in _split_top_level(node_list.strip()):
        hosts.extend(_expand_host(item))
    if not hosts:
        raise ValueError(f"SLURM node list {node_list!r} names no host")
    return hosts


def _split_top_level(text: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0 or depth > 1:
            raise ValueError(f"SLURM node list {text!r} has unbalanced or nested brackets")
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise ValueError(f"SLURM node list {text!r} has an unclosed '['")
    items.append(text[start:])
    return [item for item in items if item]


def _expand_host(item: str) -> list[str]:
    match = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", item)
    if match is None:
        return [item]
    prefix, ranges, rest = match.groups()
    values: list[str] = []
    for part in ranges.split(","):
        if re.fullmatch(r"\d+", part):
            values.append(part)
        elif re.fullmatch(r"\d+-\d+", part):
            first, last = part.split("-")
            width = len(first)
            values.extend(str(v).zfill(width) for v in range(int(first), int(last) + 1))
        else:
            raise ValueError(f"SLURM node range {part!r} in {item!r} is neither 'N' nor 'N-M'")
    return [prefix + value + tail for value in values for tail in _expand_host(rest)]


def parse_slurm_tasks_per_node(text: str) -> list[int]:
    """Expand SLURM's task counts per node: ``"4(x2),3"`` -> ``[4, 4, 3]``."""
    counts: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if match is None:
            raise ValueError(f"SLURM tasks-per-node value {text!r} is not like '4' or '4(x2),3'")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def port_from_job_id(job_id: str | int) -> int:
    """A rendezvous port in [20000, 60000) that every task of a job derives alike from its id."""
    digits = re.sub(r"\D", "", str(job_id)) or "0"
    low, high = _PORT_RANGE
    return low + int(digits) % (high - low)


def _from_torchrun_variables(variables: Mapping[str, str | int], source: str) -> DistributedEnvironment:
    """The environment that torchrun-style ``variables`` describe (``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE`` default to
    ``RANK`` / ``WORLD_SIZE``); every launcher translates its own variables into these."""
    rank, world_size = int(variables["RANK"]), int(variables["WORLD_SIZE"])
    return DistributedEnvironment(
        source=source,
        rank=rank,
        world_size=world_size,
        local_rank=int(variables.get("LOCAL_RANK", rank)),
        local_world_size=int(variables.get("LOCAL_WORLD_SIZE", world_size)),
        master_addr=str(variables["MASTER_ADDR"]),
        master_port=int(variables["MASTER_PORT"]),
    )


def _slurm_environment(env: Mapping[str, str]) -> DistributedEnvironment:
    # Step variables (set by srun) describe the running step; job variables the whole allocation.
    world_size = int(env.get("SLURM_STEP_NUM_TASKS", env["SLURM_NTASKS"]))
    node_list = env.get("SLURM_STEP_NODELIST", env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "")))
    hosts = parse_slurm_node_list(node_list) if node_list else ["127.0.0.1"]
    tasks_text = env.get("SLURM_STEP_TASKS_PER_NODE", env.get("SLURM_TASKS_PER_NODE", env.get("SLURM_NTASKS_PER_NODE")))
    node_id = int(env.get("SLURM_NODEID", 0))
    if tasks_text:
        counts = parse_slurm_tasks_per_node(tasks_text)
        local_world_size = counts[node_id] if node_id < len(counts) else counts[-1]
    else:
        local_world_size = max(1, world_size // len(hosts))
    ranks = {"RANK": env["SLURM_PROCID"], "LOCAL_RANK": env.get("SLURM_LOCALID", 0)}
    sizes = {"WORLD_SIZE": world_size, "LOCAL_WORLD_SIZE": local_world_size}
    port = env["MASTER_PORT"] if "MASTER_PORT" in env else port_from_job_id(env["SLURM_JOB_ID"])
    return _from_torchrun_variables({**ranks, **sizes, "MASTER_ADDR": hosts[0], "MASTER_PORT": port}, "slurm")


def _submitit_local_environment(env: Mapping[str, str]) -> DistributedEnvironment:
    # One machine: LOCAL_WORLD_SIZE defaults to WORLD_SIZE.
    ranks = {"RANK": env["SUBMITIT_LOCAL_GLOBALID"], "LOCAL_RANK": env["SUBMITIT_LOCAL_LOCALID"]}
    address = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port_from_job_id(env.get("SUBMITIT_LOCAL_JOB_ID", "0"))}
    return _from_torchrun_variables({**ranks, "WORLD_SIZE": env["SUBMITIT_LOCAL_NTASKS"], **address}, "submitit-local")


def detect_environment(environ: Mapping[str, str] | None = None) -> DistributedEnvironment:
    """Describe this process from the launcher's variables (``os.environ`` by default); reads nothing else."""
    env = os.environ if environ is None else environ
    if all(key in env for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")):
        return _from_torchrun_variables(env, "torchrun")
    if all(key in env for key in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS")):
        return _slurm_environment(env)
    if env.get("SUBMITIT_EXECUTOR") == "local" and "SUBMITIT_LOCAL_GLOBALID" in env:
        return _submitit_local_environment(env)
    return DistributedEnvironment(source="single", rank=0, world_size=1, local_rank=0, local_world_size=1)


def default_backend() -> str:
    """``"nccl"`` when CUDA is available, else ``"gloo"``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def _export(values: Mapping[str, str], overwrite: bool) -> None:
    for key, value in values.items():
        current = os.environ.get(key)
        if current is not None and current != value and not overwrite:
            raise RuntimeError(
                f"environment variable {key}={current!r} disagrees with the detected value {value!r}; "
                "unset it or call enable(overwrite=True)"
            )
        os.environ[key] = value


def enable(
    *,
    set_cuda_current_device: bool = True,
    overwrite: bool = False,
    allow_nccl_timeout: bool = False,
    backend: str | None = None,
    timeout: datetime.timedelta | None = None,
) -> DistributedEnvironment:
    """Join the job's process group (torchrun, SLURM, submitit-local) or stay a single process.

    Args:
        set_cuda_current_device: select CUDA device ``local_rank`` when CUDA is available.
        overwrite: replace conflicting ``RANK``/``MASTER_ADDR``/... variables instead of failing.
        allow_nccl_timeout: set ``TORCH_NCCL_ASYNC_ERROR_HANDLING=1`` so NCCL honours ``timeout``.
        backend: ``"nccl"`` or ``"gloo"``; default NCCL with CUDA, else gloo.
        timeout: collective timeout (torch's default when None).

    Returns the detected :class:`DistributedEnvironment`. Idempotent: if a process group already
    exists (a second call, or a test harness), it is described and kept.
    """
    global _ENABLED
    if _ENABLED is not None:
        return _ENABLED
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        _ENABLED = DistributedEnvironment("existing", rank, world, local_rank, local_size)
        return _ENABLED
    environment = detect_environment()
    _export(environment.exports() if environment.world_size > 1 else {}, overwrite)
    if set_cuda_current_device and torch.cuda.is_available():
        torch.cuda.set_device(environment.local_rank)
    if allow_nccl_timeout:
        _export({"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}, overwrite)
    if environment.world_size > 1:
        backend = backend or default_backend()
        logger.info("distributed: %s, backend %s", environment, backend)
        kwargs = {} if timeout is None else {"timeout": timeout}
        dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    _ENABLED = environment
    return environment


def disable() -> None:
    """Destroy the process group created by :func:`enable` (or any default group) and forget the state."""
    global _ENABLED
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _ENABLED = None


class MainProcessFilter(logging.Filter):
    """Pass every record on global rank 0; on other ranks only records at ``other_ranks_level`` or above.

    The rank is read when a record is emitted, so the filter may be installed before ``enable()``.
    Attach it to handlers (``handler.addFilter(MainProcessFilter())``): logger-level filters do not
    see records propagated from child loggers.
    """

    def __init__(self, other_ranks_level: int = logging.WARNING) -> None:
        super().__init__()
        self.other_ranks_level = other_ranks_level

    def filter(self, record: logging.LogRecord) -> bool:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        return rank == 0 or record.levelno >= self.other_ranks_level


def restrict_logging_to_main_process(
    logger_names: tuple[str, ...] = ("", "dinov2"), other_ranks_level: int = logging.WARNING
) -> None:
    """Add a :class:`MainProcessFilter` to every handler of the named loggers (root and ``dinov2``)."""
    for name in logger_names:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, MainProcessFilter) for f in handler.filters):
                handler.addFilter(MainProcessFilter(other_ranks_level))
