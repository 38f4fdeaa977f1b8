"""Logger set-up, smoothed values and the MetricLogger (log lines, JSON lines, cross-process sums)."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from dinov2.logging import MetricLogger, SmoothedValue, setup_logging
from dinov2.utils.config import default_setup
from tests.dist_helpers import run_distributed


def test_setup_logging_twice_has_no_duplicate_handlers(tmp_path, restore_logging):
    setup_logging(output=str(tmp_path))
    setup_logging(output=str(tmp_path))
    logger = logging.getLogger("dinov2")
    assert len(logger.handlers) == 2  # console + file, once each
    assert not logger.propagate and logger.level == logging.INFO
    logger.info("hello once")
    logger.debug("hidden")
    text = (tmp_path / "logs" / "log.txt").read_text()
    assert text.count("hello once") == 1 and "hidden" not in text
    assert "dinov2 test_logging.py:" in text  # format: level, time, pid, logger, file:line


def test_setup_logging_to_a_file_and_captured_warnings(tmp_path, restore_logging):
    log_file = tmp_path / "run.log"
    setup_logging(output=str(log_file), level=logging.DEBUG)
    logging.getLogger("dinov2").debug("debug line")
    warnings.warn("careful", UserWarning, stacklevel=1)
    text = log_file.read_text()
    assert "debug line" in text and "UserWarning: careful" in text
    setup_logging(output=None, capture_warnings=False)  # replaces the handlers: the file is closed
    assert len(logging.getLogger("dinov2").handlers) == 1 and not logging.getLogger("py.warnings").handlers


def test_smoothed_value_statistics():
    meter = SmoothedValue(window_size=3)
    for v in [4.0, 1.0, 3.0, 2.0]:
        meter.update(v)
    # window [1, 3, 2]; global over all four values
    assert meter.median == 2.0 and meter.avg == 2.0 and meter.max == 3.0 and meter.value == 2.0
    assert meter.global_avg == 2.5 and meter.count == 4
    meter.update(10.0, num=2)  # weighted update
    assert meter.global_avg == (4 + 1 + 3 + 2 + 20) / 6
    assert str(meter) == "3.0000 (5.0000)"
    even = SmoothedValue()
    for v in [1.0, 2.0, 3.0, 4.0]:
        even.update(v)
    assert even.median == 2.0  # lower middle value, as torch.median
    assert math.isnan(SmoothedValue().global_avg)


def test_metric_logger_update_and_errors():
    logger = MetricLogger(delimiter="  ")
    logger.update(loss=torch.tensor(2.0), lr=0.5)
    logger.update(loss=4)
    assert logger.loss.global_avg == 3.0 and logger.lr.value == 0.5
    assert str(logger) == "loss: 2.0000 (3.0000)  lr: 0.5000 (0.5000)"  # median of [2, 4] is the lower value
    with pytest.raises(TypeError, match="name='x' is not a number"):
        logger.update(name="x")
    with pytest.raises(AttributeError, match="no attribute 'missing'"):
        logger.missing  # noqa: B018


def test_log_every_writes_json_lines_and_log_lines(tmp_path, caplog):
    output = tmp_path / "training_metrics.json"
    metric_logger = MetricLogger(delimiter="  ", output_file=str(output))
    seen = []
    with caplog.at_level(logging.INFO, logger="dinov2"):
        for i, x in enumerate(metric_logger.log_every(range(100), 4, "Training", n_iterations=12, start_iteration=2)):
            seen.append(x)
            metric_logger.update(loss=float(x), lr=0.1 * (i + 1))
    assert seen == list(range(10))  # iterations 2..11
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["iteration"] for r in records] == [4, 8, 11]  # every 4th iteration and the last one
    assert set(records[0]) == {"iteration", "iter_time", "data_time", "loss", "lr"}
    assert records[0]["loss"] == 1.0  # median of losses 0, 1, 2 (iterations 2..4)
    assert records[-1]["loss"] == 4.0 and records[-1]["lr"] == pytest.approx(0.5)  # window medians of 0..9
    assert all(r["iter_time"] >= r["data_time"] >= 0 for r in records)
    lines = [r.getMessage() for r in caplog.records if "Training" in r.getMessage()]
    assert lines[0].startswith("Training  [ 4/12]  eta: ")
    assert "loss: 1.0000 (1.0000)" in lines[0] and "time: " in lines[0] and "data: " in lines[0]
    assert "Total time:" in lines[-1]


def test_log_every_reports_throughput(tmp_path):
    output = tmp_path / "m.json"
    metric_logger = MetricLogger(output_file=str(output), json_stat="global_avg")
    for _ in metric_logger.log_every([1, 2, 3], 1, batch_size=32):
        metric_logger.update(loss=1.0)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 3
    for r in records:
        assert r["images_per_sec"] == pytest.approx(32 / r["iter_time"])
    with pytest.raises(ValueError, match="json_stat"):
        MetricLogger(json_stat="mean")


def _sync_worker(rank, world_size):
    metric_logger = MetricLogger()
    for v in range(rank + 1):  # rank 0: [0]; rank 1: [0, 1]
        metric_logger.update(loss=float(v + 10 * rank), other=1.0)
    metric_logger.synchronize_between_processes()
    single = SmoothedValue()
    single.update(float(rank), num=2)
    single.synchronize_between_processes()
    return metric_logger.loss.count, metric_logger.loss.global_avg, single.count, single.total


def test_synchronize_between_processes_sums_counts_and_totals():
    results = run_distributed(_sync_worker, 2)
    # losses: rank 0 -> [0], rank 1 -> [10, 11]; count 3, total 21
    assert results == [(3, 7.0, 4, 2.0)] * 2


def test_an_uncaught_exception_after_set_up_goes_to_the_log_file_and_stderr(tmp_path):
    """A real process: the exception that ends it is in the run's log file (with its traceback) and on stderr."""
    script = (
        "import sys; from dinov2.logging import setup_logging\n"
        "setup_logging(output=sys.argv[1])\n"
        "def step():\n"
        "    raise ValueError('boom after set-up')\n"
        "step()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env)
    assert done.returncode == 1
    text = (tmp_path / "logs" / "log.txt").read_text()
    for stream in (text, done.stderr):
        assert "Traceback" in stream and "in step" in stream and "ValueError: boom after set-up" in stream
    assert text.count("boom after set-up") == 1 and "boom" not in done.stdout  # not echoed to the console twice


@pytest.mark.parametrize("setup_name", ["default_setup", "setup_logging"])
def test_the_command_set_ups_log_uncaught_exceptions(tmp_path, restore_logging, monkeypatch, capsys, setup_name):
    """Training and the eval commands (``default_setup``), multi-distillation and curation (``setup_logging``)."""
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    if setup_name == "setup_logging":
        setup_logging(output=str(tmp_path))
    else:
        default_setup(argparse.Namespace(output_dir=str(tmp_path)))
    setup_logging(output=str(tmp_path))  # a second set-up installs no second hook
    try:
        raise RuntimeError("after set-up")
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    text = (tmp_path / "logs" / "log.txt").read_text()
    assert text.count("RuntimeError: after set-up") == 1 and "Traceback" in text
    assert capsys.readouterr().err.count("RuntimeError: after set-up") == 1
