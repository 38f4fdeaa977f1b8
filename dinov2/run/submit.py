"""submitit launcher shared by training and evaluation: flags, shared folder and job submission.

A launcher script builds its parser with :func:`get_args_parser` (its own flags as ``parents``),
then calls :func:`submit_jobs` with a task class: ``task_class(args)`` is pickled and run once per
task (one per GPU). A task with a ``checkpoint()`` method returning a
``submitit.helpers.DelayedSubmission`` is requeued on preemption or time-out (SIGUSR2 from SLURM,
``slurm_signal_delay_s`` before the limit).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from dinov2.utils.cli import ArgumentParser
from dinov2.utils.cluster import (
    get_slurm_account,
    get_slurm_executor_parameters,
    get_slurm_partition,
    get_slurm_qos,
    get_user_checkpoint_path,
)

logger = logging.getLogger("dinov2")

SIGNAL_DELAY_S = 120  # SIGUSR2 this long before the time limit: time to requeue
MAX_NUM_TIMEOUT = 30  # requeues after time-outs before giving up (preemptions do not count)


def get_args_parser(
    description: str | None = None, parents: list[argparse.ArgumentParser] | None = None, add_help: bool = True
) -> argparse.ArgumentParser:
    """Flags of every submitit launcher; ``parents`` add the task's own flags (``--output-dir`` among them)."""
    parser = ArgumentParser(description=description, parents=parents or [], add_help=add_help)
    parser.add_argument("--ngpus", "--gpus", "--gpus-per-node", default=8, type=int, help="GPUs (= tasks) per node")
    parser.add_argument("--nodes", "--nnodes", default=1, type=int, help="number of nodes")
    parser.add_argument("--timeout", default=2800, type=int, help="time limit of each job, in minutes")
    parser.add_argument(
        "--partition",
        default=get_slurm_partition(),
        type=str,
        help="SLURM partition ($DINOV2_SLURM_PARTITION when set)",
    )
    parser.add_argument("--account", default=get_slurm_account(), help="SLURM account ($DINOV2_SLURM_ACCOUNT when set)")
    parser.add_argument("--qos", default=get_slurm_qos(), help="SLURM quality of service ($DINOV2_SLURM_QOS when set)")
    parser.add_argument("--use-volta32", action="store_true", help="request V100-32GB GPUs (constraint volta32gb)")
    parser.add_argument("--comment", default="", type=str, help="comment passed to the scheduler")
    parser.add_argument("--exclude", default="", type=str, help="nodes to exclude")
    parser.add_argument(
        "--cluster",
        default=os.environ.get("DINOV2_SUBMITIT_CLUSTER") or None,
        choices=["slurm", "local", "debug"],
        help="submitit executor (slurm when available, or $DINOV2_SUBMITIT_CLUSTER); 'local' runs the tasks on this "
        "machine",
    )
    return parser


def run_script(main: Callable[[], Any]) -> NoReturn:
    """The ``if __name__ == "__main__":`` of a launcher script: log INFO lines to stderr, submit with ``main()`` (it
    parses ``sys.argv``), exit 0 (a usage error exits 2 from the parser)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    main()
    sys.exit(0)


def get_shared_folder() -> Path:
    """``<user checkpoint path>/experiments``, where jobs without ``--output-dir`` write."""
    user_path = get_user_checkpoint_path()
    if user_path is None:
        raise RuntimeError(
            "no shared folder is known for this cluster: pass --output-dir, or set DINOV2_CHECKPOINT_PATH"
        )
    path = user_path / "experiments"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _slurm_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "slurm_partition": args.partition,
        "slurm_account": args.account,
        "slurm_qos": args.qos,
    }
    if args.use_volta32:
        overrides["slurm_constraint"] = "volta32gb"
    if args.comment:
        overrides["slurm_comment"] = args.comment
    if args.exclude:
        overrides["slurm_exclude"] = args.exclude
    return overrides


class SubmititTask:
    """Base of the submitted tasks: holds the parsed ``args`` (pickled with the task), puts the job id in
    place of ``%j`` in ``--output-dir``, calls :meth:`run`, and requeues itself on preemption or time-out."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    def __call__(self):
        import submitit

        job_env = submitit.JobEnvironment()
        self.args.output_dir = self.args.output_dir.replace("%j", str(job_env.job_id))
        logger.info(
            "process %d/%d of job %s, output in %s",
            job_env.global_rank,
            job_env.num_tasks,
            job_env.job_id,
            self.args.output_dir,
        )
        return self.run()

    def run(self):
        raise NotImplementedError

    def checkpoint(self):
        """Called by submitit on preemption / time-out: requeue a fresh task with the same arguments, except that
        the requeued task always resumes (``--no-resume`` holds for the job's first start only: a preempted run
        must not start afresh and lose its progress; the released launchers passed it on)."""
        import submitit

        if getattr(self.args, "no_resume", False):
            self.args.no_resume = False
        logger.info("requeuing %s", self.args)
        return submitit.helpers.DelayedSubmission(type(self)(self.args))


def submit_jobs(task_class, args: argparse.Namespace, name: str):
    """Submit ``task_class(args)`` on ``args.nodes`` x ``args.ngpus`` tasks; returns the submitit job.

    Logs and submitit files go to ``<output_dir>/<job id>/`` (or to ``<output_dir>`` itself when it
    already holds ``%j``, which submitit and the task replace by the job id).
    """
    import submitit

    if not args.output_dir:
        args.output_dir = str(get_shared_folder() / "%j")
    folder = Path(args.output_dir) if "%j" in args.output_dir else Path(args.output_dir) / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=args.cluster, slurm_max_num_timeout=MAX_NUM_TIMEOUT)
    parameters = get_slurm_executor_parameters(
        nodes=args.nodes,
        num_gpus_per_node=args.ngpus,
        timeout_min=args.timeout,
        slurm_signal_delay_s=SIGNAL_DELAY_S,
        **_slurm_overrides(args),
    )
    executor.update_parameters(name=name, **parameters)
    job = executor.submit(task_class(args))
    logger.info("submitted job %s; logs in %s", job.job_id, str(folder).replace("%j", str(job.job_id)))
    return job
