"""Cluster defaults for SLURM submission: shared checkpoint folder, partition, account, QoS, CPUs.

The released code knew three Meta clusters (AWS, FAIR, RSC). Any other machine is ``GENERIC``:
no shared folder is assumed and SLURM's own defaults apply. Every default can be set by an
environment variable, and the launcher flags (``--partition``, ``--account``, ``--qos``) override
both:

===============================  ===========================================================
``DINOV2_CLUSTER``               force the cluster type: ``aws``, ``fair``, ``rsc``, ``generic``
``DINOV2_CHECKPOINT_PATH``       shared folder (experiments go to ``<it>/<user>/experiments``)
``DINOV2_SLURM_PARTITION``       default partition
``DINOV2_SLURM_ACCOUNT``         default account
``DINOV2_SLURM_QOS``             default quality of service
``DINOV2_SLURM_CPUS_PER_TASK``   CPUs per task (one task per GPU)
===============================  ===========================================================
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any


class ClusterType(Enum):
    AWS = "aws"
    FAIR = "fair"
    RSC = "rsc"
    GENERIC = "generic"


# Defaults of the clusters the released recipes ran on; GENERIC leaves them to SLURM.
_CHECKPOINT_DIRS = {
    ClusterType.AWS: "/checkpoints",
    ClusterType.FAIR: "/checkpoint",
    ClusterType.RSC: "/checkpoint/dino",
}
_PARTITIONS = {ClusterType.AWS: "learnlab", ClusterType.FAIR: "learnlab", ClusterType.RSC: "learn"}
_CPUS_PER_TASK = {ClusterType.AWS: 12, ClusterType.RSC: 12}
_WHOLE_NODE_MEMORY = {ClusterType.FAIR, ClusterType.RSC}  # mem_gb=0 asks SLURM for all of a node's memory


def _guess_cluster_type() -> ClusterType:
    forced = os.environ.get("DINOV2_CLUSTER")
    if forced:
        try:
            return ClusterType(forced.lower())
        except ValueError:
            valid = [c.value for c in ClusterType]
            raise ValueError(f"DINOV2_CLUSTER={forced!r} is not one of {valid}") from None
    uname = os.uname()
    if uname.release.endswith("-aws"):  # AWS kernels look like 5.4.0-1051-aws
        return ClusterType.AWS
    if uname.nodename.startswith("rsc"):
        return ClusterType.RSC
    if Path(_CHECKPOINT_DIRS[ClusterType.FAIR]).is_dir():
        return ClusterType.FAIR
    return ClusterType.GENERIC


def get_cluster_type(cluster_type: ClusterType | None = None) -> ClusterType:
    """``cluster_type`` if given, else the detected one (``DINOV2_CLUSTER`` first)."""
    return cluster_type if cluster_type is not None else _guess_cluster_type()


def get_checkpoint_path(cluster_type: ClusterType | None = None) -> Path | None:
    """The cluster's shared checkpoint folder (``DINOV2_CHECKPOINT_PATH`` first); None if unknown."""
    if os.environ.get("DINOV2_CHECKPOINT_PATH"):
        return Path(os.environ["DINOV2_CHECKPOINT_PATH"])
    folder = _CHECKPOINT_DIRS.get(get_cluster_type(cluster_type))
    return Path(folder) if folder else None


def get_user_checkpoint_path(cluster_type: ClusterType | None = None) -> Path | None:
    """``<checkpoint path>/<user>``, or None when the cluster has no known shared folder."""
    checkpoint_path = get_checkpoint_path(cluster_type)
    if checkpoint_path is None:
        return None
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        raise RuntimeError("USER is not set: cannot choose a per-user checkpoint folder; pass --output-dir")
    return checkpoint_path / user


def get_slurm_partition(cluster_type: ClusterType | None = None) -> str | None:
    """``DINOV2_SLURM_PARTITION``, else the cluster's default partition, else None (SLURM's default)."""
    return os.environ.get("DINOV2_SLURM_PARTITION") or _PARTITIONS.get(get_cluster_type(cluster_type))


def get_slurm_account() -> str | None:
    return os.environ.get("DINOV2_SLURM_ACCOUNT") or None


def get_slurm_qos() -> str | None:
    return os.environ.get("DINOV2_SLURM_QOS") or None


def get_slurm_executor_parameters(
    nodes: int, num_gpus_per_node: int, cluster_type: ClusterType | None = None, **kwargs: Any
) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` arguments: one task per GPU (one per node without GPUs).

    ``kwargs`` override the defaults; ``None`` values are dropped (a flag left unset keeps the default).
    """
    if nodes < 1 or num_gpus_per_node < 0:
        raise ValueError(f"need nodes >= 1 and GPUs per node >= 0, got nodes={nodes}, gpus={num_gpus_per_node}")
    cluster_type = get_cluster_type(cluster_type)
    cpus = os.environ.get("DINOV2_SLURM_CPUS_PER_TASK") or _CPUS_PER_TASK.get(cluster_type, 10)
    params: dict[str, Any] = {
        "nodes": nodes,
        "tasks_per_node": max(num_gpus_per_node, 1),
        "cpus_per_task": int(cpus),
        "slurm_partition": get_slurm_partition(cluster_type),
        "slurm_account": get_slurm_account(),
        "slurm_qos": get_slurm_qos(),
    }
    if num_gpus_per_node > 0:
        params["gpus_per_node"] = num_gpus_per_node
    if cluster_type in _WHOLE_NODE_MEMORY:
        params["mem_gb"] = 0
    params.update(kwargs)
    return {key: value for key, value in params.items() if value is not None}
