"""Sharded, atomic, resumable training checkpoints and the teacher export.

Layout of one checkpoint (``Checkpointer(directory)``)::

    <directory>/model_0012499/          # iteration 12499, renamed into place when complete
        .metadata, __<rank>_0.distcp    # torch.distributed.checkpoint: models and optimizer
        extra.pt                        # rank 0: iteration, world size, plain values, stateful objects
        rng_rank00000.pt ...            # one per rank: python / numpy / torch (CPU, CUDA) RNG states
        COMPLETE                        # JSON marker: iteration, world size, size + CRC32 of every file

Writing goes to ``<directory>/ckpt_tmp_0012499`` first; after every rank has written, the ranks
checksum the files (shared among them) and rank 0 writes ``COMPLETE`` and renames the folder to
``model_0012499``. A process killed before the rename leaves only a ``ckpt_tmp_*`` folder, which
is ignored and later deleted: the previous checkpoint is untouched. Only the last ``keep``
checkpoints are kept (older ones are deleted after a new one is complete).

Failures while saving are agreed among ranks (:func:`~dinov2.train.rank_agreement.run_agreed`): every rank
raises, none waits in a collective, and the temporary folder is removed. A full disk (or quota) raises
:class:`~dinov2.train.disk_space.CheckpointDiskFullError` naming the folder, the bytes needed and free, and
the fix; it is caught before writing when the free space is below the estimate (the size of the previous
checkpoint, or the tensor bytes being saved if larger), and after the fact when a write finds no room.

Models and the optimizer go through DCP (:mod:`dinov2.train.dcp_state`), so FSDP2 (DTensor) and plain modules
are saved alike and a checkpoint loads with another number of processes (saved by 2, resumed by 1).

RNG states are per rank (:mod:`dinov2.train.rng_state`): restored exactly when the world size is unchanged,
re-seeded reproducibly per rank otherwise. Agreeing on failures among ranks is :mod:`dinov2.train.rank_agreement`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dinov2 import distributed
from dinov2.train.dcp_state import dcp_load_into, dcp_save, dcp_state_dict, split_state
from dinov2.train.disk_space import (
    CheckpointDiskFullError,
    folder_bytes,
    free_bytes,
    no_room_message,
    state_bytes,
)
from dinov2.train.rank_agreement import RankFailure, agreed_error, run_agreed
from dinov2.train.rng_state import restore_rank_rng, save_rank_rng
from dinov2.utils.io import atomic_torch_save, atomic_write_text, file_crc32, fsync_dir
from dinov2.utils.signals import stop_signals_deferred

logger = logging.getLogger("dinov2")

MARKER = "COMPLETE"
EXTRA_FILE = "extra.pt"
_FINAL = re.compile(r"^model_(\d+)$")
_TMP = re.compile(r"^ckpt_tmp_(\d+)$")


def _checksum_share(directory: Path, names: list[str]) -> dict[str, list[int]]:
    """Size and CRC32 of this rank's share of ``names`` (every world-th file)."""
    rank, world = distributed.get_global_rank(), distributed.get_global_size()
    return {name: [(directory / name).stat().st_size, file_crc32(directory / name)] for name in names[rank::world]}


@dataclasses.dataclass(frozen=True)
class _SaveJob:
    """One save in progress: where it writes, and (from rank 0) its size estimate and the free space."""

    iteration: int
    tmp: Path
    final: Path
    needed: int = 0  # bytes, estimated
    basis: str = "nothing (it failed before estimating)"  # what the estimate is
    free: int | None = None  # bytes free before writing (None: unknown)
    previous: Path | None = None  # the newest complete checkpoint, kept whatever happens

    @property
    def fits(self) -> bool:
        return self.free is None or self.free >= self.needed


@dataclasses.dataclass
class LoadedCheckpoint:
    """What :meth:`Checkpointer.load_latest` restored."""

    path: Path
    iteration: int
    world_size: int  # number of processes that saved it
    extra: dict[str, Any]  # the plain (non-module, non-stateful) values given to ``save``
    rng_restored: bool  # False when the world size changed (ranks were re-seeded instead)


