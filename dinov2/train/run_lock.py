"""One training run per output directory: a lock file that a second run refuses to share.

Two runs on one ``--output-dir`` (a double launch, or a requeued job while the old one still runs) overwrite
each other's temporary checkpoints. :class:`RunLock` makes the second stop with an error naming the first
(host, pid, start time, SLURM job id), and lets a restart through when the first is gone.

The lock is ``<output_dir>/dinov2_run.lock``, created with ``os.open(O_CREAT | O_EXCL)`` and holding its owner
as JSON. Exclusive creation is atomic on local file systems and on NFS v3 and later, and the file tells the
second run who holds it. ``fcntl.flock`` was not chosen: on NFS it is emulated with byte-range locks served by
the lock daemon (lost when a server restarts, disabled on some mounts), Lustre grants it only with the
``flock`` mount option, and it cannot name the owner for the error message.

A lock left by an owner that is gone is taken over, with a warning:

- same host (and the same boot and pid namespace): the owner's process has exited (a zombie counts as exited,
  and a reused pid is told apart by the process start time in ``/proc``);
- same ``SLURM_JOB_ID``: a requeue of this very job (SLURM runs one instance of a job at a time; on the same
  host the pid must also be dead, so a second launch inside one allocation is still refused);
- another host: the owner refreshes the lock's modification time every ``heartbeat`` seconds (60) from a
  background thread; a lock not refreshed for ``stale_after`` seconds (900) is stale. Host clocks (the NFS
  server sets the time) must agree to well within that margin.

Escape hatch: ``DINOV2_TAKE_OVER_LOCK=1`` takes any lock over. If its owner still runs, it logs an error at
its next heartbeat and leaves the file alone when it ends.

Only rank 0 touches the file; the outcome is shared, so every rank raises together.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from dinov2 import distributed
from dinov2.train.rank_agreement import run_agreed

__all__ = ["RunLock", "RunLockError", "LockOwner", "LOCK_FILE", "TAKE_OVER_ENV"]

logger = logging.getLogger("dinov2")

LOCK_FILE = "dinov2_run.lock"
TAKE_OVER_ENV = "DINOV2_TAKE_OVER_LOCK"


class RunLockError(RuntimeError):
    """The output directory is in use by another run (or its lock could not be taken)."""


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _process_start(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks after boot (``/proc/<pid>/stat`` field 22); None if unknown."""
    stat = _read_text(f"/proc/{pid}/stat")
    return int(stat.rsplit(")", 1)[1].split()[19]) if stat else None


def _pid_space() -> str | None:
    """Boot id and pid namespace of this process: pids of two processes compare only when these are equal."""
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return f"{boot}/{namespace}" if boot else None


