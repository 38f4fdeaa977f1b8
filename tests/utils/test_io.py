"""Atomic writes: the target holds the old content or the complete new one; no temporary file is left behind."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from dinov2.utils.io import atomic_path, atomic_write, atomic_write_text


@pytest.mark.parametrize("mode, data", [("wb", b"new bytes"), ("w", "new text")])
def test_atomic_write_replaces_the_file_in_one_step(tmp_path, mode, data):
    path = tmp_path / "sub" / "file.bin"
    path.parent.mkdir()
    path.write_bytes(b"old")
    with atomic_write(path, mode) as f:
        f.write(data)
        assert path.read_bytes() == b"old"  # not visible before the block ends
    assert path.read_bytes() == (data if isinstance(data, bytes) else data.encode())
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "file.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(path, "w") as f:
            f.write("half")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_atomic_path_creates_the_folder_and_renames(tmp_path):
    path = tmp_path / "a" / "b.npy"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and tmp != path
        tmp.write_bytes(b"x")
    assert path.read_bytes() == b"x" and [p.name for p in path.parent.iterdir()] == ["b.npy"]


@pytest.fixture
def umask():
    """Set the process umask for a test, restoring it afterwards."""
    import os

    saved = os.umask(0o022)
    os.umask(saved)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_mode_of_a_plain_open(tmp_path, umask, mask, expected):
    # a teacher export must be readable by an eval job of another account when the umask says so
    import torch

    from dinov2.utils.io import atomic_torch_save

    umask(mask)
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_torch_save({"w": torch.zeros(1)}, tmp_path / "b.pth")
    with atomic_path(tmp_path / "c.bin") as tmp:
        tmp.write_bytes(b"x")
    for name in ("a.txt", "b.pth", "c.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == expected, name
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "plain.txt").stat().st_mode & 0o777 == expected


def test_a_folder_generated_once_gets_the_mode_of_a_plain_mkdir(tmp_path, umask):
    from dinov2.utils.io import generate_folder_once

    umask(0o022)
    write = lambda folder: (folder / "x").write_text("1")  # noqa: E731
    root = generate_folder_once(tmp_path / "set", {"n": 1}, "MARKER.json", "test set", write)
    assert root.stat().st_mode & 0o777 == 0o755


@pytest.mark.skipif(not hasattr(signal, "SIGUSR2"), reason="no SIGUSR2 on this platform")
def test_a_stop_signal_during_an_atomic_write_waits_for_the_file(tmp_path):
    """A preemption (SIGUSR2) during a teacher export: the requeue handler runs once the file is in place."""
    target = tmp_path / "teacher_checkpoint.pth"
    seen = []

    def handler(signum, frame):
        seen.append(sorted(p.name for p in tmp_path.iterdir()))
        raise SystemExit(3)  # what submitit's requeue does

    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        with pytest.raises(SystemExit), atomic_write(target) as f:
            torch.save({"teacher": {"w": torch.ones(3)}}, f)
            os.kill(os.getpid(), signal.SIGUSR2)  # delivered now if not held back
            f.write(b"")  # more of the write after the signal
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [["teacher_checkpoint.pth"]]
    assert torch.load(target, weights_only=True)["teacher"]["w"].tolist() == [1.0, 1.0, 1.0]
