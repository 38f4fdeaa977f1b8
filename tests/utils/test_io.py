"""Atomic writes: the target holds the old content or the complete new one; no temporary file is left behind."""

from __future__ import annotations

import pytest

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
