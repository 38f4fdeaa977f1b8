"""``check_writable_dir``: an output folder that cannot be made or written into is one usage error (exit code 2)
naming the flag and the folder, never a temporary file; a good folder is created and left empty."""

from __future__ import annotations

import argparse
import os

import pytest

from dinov2.utils.cli import check_writable_dir

running_as_root = hasattr(os, "geteuid") and os.geteuid() == 0


def _error(path, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        check_writable_dir(argparse.ArgumentParser(prog="tool"), path, "--output-dir")
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: tool") and "Traceback" not in err
    assert ".write-check-" not in err  # the probe file is never named
    return err


def test_a_missing_folder_is_created_and_left_empty(tmp_path):
    folder = tmp_path / "a" / "b"
    assert check_writable_dir(argparse.ArgumentParser(), folder, "--output-dir") == folder
    assert folder.is_dir() and list(folder.iterdir()) == []  # the probe file is gone
    check_writable_dir(argparse.ArgumentParser(), folder, "--output-dir")  # an existing folder is fine too
    assert list(folder.iterdir()) == []


def test_a_file_on_the_way_is_named(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    err = _error(tmp_path / "file.txt" / "out", capsys)
    assert f"--output-dir: cannot create the folder {tmp_path / 'file.txt' / 'out'}" in err
    assert f"{tmp_path / 'file.txt'} is a file, not a folder" in err
    err = _error(tmp_path / "file.txt", capsys)  # the folder itself is a file
    assert f"{tmp_path / 'file.txt'} is a file, not a folder" in err
    assert not (tmp_path / "file.txt" / "out").exists() and (tmp_path / "file.txt").read_text() == "x"


@pytest.mark.skipif(running_as_root, reason="root writes into read-only folders: chmod cannot make one here")
def test_a_read_only_folder_is_named(tmp_path, capsys):
    (tmp_path / "ro").mkdir(mode=0o500)
    try:
        err = _error(tmp_path / "ro", capsys)
        assert f"--output-dir: cannot write into the folder {tmp_path / 'ro'}: Permission denied" in err
        err = _error(tmp_path / "ro" / "new", capsys)
        assert f"--output-dir: cannot create the folder {tmp_path / 'ro' / 'new'}: Permission denied" in err
    finally:
        (tmp_path / "ro").chmod(0o700)
