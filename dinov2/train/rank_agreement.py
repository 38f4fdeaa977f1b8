"""Run a step on every rank and agree on its outcome, so that an error on one rank raises on all of them.

Used where one rank may fail while the others would go on into the next collective and wait for ever: saving and
loading checkpoints (``checkpointing.py``) and taking the run lock (``run_lock.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from dinov2 import distributed
from dinov2.train.disk_space import is_disk_full

__all__ = ["RankFailure", "run_agreed", "agreed_error"]


@dataclasses.dataclass
class RankFailure:
    """One rank's error in :func:`run_agreed`: ``message`` is ``"<type>: <text>"``."""

    rank: int
    message: str
    disk_full: bool  # the error is a write that found no room (see dinov2.train.disk_space.is_disk_full)


def run_agreed(fn: Callable[[], Any]) -> tuple[list[Any], list[RankFailure], BaseException | None]:
    """Call ``fn()`` on every rank and gather: (results by rank, every rank's failure, this rank's own exception).

    Collective (one ``all_gather_object``), so all ranks learn of an error on any rank and can raise together
    instead of leaving the others waiting in the next collective. ``fn`` may itself be collective only if it
    fails on every rank alike (as DCP does). Results must be picklable.
    """
    try:
        result, error = fn(), None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # DCP's CheckpointException derives from BaseException
        result, error = None, exc
    failure = None
    if error is not None:
        failure = RankFailure(distributed.get_global_rank(), f"{type(error).__name__}: {error}", is_disk_full(error))
    gathered = distributed.all_gather_object((result, failure))
    return [r for r, _ in gathered], [f for _, f in gathered if f is not None], error


def agreed_error(fn: Callable[[], Any]) -> str | None:
    """Run ``fn()`` on every rank; the first failing rank's error message (or None), the same on all ranks."""

    def call() -> None:  # fn's result stays on this rank (it need not be picklable)
        fn()

    _, failures, _ = run_agreed(call)
    return failures[0].message if failures else None