def _alive(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` (started at ``start`` ticks, when known) still runs on this host."""
    if pid <= 0:  # kill(0 or negative) would signal a process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:  # no /proc (not Linux): trust kill()
        return True
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0] != "Z" and (start is None or int(fields[19]) == start)


@dataclasses.dataclass(frozen=True)
class LockOwner:
    """Who holds a run lock. ``start_time``: seconds since the epoch when it was taken."""

    host: str
    pid: int
    start_time: float
    slurm_job_id: str | None
    token: str  # unique per acquisition: a run releases or refreshes only its own lock
    pid_space: str | None = None  # see _pid_space
    pid_start: int | None = None  # see _process_start

    @classmethod
    def current(cls) -> LockOwner:
        pid = os.getpid()
        return cls(
            host=socket.gethostname(),
            pid=pid,
            start_time=time.time(),
            slurm_job_id=os.environ.get("SLURM_JOB_ID"),
            token=uuid.uuid4().hex,
            pid_space=_pid_space(),
            pid_start=_process_start(pid),
        )

    def describe(self) -> str:
        started = datetime.datetime.fromtimestamp(self.start_time).astimezone().isoformat(timespec="seconds")
        job = f", SLURM job {self.slurm_job_id}" if self.slurm_job_id else ""
        return f"pid {self.pid} on host {self.host}, started {started}{job}"

    @classmethod
    def parse(cls, text: str) -> LockOwner | None:
        """The owner written in a lock file, or None if the text is not one (e.g. still being written)."""
        try:
            data = json.loads(text)
            return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})
        except (ValueError, TypeError, KeyError):
            return None


@dataclasses.dataclass(frozen=True)
class _Seen:
    """A lock file as read: its text, owner (None if unreadable) and seconds since it was last refreshed."""

    text: str
    owner: LockOwner | None
    age: float


class RunLock:
    """``with RunLock(output_dir):`` hold the run lock of ``output_dir`` (collective: enter it on every rank).

    Raises :class:`RunLockError` on every rank when another live run holds it. ``take_over`` (default: the
    ``DINOV2_TAKE_OVER_LOCK`` environment variable) takes any lock over. Times are in seconds.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        stale_after: float = 900.0,
        heartbeat: float = 60.0,
        take_over: bool | None = None,
    ):
        if not 0 < heartbeat < stale_after:
            raise ValueError(f"need 0 < heartbeat < stale_after (seconds), got {heartbeat} and {stale_after}")
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.stale_after, self.heartbeat = stale_after, heartbeat
        if take_over is None:
            take_over = os.environ.get(TAKE_OVER_ENV, "").lower() in ("1", "true", "yes")
        self.take_over = take_over
        self.owner: LockOwner | None = None  # set while this object holds the lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        main = distributed.is_main_process()
        _, failures, own = run_agreed(self.acquire if main else lambda: None)
        if own is not None:
            raise own
        if failures:
            raise RunLockError(f"rank 0 could not lock {self.directory}: {failures[0].message}")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if distributed.is_main_process():
            self.release()

    # ------------------------------------------------------------------------- one process
    def acquire(self) -> None:
        """Take the lock (this process only), taking over one whose owner is gone; start the heartbeat."""
        if self.owner is not None:
            raise RunLockError(f"{self.path} is already held by this RunLock")
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a contender may take over or release between our attempts
            owner = LockOwner.current()
            if self._create(owner):
                self.owner, self._stop = owner, threading.Event()
                self._thread = threading.Thread(target=self._beat, name="dinov2-run-lock", daemon=True)
                self._thread.start()
                logger.info("locked %s for this run (%s)", self.directory, owner.describe())
                return
            seen = self._read()
            if seen is None:
                continue
            reason = self._stale_reason(seen)
            if reason is None:
                raise RunLockError(self._busy_message(seen))
            who = seen.owner.describe() if seen.owner else "an unreadable owner"
            logger.warning("taking over the run lock %s of %s: %s", self.path, who, reason)
            self._remove_if_unchanged(seen)
        raise RunLockError(f"could not take {self.path}: other runs keep taking it; stop them and retry")

    def release(self) -> None:
        """Stop the heartbeat and delete the lock file if it is still ours."""
        if self.owner is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        seen, owner, self.owner = self._read(), self.owner, None
        if seen is None:
            logger.warning("run lock %s was removed while this run held it", self.path)
        elif seen.owner is not None and seen.owner.token == owner.token:
            self.path.unlink(missing_ok=True)
        else:
            logger.warning("run lock %s was taken over by another run; left in place", self.path)

    def refresh(self) -> None:
        """Mark the lock as alive now (the heartbeat does it); raises if another run took it over."""
        seen = self._read()
        if self.owner is None or seen is None or seen.owner is None or seen.owner.token != self.owner.token:
            holder = seen.owner.describe() if seen is not None and seen.owner is not None else "nobody"
            raise RunLockError(f"run lock {self.path} was taken over (now held by {holder})")
        os.utime(self.path)

    # ------------------------------------------------------------------------- internals
    def _create(self, owner: LockOwner) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(dataclasses.asdict(owner)))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            self.path.unlink(missing_ok=True)  # e.g. no space left: never leave an empty lock behind
            raise
        return True

    def _read(self) -> _Seen | None:
        try:
            text, mtime = self.path.read_text(), self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        return _Seen(text, LockOwner.parse(text), time.time() - mtime)

    def _stale_reason(self, seen: _Seen) -> str | None:
        """Why the lock's owner is gone, or None if it may still run."""
        if self.take_over:
            return f"{TAKE_OVER_ENV} is set"
        owner, me = seen.owner, LockOwner.current()
        if owner is not None and owner.host == me.host and owner.pid_space == me.pid_space:
            return None if _alive(owner.pid, owner.pid_start) else f"process {owner.pid} is no longer running"
        if owner is not None and owner.slurm_job_id is not None and owner.slurm_job_id == me.slurm_job_id:
            return f"this is SLURM job {me.slurm_job_id} again (requeued); the job's old instance has ended"
        if seen.age > self.stale_after:
            return f"not refreshed for {seen.age:.0f} s (a live owner refreshes it every {self.heartbeat:.0f} s)"
        return None

    def _remove_if_unchanged(self, seen: _Seen) -> None:
        """Delete the lock we judged stale, unless a contender replaced it meanwhile (then put theirs back)."""
        aside = self.path.with_name(f"{LOCK_FILE}.stale.{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        if aside.read_text() == seen.text:
            aside.unlink()
        else:
            os.rename(aside, self.path)

    def _busy_message(self, seen: _Seen) -> str:
        who = seen.owner.describe() if seen.owner else "an owner whose lock file cannot be read"
        return (
            f"{self.directory} is in use by another training run: {who} (lock file {self.path}, refreshed "
            f"{seen.age:.0f} s ago). Two runs on one output directory overwrite each other's checkpoints: stop "
            "that run or choose another --output-dir. A lock whose run is gone is taken over automatically (on "
            f"the same host once its process has exited, from another host once it is {self.stale_after:.0f} s "
            f"old); to take it over now, set {TAKE_OVER_ENV}=1."
        )

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                self.refresh()
            except RunLockError as error:
                logger.error("%s: this run no longer owns %s", error, self.directory)
                return
            except OSError as error:
                logger.warning("could not refresh the run lock %s: %s", self.path, error)
