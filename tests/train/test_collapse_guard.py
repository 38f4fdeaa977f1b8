"""The collapse guard: it stops a deliberately broken run (a teacher temperature far too high: uniform targets)
before writing any checkpoint of it, and stays quiet on a healthy run (``tests/train/test_adapt_warmup.py``)."""

from __future__ import annotations

import logging

import pytest
from omegaconf import OmegaConf

from dinov2.train.collapse_guard import CollapseDetected, CollapseGuard
from tests.train.test_adapt_warmup import GUARD, _run, pretrained  # noqa: F401 (module fixture)
from tests.train.test_train_loop import StopAfter

HOT_TEACHER = ["teacher.teacher_temp=100.0", "teacher.warmup_teacher_temp=100.0"]


def _section(**values) -> OmegaConf:
    keys = ("max_target_entropy", "min_target_perplexity", "min_cls_std", "min_cls_effective_rank", "max_knn_drop")
    return OmegaConf.create({"period_iterations": 2, "action": "warn", **dict.fromkeys(keys), **values})


def test_a_too_hot_teacher_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, pretrained):  # noqa: F811
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _run(out, pretrained[0], *GUARD, history=StopAfter(4))  # healthy up to the checkpoint of iteration 3
    with pytest.raises(CollapseDetected) as stopped:
        _run(out, pretrained[0], *GUARD, *HOT_TEACHER)
    error = stopped.value
    assert (error.signal, error.threshold, error.iteration) == ("target_entropy", 0.98, 5)
    assert error.value > 0.999
    assert "target_entropy=" in str(error) and "adapt.collapse_guard.max_target_entropy=0.98" in str(error)
    assert sorted(p.name for p in out.glob("model_*")) == ["model_0000001", "model_0000003"]
    assert not (out / "eval" / "training_5").exists()


def test_warn_logs_every_crossing_and_the_config_is_checked(caplog):
    guard = CollapseGuard(_section(min_cls_std=0.5, max_knn_drop=5.0))
    assert guard.due(1) and not guard.due(2)
    with caplog.at_level(logging.WARNING, logger="dinov2"):
        crossings = guard.check(7, {"cls_std": 0.1, "knn_drop": 2.0, "target_entropy": 1.0})
    assert crossings == ["collapse guard at iteration 7: cls_std=0.1 < adapt.collapse_guard.min_cls_std=0.5"]
    assert "action=warn: training goes on" in caplog.text
    assert CollapseGuard(_section(min_cls_std=0.5), head_warmup_iterations=8).check(7, {"cls_std": 0.1}) == []
    with pytest.raises(ValueError, match="action='halt'"):
        CollapseGuard(_section(action="halt"))
