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
    """Block :data:`STOP_SIGNALS` in the calling thread for the body, then deliver any that arrived.

    Python runs signal handlers in the main thread between bytecodes, so a handler that exits (submitit's requeue
    does) can fire inside a half-done ``torch.save``; blocking defers it to the end of the body. A no-op outside the
    main thread and where ``pthread_sigmask`` does not exist (Windows)."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
