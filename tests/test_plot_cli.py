"""``python -m dinov2.plot``: an output file whose folder cannot be made is a usage error before any run is read
(no matplotlib needed: the check comes first); so is a folder that is not a run, or whose metrics file is damaged."""

from __future__ import annotations

import pytest

import dinov2.plot


def test_an_unwritable_output_folder_is_a_usage_error_before_reading_runs(tmp_path, monkeypatch, capsys):
    read = []
    monkeypatch.setattr(dinov2.plot, "read_run", lambda *a, **k: read.append(a) or pytest.fail("read"))
    (tmp_path / "file.txt").write_text("not a folder")
    output = tmp_path / "file.txt" / "plots" / "curves.png"  # fails for root too, unlike a chmod 0o500 folder
    with pytest.raises(SystemExit) as exit_:
        dinov2.plot.main([str(tmp_path), "--output", str(output)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert f"--output: cannot create the folder {output.parent}" in err and ".write-check-" not in err
    assert read == []


def test_a_folder_that_is_not_a_run_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "training_metrics.json").write_text('{"iteration": 0, "lr": 1.0}\n{"iteration": 1, "lr"')
    for folder, says in (("missing", "does not exist"), (".", "not a run folder"), ("damaged", "not a JSON object")):
        with pytest.raises(SystemExit) as exit_:
            dinov2.plot.main([str(tmp_path / folder), "--output", str(tmp_path / "out" / "curves.png")])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "Traceback" not in err
        assert "runs: " in err and says in err
