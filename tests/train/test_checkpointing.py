"""Checkpointer: exact round trip and resume, keep-last-N, killed writer, corruption, resharding 2 -> 1.

Tolerances: a round trip in one process restores bytes, so weights, optimizer state, RNG draws and
the continued training are compared exactly. Loading a 2-process checkpoint in 1 process restores
the same bytes too; the step after it differs from the 2-process step only by the reduction order
(rtol 1e-5 / atol 2e-6 as in tests/distributed/test_sharding.py).
"""

from __future__ import annotations

import copy
import errno
import io
import json
import logging
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dinov2.distributed.sharding import shard_model
from dinov2.train import checkpointing
from dinov2.train.checkpointing import Checkpointer, export_teacher
from dinov2.train.disk_space import CheckpointDiskFullError, is_disk_full
from tests.conftest import REPO_ROOT
from tests.dist_helpers import run_distributed
from tests.distributed import tiny_models as tm


def _setup(seed: int = 0):
    student, teacher = tm.build(seed=seed)
    model = nn.ModuleDict({"student": student, "teacher": teacher})
    model.register_buffer("center", torch.zeros(1, tm.OUT_DIM))  # like the DINO loss centre
    optimizer = tm.make_optimizer(student)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    return model, optimizer, scaler


def _state(model, optimizer, scaler, position: int = 0):
    return {"model": model, "optimizer": optimizer, "scaler": scaler, "sampler_position": position, "cfg": "abc"}


def _train(model, optimizer, batches, rank=0, world=1):
    return tm.train(model["student"], model["teacher"], batches, rank, world, optimizer=optimizer)["losses"]


def _draws():
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist())


