"""The distillation teacher's file is read through :mod:`dinov2.models.weights` and opened once per start: the
shapes checked before any model is built, the tensors loaded into the teacher and the fingerprint saved with every
checkpoint all come from one opening (and one pass of the CRC over the bytes)."""

from __future__ import annotations

import os
import time

import pytest

from dinov2.models import weights
from dinov2.train.checkpointing import Checkpointer
from dinov2.train.meta_archs import build_meta_arch
from tests.train.distillation.tiny_distill import distill_cfg, teacher_run


@pytest.fixture
def reads(monkeypatch):
    """Spies on the functions that open a weights source and that hash a file's bytes (the real ones run)."""
    calls = {"open": [], "crc32": []}
    real_open, real_crc32 = weights._open, weights.file_crc32

    def spy_open(path):
        calls["open"].append(path)
        return real_open(path)

    def spy_crc32(path):
        calls["crc32"].append(path)
        return real_crc32(path)

    monkeypatch.setattr(weights, "_open", spy_open)
    monkeypatch.setattr(weights, "file_crc32", spy_crc32)
    return calls


def _backdate(path) -> None:
    """A teacher written a minute ago (a fresh file is never kept open: its timestamp could not tell a rewrite)."""
    past = time.time() - 60
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        os.utime(file, (past, past))


@pytest.mark.parametrize("source", ["export", "checkpoint folder"])
def test_the_teacher_file_is_opened_once_per_start(tmp_path, reads, source):
    teacher_config, export, ssl = teacher_run(tmp_path, "ibot.separate_head=true")
    path = export if source == "export" else Checkpointer(tmp_path / "ckpt").save(3, {"model": ssl})
    _backdate(path)
    model = build_meta_arch(distill_cfg(tmp_path / "student", teacher_config, path, "ibot.separate_head=true"))
    assert reads["open"] == [path]
    assert reads["crc32"] == [path if source == "export" else path / "COMPLETE"]
    assert model.teacher_strategy.teacher_file.state_dict() == weights.fingerprint(path)
    state, expected = model.teacher.state_dict(), ssl.teacher.state_dict()
    assert state.keys() == expected.keys() and all((state[k] == v).all() for k, v in expected.items())
