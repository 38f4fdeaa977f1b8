"""Keep a copy of a dense probe's checkpoint at one iteration, to resume a second run from it."""

from __future__ import annotations

import shutil
from pathlib import Path

from dinov2.eval.dense import probe as dense_probe


def keep_checkpoint_at(monkeypatch, iteration: int, copy: Path) -> None:
    """Make the probes copy their checkpoint to ``copy`` when they save it at ``iteration``."""
    saved = dense_probe.save_checkpoint

    def save_and_keep(path, head, optimizer, at):
        saved(path, head, optimizer, at)
        if at == iteration:
            shutil.copy(path, copy)

    monkeypatch.setattr(dense_probe, "save_checkpoint", save_and_keep)


def resume_folder(folder: Path, copy: Path) -> Path:
    """``folder`` holding ``copy`` as the probe checkpoint it resumes from."""
    folder.mkdir()
    shutil.copy(copy, folder / dense_probe.CHECKPOINT_NAME)
    return folder