def _assert_same_model(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_round_trip_restores_everything_and_resumes_exactly(tmp_path):
    model, optimizer, scaler = _setup()
    batches = tm.global_batches(4)
    _train(model, optimizer, batches[:2])
    model.center.fill_(0.5)
    scaler.scale(torch.ones(()))  # initialises the scale lazily
    scaler.update(1234.0)
    ckpt = Checkpointer(tmp_path)
    ckpt.save(2, _state(model, optimizer, scaler, position=77))
    expected_draws = _draws()
    expected_losses = _train(model, optimizer, batches[2:])

    model2, optimizer2, scaler2 = _setup(seed=5)
    torch.manual_seed(99)
    loaded = ckpt.load_latest(_state(model2, optimizer2, scaler2))
    assert (loaded.iteration, loaded.world_size, loaded.rng_restored) == (2, 1, True)
    assert loaded.extra == {"sampler_position": 77, "cfg": "abc"}
    assert scaler2.get_scale() == 1234.0 and torch.equal(model2.center, torch.full((1, tm.OUT_DIM), 0.5))
    assert _draws() == expected_draws
    assert _train(model2, optimizer2, batches[2:]) == expected_losses  # exact resume
    _assert_same_model(model, model2)


def test_keeps_the_last_three(tmp_path):
    model, optimizer, scaler = _setup()
    ckpt = Checkpointer(tmp_path, keep=3)
    for iteration in range(1, 6):
        ckpt.save(iteration, _state(model, optimizer, scaler))
    assert [p.name for p in ckpt.list_checkpoints()] == ["model_0000005", "model_0000004", "model_0000003"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0000003", "model_0000004", "model_0000005"]


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 on this platform")
def test_a_preemption_signal_during_a_save_waits_for_the_checkpoint(tmp_path, monkeypatch):
    """SLURM's SIGUSR2 arriving while DCP writes: the handler (submitit's requeue exits) runs once the checkpoint is
    complete, instead of interrupting ``torch.save`` and turning the requeue into a half-written file's error."""
    model, optimizer, scaler = _setup()
    ckpt = Checkpointer(tmp_path)
    seen = []

    def handler(signum, frame):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        raise SystemExit(3)  # what submitit's local requeue does

    def dcp_save_preempted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGUSR2)  # delivered now if not held back
        return real_dcp_save(*args, **kwargs)

    real_dcp_save = checkpointing.dcp_save
    monkeypatch.setattr(checkpointing, "dcp_save", dcp_save_preempted)
    previous = signal.signal(signal.SIGUSR2, handler)
    done = threading.Event()
    other = threading.Thread(target=done.wait, daemon=True)  # a trainer has other threads the signal may reach
    other.start()
    try:
        with pytest.raises(SystemExit):
            ckpt.save(4, _state(model, optimizer, scaler))
    finally:
        done.set()
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [["model_0000004"]]  # the handler ran after the checkpoint was committed
    assert ckpt.load_latest(_state(*_setup(seed=5))).iteration == 4


def test_process_killed_while_writing_leaves_previous_checkpoint(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from tests.train.test_checkpointing import _setup, _state
        import dinov2.train.checkpointing as c
        model, optimizer, scaler = _setup()
        ckpt = c.Checkpointer({str(tmp_path)!r})
        ckpt.save(1, _state(model, optimizer, scaler, position=1))
        c.os.rename = lambda *args: os._exit(3)  # die after writing, before the folder is renamed
        ckpt.save(2, _state(model, optimizer, scaler, position=2))
        """
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert process.returncode == 3, process.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_tmp_0000002", "model_0000001"]

    model, optimizer, scaler = _setup(seed=3)
    ckpt = Checkpointer(tmp_path)
    loaded = ckpt.load_latest(_state(model, optimizer, scaler))
    assert (loaded.iteration, loaded.extra["sampler_position"]) == (1, 1)
    _assert_same_model(model, _setup()[0])
    ckpt.save(2, _state(model, optimizer, scaler))  # the next save replaces the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_0000001", "model_0000002"]


@pytest.mark.parametrize("verify", [True, False])
def test_corrupted_latest_is_reported_and_previous_used(tmp_path, caplog, verify):
    model, optimizer, scaler = _setup()
    ckpt = Checkpointer(tmp_path, verify=verify)
    ckpt.save(1, _state(model, optimizer, scaler, position=1))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, optimizer, tm.global_batches(1))
    ckpt.save(2, _state(model, optimizer, scaler, position=2))
    shard = next((tmp_path / "model_0000002").glob("*.distcp"))
    data = shard.read_bytes()
    # verify=True must catch a flipped byte; without checksums a truncated file must still fail to load
    shard.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:] if verify else data[: len(data) // 2])

    fresh, fresh_optimizer, fresh_scaler = _setup(seed=4)
    with caplog.at_level(logging.WARNING, logger="dinov2"):
        loaded = ckpt.load_latest(_state(fresh, fresh_optimizer, fresh_scaler))
    assert loaded.iteration == 1
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1 and str(tmp_path / "model_0000002") in warning[0]
    for key, value in saved.items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_incomplete_and_unloadable_checkpoints(tmp_path):
    model, optimizer, scaler = _setup()
    ckpt = Checkpointer(tmp_path)
    assert ckpt.load_latest(_state(model, optimizer, scaler)) is None
    ckpt.save(1, _state(model, optimizer, scaler))
    (tmp_path / "model_0000009").mkdir()  # no completion marker: not a checkpoint
    assert ckpt.list_checkpoints() == [tmp_path / "model_0000001"]
    (tmp_path / "model_0000001" / "extra.pt").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="(?s)no checkpoint could be loaded.*--no-resume"):
        ckpt.load_latest(_state(model, optimizer, scaler))
    with pytest.raises(TypeError, match="weights_only"):
        ckpt.save(2, {"model": model, "bad": object()})


def test_export_teacher_single_process(tmp_path):
    model, _, _ = _setup()
    path = export_teacher(tmp_path / "eval" / "training_9" / "teacher_checkpoint.pth", model["teacher"])
    exported = torch.load(path, weights_only=True)
    assert list(exported) == ["teacher"]
    _assert_same_model(model["teacher"], _load_into(tm.build(seed=7)[1], exported["teacher"]))


def _load_into(module, state_dict):
    module.load_state_dict(state_dict)
    return module


def _sharded_save_then_resume(rank: int, world: int, directory: str) -> dict:
    """Train 2 steps FULL_SHARD, checkpoint, train 1 more; then a fresh sharded model resumes."""
    batches = tm.global_batches(3)

    def sharded_setup(seed):
        model, _, scaler = _setup(seed)
        shard_model(
            {"student": model["student"], "teacher": model["teacher"]}, tm.precision_cfg("FULL_SHARD"), device="cpu"
        )
        return model, tm.make_optimizer(model["student"]), scaler

    model, optimizer, scaler = sharded_setup(0)
    _train(model, optimizer, batches[:2], rank, world)
    ckpt = Checkpointer(directory)
    ckpt.save(2, _state(model, optimizer, scaler, position=16))
    saved = {"student": tm.full_state(model["student"]), "teacher": tm.full_state(model["teacher"])}
    continued = _train(model, optimizer, batches[2:], rank, world)
    export_teacher(f"{directory}/teacher_checkpoint.pth", model["teacher"])

    model2, optimizer2, scaler2 = sharded_setup(1)
    loaded = ckpt.load_latest(_state(model2, optimizer2, scaler2))
    resumed = _train(model2, optimizer2, batches[2:], rank, world)
    return {
        "saved": saved,
        "continued": continued,
        "resumed": resumed,
        "rng_restored": loaded.rng_restored,
        "final_teacher": tm.full_state(model["teacher"]),
        "final_student": tm.full_state(model["student"]),
    }


@tm.requires_cpu_fsdp
def test_saved_by_two_processes_resumed_by_one(tmp_path):
    results = run_distributed(_sharded_save_then_resume, 2, str(tmp_path))
    rank0 = results[0]
    assert rank0["resumed"] == rank0["continued"] and all(r["rng_restored"] for r in results)  # exact, 2 -> 2

    model, optimizer, scaler = _setup(seed=3)
    loaded = Checkpointer(tmp_path).load_latest(_state(model, optimizer, scaler))
    assert (loaded.iteration, loaded.world_size, loaded.rng_restored) == (2, 2, False)
    for role in ("student", "teacher"):
        for key, value in tm.full_state(model[role]).items():
            np.testing.assert_array_equal(value, rank0["saved"][role][key], err_msg=f"{role}.{key}")
    losses = _train(model, optimizer, tm.global_batches(3)[2:])  # optimizer state came along too
    np.testing.assert_allclose(losses, rank0["continued"], rtol=2e-6)
    for role in ("student", "teacher"):
        for key, value in tm.full_state(model[role]).items():
            np.testing.assert_allclose(
                value, rank0[f"final_{role}"][key], rtol=1e-5, atol=2e-6, err_msg=f"{role}.{key}"
            )
    exported = torch.load(tmp_path / "teacher_checkpoint.pth", weights_only=True)["teacher"]
    for key, value in rank0["final_teacher"].items():
        np.testing.assert_array_equal(exported[key].numpy(), value)


# ------------------------------------------------------------------------------------------- disk full
class _Budgeted:
    """A file opened for writing on a :class:`LimitedDisk`: a write beyond the budget is cut short, then fails."""

    def __init__(self, file, disk: LimitedDisk):
        self._file, self._disk = file, disk

    def write(self, data):
        view = data.encode() if isinstance(data, str) else memoryview(data).cast("B")
        if len(view) > self._disk.left:
            self._file.write(data[: self._disk.left] if isinstance(data, str) else view[: self._disk.left])
            self._disk.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.left -= len(view)
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return self._file.__exit__(*exc_info)


class LimitedDisk:
    """``with LimitedDisk(budget):`` the disk has ``budget`` bytes left for files whose name contains ``match``.

    It wraps ``io.open``, through which DCP's streams (``Path.open``), ``torch.save`` into files and
    ``dinov2.utils.io.atomic_write`` (``os.fdopen``) all open their files; ``opened`` lists every file opened
    for writing.
    """

    def __init__(self, budget: int, match: str = ""):
        self.left, self.match, self.opened = budget, match, []

    def __enter__(self) -> LimitedDisk:
        self._real_open = io.open
        io.open = self._open
        return self

    def __exit__(self, *exc_info) -> None:
        io.open = self._real_open

    def _open(self, file, mode="r", *args, **kwargs):
        opened = self._real_open(file, mode, *args, **kwargs)
        if not any(flag in mode for flag in "wax+"):
            return opened
        name = os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else str(file)  # os.fdopen: a fd
        self.opened.append(name)
        return _Budgeted(opened, self) if self.match in name else opened


def _file_sizes(path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in path.iterdir()}


def _budget_inside(sizes: dict[str, int], target: str) -> int:
    """Bytes that let every file written before ``target`` through, and half of ``target``."""
    order = [name for name in sizes if name.endswith(".distcp")] + [".metadata", "rng_rank00000.pt", "extra.pt"]
    before = order[: order.index(target)] if target in order else order
    return sum(sizes[name] for name in before) + sizes[target] // 2


def _assert_previous_intact(directory, model):
    assert sorted(p.name for p in directory.iterdir()) == ["model_0000001"]  # no ckpt_tmp_* left
    fresh, fresh_optimizer, fresh_scaler = _setup(seed=6)
    loaded = Checkpointer(directory).load_latest(_state(fresh, fresh_optimizer, fresh_scaler))
    assert (loaded.iteration, loaded.extra["sampler_position"]) == (1, 1)
    _assert_same_model(fresh, model)


@pytest.mark.parametrize("target", ["shard", ".metadata", "rng_rank00000.pt", "extra.pt", "COMPLETE"])
def test_disk_full_while_writing_keeps_the_previous_checkpoint(tmp_path, target):
    model, optimizer, scaler = _setup()
    ckpt = Checkpointer(tmp_path, keep=2)
    ckpt.save(1, _state(model, optimizer, scaler, position=1))
    saved = copy.deepcopy(model)
    sizes = _file_sizes(tmp_path / "model_0000001")
    shard = next(name for name in sizes if name.endswith(".distcp"))
    budget = sum(sizes.values()) - sizes["COMPLETE"] // 2 if target == "COMPLETE" else None
    budget = budget or _budget_inside(sizes, shard if target == "shard" else target)
    with LimitedDisk(budget), pytest.raises(CheckpointDiskFullError) as caught:
        ckpt.save(2, _state(model, optimizer, scaler, position=2))
    error = caught.value
    assert isinstance(error, OSError) and error.errno == errno.ENOSPC
    assert (error.directory, error.needed) == (tmp_path, sum(sizes.values()))
    assert error.free is not None and error.free > error.needed  # the estimate fitted: caught after the fact
    message = str(error)
    for part in (
        f"checkpoint model_0000002 does not fit on the disk of {tmp_path}",
        "writing ran out of space on rank 0",
        f"free before writing (estimate: {sum(sizes.values())} bytes",
        "estimated from the size of the previous checkpoint model_0000001",
        "ckpt_tmp_0000002 was removed",
        f"previous checkpoint {tmp_path / 'model_0000001'} is intact",
        "move --output-dir",
        "lower checkpointing.max_to_keep (now 2",
    ):
        assert part in message, (part, message)
    _assert_previous_intact(tmp_path, saved)
    ckpt.save(2, _state(model, optimizer, scaler, position=2))  # with room again, the save works
    assert [p.name for p in ckpt.list_checkpoints()] == ["model_0000002", "model_0000001"]
    assert ckpt.load_latest(_state(*_setup(seed=8))).iteration == 2


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    model, optimizer, scaler = _setup()
    _train(model, optimizer, tm.global_batches(1))  # AdamW state exists: the state is larger than the weights
    ckpt = Checkpointer(tmp_path, keep=1)
    # no previous checkpoint: the estimate is the tensor bytes of model and optimizer state
    expected = sum(t.nbytes for t in model.state_dict().values())
    expected += sum(v.nbytes for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    monkeypatch.setattr(checkpointing, "free_bytes", lambda path: expected - 1)
    with LimitedDisk(1 << 40) as disk, pytest.raises(CheckpointDiskFullError) as caught:
        ckpt.save(1, _state(model, optimizer, scaler))
    assert disk.opened == [] and list(tmp_path.iterdir()) == []  # nothing written, no temporary folder
    assert (caught.value.needed, caught.value.free) == (expected, expected - 1)
    message = str(caught.value)
    assert f"needs about {expected} bytes" in message and "tensor bytes of the state being saved" in message
    assert f"but only {expected - 1} bytes" in message and "nothing was written" in message
    assert "no previous checkpoint" in message and "max_to_keep" not in message  # keep=1 cannot go lower

    monkeypatch.setattr(checkpointing, "free_bytes", lambda path: None)  # unknown: no pre-check
    ckpt.save(1, _state(model, optimizer, scaler, position=1))
    size = sum(_file_sizes(tmp_path / "model_0000001").values())
    assert size > expected  # the estimate is a lower bound: file headers come on top
    monkeypatch.setattr(checkpointing, "free_bytes", lambda path: size - 1)
    with pytest.raises(CheckpointDiskFullError, match="estimated from the size of the previous checkpoint"):
        ckpt.save(2, _state(model, optimizer, scaler))
    _assert_previous_intact(tmp_path, model)


def test_is_disk_full_recognises_what_torch_and_dcp_raise():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"))
    wrapped = RuntimeError("outer")
    wrapped.__context__ = OSError(errno.ENOSPC, "x")
    assert is_disk_full(wrapped)
    from torch.distributed.checkpoint.api import CheckpointException

    assert is_disk_full(CheckpointException("save failed", {1: (OSError(errno.ENOSPC, "x"), None)}))
    assert not is_disk_full(PermissionError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(CheckpointException("save failed", {0: (ValueError("bad"), None)}))
    error = pickle.loads(pickle.dumps(CheckpointDiskFullError("msg", directory="/d", needed=3, free=None)))
    assert (str(error), error.errno, error.directory, error.needed, error.free) == (
        "msg",
        errno.ENOSPC,
        Path("/d"),
        3,
        None,
    )


def _disk_full_on_rank_one(rank: int, world: int, directory: str) -> dict:
    """Rank 1 alone cannot write its RNG file: both ranks must raise the same error and the save must vanish."""
    model, optimizer, scaler = _setup()
    ckpt = Checkpointer(directory)
    ckpt.save(1, _state(model, optimizer, scaler, position=1))
    out = {}
    with LimitedDisk(0 if rank == 1 else 1 << 40, match="rng_rank"):
        try:
            ckpt.save(2, _state(model, optimizer, scaler, position=2))
        except CheckpointDiskFullError as error:
            out["error"] = str(error)
    torch.distributed.barrier()
    out["listing"] = sorted(p.name for p in Path(directory).iterdir())
    fresh = _setup(seed=5)
    out["resumed"] = ckpt.load_latest(_state(*fresh)).iteration
    ckpt.save(2, _state(model, optimizer, scaler, position=2))
    out["after"] = [p.name for p in ckpt.list_checkpoints()]
    return out


@pytest.mark.slow
def test_disk_full_on_one_rank_stops_every_rank(tmp_path):
    results = run_distributed(_disk_full_on_rank_one, 2, str(tmp_path))
    for result in results:
        assert "writing ran out of space on rank 1" in result["error"] and "No space left on device" in result["error"]
        assert result["listing"] == ["model_0000001"] and result["resumed"] == 1
        assert result["after"] == ["model_0000002", "model_0000001"]
    assert results[0]["error"] == results[1]["error"]


_TMPFS_SCRIPT = """
import json, shutil, sys
from pathlib import Path
import torch
from torch import nn
from dinov2.train.checkpointing import Checkpointer
from dinov2.train.disk_space import CheckpointDiskFullError

def try_save(state):
    try:
        ckpt.save(2, state)
    except CheckpointDiskFullError as error:
        return [str(error), error.needed, sorted(p.name for p in directory.iterdir())]

directory = Path(sys.argv[1])
ckpt, out = Checkpointer(directory), {}
small = nn.Linear(8, 8)
ckpt.save(1, {"model": small})
out["first"] = sorted(p.name for p in directory.iterdir())
# 400 one-element tensors: 3 KiB of values, but ~1 KiB of zip headers each once written: the estimate is wrong
many = nn.ParameterList([nn.Parameter(torch.full((1,), float(i))) for i in range(400)])
out["after"] = try_save({"model": many})
junk = directory / "junk"  # leave room for half the previous checkpoint: refused before writing
junk.write_bytes(bytes(shutil.disk_usage(directory).free - out["after"][1] // 2))
out["before"] = try_save({"model": small})
loaded = nn.Linear(8, 8)
out["resumed"] = ckpt.load_latest({"model": loaded}).iteration
out["same"] = all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), small.state_dict().values()))
junk.unlink()
ckpt.save(2, {"model": small})
out["last"] = [p.name for p in ckpt.list_checkpoints()]
print(json.dumps(out))
"""


@pytest.mark.skipif(sys.platform != "linux" or shutil.which("unshare") is None, reason="needs Linux unshare(1)")
def test_real_full_tmpfs(tmp_path):
    """A real 256 KiB tmpfs, mounted in a user and mount namespace (no root needed where those are allowed)."""
    mount_point = tmp_path / "fs"
    mount_point.mkdir()
    mount = f"mount -t tmpfs -o size=256k tmpfs {mount_point}"
    probe = subprocess.run(["unshare", "-Urm", "sh", "-c", mount], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr.strip()}")
    command = f'{mount} && exec {sys.executable} -c "$0" {mount_point}'
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", command, _TMPFS_SCRIPT], capture_output=True, text=True, timeout=300, env=env
    )
    assert process.returncode == 0, process.stderr
    out = json.loads(process.stdout.splitlines()[-1])
    assert out["first"] == ["model_0000001"]
    message, _, listing = out["after"]  # the estimate (the previous checkpoint) fitted; the writes did not
    assert listing == ["model_0000001"], message
    assert "writing ran out of space" in message and "It needs more than the" in message, message
    assert "ckpt_tmp_0000002 was removed" in message and f"{mount_point}/model_0000001 is intact" in message
    message, _, listing = out["before"]
    assert "nothing was written" in message and listing == ["junk", "model_0000001"], message
    assert out["resumed"] == 1 and out["same"]
    assert out["last"] == ["model_0000002", "model_0000001"]


def test_a_preemption_exit_inside_a_dcp_save_is_not_swallowed(tmp_path, monkeypatch):
    """submitit's SIGUSR2 handler exits (code 144: requeue me) wherever it lands, also inside DCP's file writer,
    which wraps every error in a CheckpointException: the exit must come through, or the job is not requeued."""
    import torch.distributed.checkpoint.filesystem as dcp_filesystem

    from dinov2.train.dcp_state import dcp_save

    def preempted(*args, **kwargs):
        raise SystemExit(144)

    monkeypatch.setattr(dcp_filesystem, "_write_item", preempted)
    with pytest.raises(SystemExit) as caught:
        dcp_save({"model": {"w": torch.zeros(3)}}, tmp_path / "ckpt")
    assert caught.value.code == 144
