"""Hold back the cluster's stop signals while a critical write runs."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["STOP_SIGNALS", "stop_signals_deferred"]

# SLURM / submitit: SIGUSR2 before preemption or the time limit (submitit checkpoints and requeues on it), SIGTERM
# when the job is cancelled or its node drained.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGUSR2", "SIGTERM") if hasattr(signal, name))


@contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """Hold :data:`STOP_SIGNALS` for the body, then deliver those that arrived to the handlers in place before.

    Python runs signal handlers in the main thread between bytecodes, so a handler that exits (submitit's requeue
    does) can fire inside a half-done ``torch.save``. Masking the signal would not do: the process may have other
    threads (data loading, collectives) that receive it. So the handlers are swapped for one that only records the
    signal, and the signal is raised again once the body is done. A no-op outside the main thread (where handlers
    cannot be set); a signal whose handler was not set from Python is left alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not None:
            previous[signum] = signal.signal(signum, lambda number, frame: caught.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)