class Checkpointer:
    """Save and resume training state in ``directory`` (see the module docstring for the layout).

    ``state`` (for :meth:`save` and :meth:`load_latest`) maps names to:

    - ``nn.Module``: model weights and buffers (sharded or not), e.g. ``{"model": ssl_meta_arch}``;
    - one ``torch.optim.Optimizer`` (allowed with exactly one module, the one it optimises);
    - objects with ``state_dict``/``load_state_dict`` (e.g. ``torch.amp.GradScaler``): saved by rank 0;
    - anything else (iteration counters, a config hash): plain values saved by rank 0,
      returned in :attr:`LoadedCheckpoint.extra`. They must be ``torch.load(weights_only=True)``-safe
      (tensors, numbers, strings, lists, tuples, dicts).

    Every method is collective: call it on all ranks.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        keep: int = 3,
        *,
        verify: bool = True,
        save_rng: bool = True,
        keep_every: int | None = None,
    ):
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (number of checkpoints kept), got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self.keep_every = keep_every  # DINOv3's checkpointing.keep_every: also keep every checkpoint after k*N its
        self.verify = verify
        self.save_rng = save_rng

    def path_for(self, iteration: int) -> Path:
        return self.directory / f"model_{iteration:07d}"

    def list_checkpoints(self) -> list[Path]:
        """Complete checkpoints (completion marker present), newest first. Reads the file system only."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _FINAL.match(path.name)
            if match and (path / MARKER).is_file():
                found.append((int(match.group(1)), path))
        return [path for _, path in sorted(found, reverse=True)]

    # ----------------------------------------------------------------------------------- save
    def save(self, iteration: int, state: Mapping[str, Any]) -> Path:
        """Write a checkpoint of ``state`` at ``iteration`` atomically; returns its final path.

        The cluster's stop signals (SIGUSR2: preemption or time limit, SIGTERM) are held back while it writes and
        delivered once it is done: a requeue that interrupted ``torch.save`` would otherwise turn into a failed job
        (the exit raised by submitit's handler is replaced by the half-written file's error).

        Raises :class:`CheckpointDiskFullError` on every rank when the checkpoint does not fit: before writing when
        the free space is below the estimate (the previous checkpoint's size, or the state's tensor bytes if larger),
        or after a write that found no room. Any failure leaves the previous checkpoints untouched and removes the
        temporary folder; every rank raises (an error on one rank never leaves the others waiting).
        """
        with stop_signals_deferred():
            return self._save(iteration, state)

    def _save(self, iteration: int, state: Mapping[str, Any]) -> Path:
        modules, optimizer, stateful, plain = split_state(state)
        rank = distributed.get_global_rank()
        job = _SaveJob(iteration, self.directory / f"ckpt_tmp_{iteration:07d}", self.path_for(iteration))
        dcp_state = dcp_state_dict(modules, optimizer)
        state_total = sum(distributed.all_gather_object(state_bytes(dcp_state, main_process=rank == 0)))
        job = self._step(job, lambda: self._begin(job, state_total) if rank == 0 else None)[0]
        if not job.fits:
            raise CheckpointDiskFullError(
                self._no_room_message(job, None), directory=self.directory, needed=job.needed, free=job.free
            )
        self._step(job, lambda: self._write(job, dcp_state, stateful, plain))
        names = distributed.broadcast_object(sorted(p.name for p in job.tmp.iterdir()) if rank == 0 else None)
        files: dict[str, list[int]] = {}
        if self.verify:
            for share in self._step(job, lambda: _checksum_share(job.tmp, names)):
                files.update(share)
        self._step(job, lambda: self._commit(job, names, files) if rank == 0 else None)
        if rank == 0:
            self._prune()
        return job.final

    def _begin(self, job: _SaveJob, state_total: int) -> _SaveJob:
        """Rank 0: clear leftovers, estimate the size and measure the free space; make the folder if it fits."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.directory.iterdir():  # left by processes killed while writing: they only take room
            if _TMP.match(path.name):
                shutil.rmtree(path, ignore_errors=True)
        previous = next(iter(self.list_checkpoints()), None)
        previous_bytes = folder_bytes(previous) if previous is not None else 0
        basis = "the tensor bytes of the state being saved"
        if previous is not None and previous_bytes >= state_total:
            basis = f"the size of the previous checkpoint {previous.name}"
        needed, free = max(previous_bytes, state_total), free_bytes(self.directory)
        job = dataclasses.replace(job, needed=needed, basis=basis, free=free, previous=previous)
        if job.fits:
            job.tmp.mkdir()
        return job

    def _write(self, job: _SaveJob, dcp_state: dict[str, Any], stateful: dict, plain: dict) -> None:
        """Every rank: its DCP shards and RNG state; rank 0 also the plain values and stateful objects."""
        dcp_save(dcp_state, job.tmp)  # collective: a failure on any rank raises on every rank
        if self.save_rng:
            save_rank_rng(job.tmp)
        if distributed.get_global_rank() == 0:
            extra = {
                "iteration": job.iteration,
                "world_size": distributed.get_global_size(),
                "plain": dict(plain),
                "stateful": {key: obj.state_dict() for key, obj in stateful.items()},
            }
            atomic_torch_save(extra, job.tmp / EXTRA_FILE)
            self._check_loadable(job.tmp / EXTRA_FILE, plain)

    @staticmethod
    def _check_loadable(path: Path, plain: Mapping[str, Any]) -> None:
        try:
            torch.load(path, weights_only=True)
        except Exception as error:
            raise TypeError(
                f"checkpoint values {sorted(plain)} must be loadable with torch.load(weights_only=True) "
                f"(tensors, numbers, strings, lists, dicts); convert other objects first: {error}"
            ) from error

    def _commit(self, job: _SaveJob, names: list[str], files: dict[str, list[int]]) -> None:
        """Rank 0: write the completion marker and rename the folder into place."""
        marker = {
            "iteration": job.iteration,
            "world_size": distributed.get_global_size(),
            "files": files,
            "names": names,
            "torch": torch.__version__,
            "time": time.time(),
        }
        atomic_write_text(job.tmp / MARKER, json.dumps(marker))
        if job.final.exists():
            logger.warning("replacing existing checkpoint %s", job.final)
            shutil.rmtree(job.final)
        os.rename(job.tmp, job.final)
        fsync_dir(self.directory)
        logger.info("saved checkpoint %s", job.final)

    def _step(self, job: _SaveJob, fn: Callable[[], Any]) -> list[Any]:
        """``fn()`` on every rank, results by rank; on a failure anywhere: remove the temporary folder, raise."""
        results, failures, own = run_agreed(fn)
        if not failures:
            return results
        if distributed.is_main_process():
            shutil.rmtree(job.tmp, ignore_errors=True)
        no_room = next((failure for failure in failures if failure.disk_full), None)
        if no_room is not None:
            message = self._no_room_message(job, no_room)
            raise CheckpointDiskFullError(message, directory=self.directory, needed=job.needed, free=job.free) from own
        if own is not None:
            raise own
        failure = failures[0]
        raise RuntimeError(f"checkpoint {job.final} was not saved: rank {failure.rank} failed: {failure.message}")

    def _no_room_message(self, job: _SaveJob, failure: RankFailure | None) -> str:
        return no_room_message(
            job.final.name,
            self.directory,
            needed=job.needed,
            basis=job.basis,
            free=job.free,
            previous=job.previous,
            keep=self.keep,
            failed_write=None if failure is None else (failure.rank, failure.message, job.tmp.name),
        )

    def _kept_forever(self, path: Path) -> bool:
        """Saved after a multiple of ``keep_every`` iterations (``model_<iteration>``: iteration + 1 done)."""
        return bool(self.keep_every) and (int(_FINAL.match(path.name).group(1)) + 1) % self.keep_every == 0

    def _prune(self) -> None:
        for old in self.list_checkpoints()[self.keep :]:
            if not self._kept_forever(old):
                shutil.rmtree(old, ignore_errors=True)
        for path in self.directory.iterdir():
            if _TMP.match(path.name):
                shutil.rmtree(path, ignore_errors=True)

    # ----------------------------------------------------------------------------------- load
    def load_latest(self, state: Mapping[str, Any]) -> LoadedCheckpoint | None:
        """Restore the newest checkpoint that verifies and loads into ``state``; None if there is none.

        A checkpoint that fails (checksum, missing file, load error) is reported with
        ``logging.warning`` and the previous one is tried. If checkpoints exist but none loads, raises
        ``RuntimeError`` rather than silently starting afresh.
        """
        candidates = distributed.broadcast_object(self.list_checkpoints() if distributed.is_main_process() else None)
        failures = []
        for path in candidates:
            result = self._try_load(path, state)
            if isinstance(result, LoadedCheckpoint):
                logger.info("resumed from %s (iteration %d)", path, result.iteration)
                return result
            logger.warning("checkpoint %s cannot be used (%s); trying the previous one", path, result)
            failures.append(f"{path}: {result}")
        if failures:
            raise RuntimeError(
                "no checkpoint could be loaded:\n  "
                + "\n  ".join(failures)
                + "\nremove the broken folders or start afresh with --no-resume"
            )
        return None

    def load(self, path: str | os.PathLike, state: Mapping[str, Any]) -> LoadedCheckpoint:
        """Restore the checkpoint at ``path`` into ``state`` (raises ``RuntimeError`` if it cannot)."""
        result = self._try_load(Path(path), state)
        if not isinstance(result, LoadedCheckpoint):
            raise RuntimeError(f"checkpoint {path} cannot be used: {result}")
        return result

    def _try_load(self, path: Path, state: Mapping[str, Any]) -> LoadedCheckpoint | str:
        """A LoadedCheckpoint, or the (rank-agreed) error message."""
        error = agreed_error(lambda: self._verify_share(path))
        if error is None:
            result: list[LoadedCheckpoint] = []
            error = agreed_error(lambda: result.append(self._restore(path, state)))
            if error is None:
                return result[0]
        return error

    def _verify_share(self, path: Path) -> None:
        marker = json.loads((path / MARKER).read_text())
        names = marker["names"]
        missing = [name for name in names if not (path / name).is_file()]
        if missing:
            raise FileNotFoundError(f"missing files {missing}")
        rank, world = distributed.get_global_rank(), distributed.get_global_size()
        for name in sorted(marker["files"])[rank::world]:
            size, crc = marker["files"][name]
            actual = (path / name).stat().st_size
            if actual != size or file_crc32(path / name) != crc:
                raise OSError(f"{path / name} is corrupted (size {actual}, expected {size}; checksum mismatch)")

    def _restore(self, path: Path, state: Mapping[str, Any]) -> LoadedCheckpoint:
        modules, optimizer, stateful, _ = split_state(state)
        dcp_load_into(modules, optimizer, path)
        extra = torch.load(path / EXTRA_FILE, weights_only=True)
        for key, obj in stateful.items():
            if key not in extra["stateful"]:
                raise KeyError(f"checkpoint has no state for {key!r} (it has {sorted(extra['stateful'])})")
            obj.load_state_dict(extra["stateful"][key])
        rng_restored = self.save_rng and restore_rank_rng(path, extra["world_size"], extra["iteration"])
        return LoadedCheckpoint(path, extra["iteration"], extra["world_size"], extra["plain"], rng_restored)


def export_teacher(path: str | os.PathLike, teacher: nn.Module | Mapping[str, torch.Tensor]) -> Path:
    """Write ``{"teacher": full state dict}`` to ``path`` atomically (rank 0; others only gather).

    ``teacher`` is the teacher module (sharded or not: its full tensors are gathered to rank 0 on
    CPU, a collective call) or an already full state dict. This is the ``teacher_checkpoint.pth`` the
    evaluation scripts read.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    path = Path(path)
    if isinstance(teacher, nn.Module):
        # torch keeps offloaded full tensors on global rank 0 only; in a subgroup scope its rank 0 may be another
        # process, so there every member gathers the full tensors and the writer copies them to the CPU.
        offload = distributed.current_group() is None
        options = StateDictOptions(full_state_dict=True, cpu_offload=offload)
        state_dict = get_model_state_dict(teacher, options=options)
        if not offload:
            main = distributed.is_main_process()
            state_dict = {key: value.cpu() for key, value in state_dict.items()} if main else {}
    else:
        state_dict = dict(teacher)
    if distributed.is_main_process():
        atomic_torch_save({"teacher": state_dict}, path)
        logger.info("exported teacher weights to %s", path)
    distributed.barrier()
    return path
