"""Linear evaluation shows its progress as released: a MetricLogger line (iteration, ETA, loss, lr, iteration and
data-loading times) every 10 iterations and at the last one, from the loop and from the command line."""

from __future__ import annotations

import logging
import math
import re

import pytest

from dinov2.eval import linear
from dinov2.eval.linear import make_optimizer, make_scheduler, train_linear_classifiers
from tests.eval.conftest import CONFIG, CROP
from tests.eval.linear.test_linear import FakeBackbone, make_batches, make_grid

LINE = re.compile(
    r"Training\s+\[\s*(?P<it>\d+)/(?P<n>\d+)\]\s+eta: \d+:\d\d:\d\d\s+lr: (?P<lr>\S+)\s+"
    r"loss: (?P<median>[\d.]+) \((?P<avg>[\d.]+)\)\s+time: [\d.]+\s+data: [\d.]+"
)


def _progress(text: str) -> list[dict]:
    return [m.groupdict() for m in LINE.finditer(text)]


def _train(max_iter: int, start_iter: int = 0, log_period: int = 10):
    classifiers, groups = make_grid()
    base_lr = groups[0]["lr"]
    optimizer = make_optimizer(groups)
    scheduler = make_scheduler(optimizer, max_iter)
    batches = make_batches(max_iter - start_iter)
    train_linear_classifiers(
        feature_model=FakeBackbone(), classifiers=classifiers, optimizer=optimizer, scheduler=scheduler,
        train_data=batches, max_iter=max_iter, start_iter=start_iter, log_period=log_period,
    )  # fmt: skip
    return base_lr


def test_a_line_every_period_with_eta_loss_lr_and_times(caplog):
    caplog.set_level(logging.INFO, logger="dinov2")
    base_lr = _train(max_iter=25)
    lines = _progress(caplog.text)
    assert [int(line["it"]) for line in lines] == [0, 10, 20, 24]  # every 10 iterations and the last one
    assert all(line["n"] == "25" for line in lines)
    for line in lines[:3]:  # the lr logged after iteration i's step: cosine to 0 over 25 iterations (released)
        it = int(line["it"])
        expected = base_lr * 0.5 * (1 + math.cos(math.pi * (it + 1) / 25))
        assert float(line["lr"]) == pytest.approx(expected, rel=1e-5)
    # the loss is read at the logged iterations only (as released): the last line repeats the one of iteration 20
    assert lines[3]["lr"] == lines[2]["lr"] and lines[3]["avg"] == lines[2]["avg"]
    assert float(lines[0]["median"]) == float(lines[0]["avg"]) > 0
    assert "Training Total time" in caplog.text


def test_a_resumed_run_counts_from_its_start_iteration(caplog):
    caplog.set_level(logging.INFO, logger="dinov2")
    _train(max_iter=25, start_iter=13, log_period=5)
    assert [int(line["it"]) for line in _progress(caplog.text)] == [15, 20, 24]


def test_the_command_line_logs_progress_to_its_log_file(single_process_eval, synthetic, backbone_files, tmp_path):
    argv = [
        "--config-file", CONFIG, "--pretrained-weights", str(backbone_files.hub), "--output-dir", str(tmp_path),
        "--train-dataset", synthetic.train, "--val-dataset", synthetic.val, "--epochs", "1", "--epoch-length", "12",
        "--batch-size", "4", "--num-workers", "0", "--eval-period-iterations", "100", "--learning-rates", "0.01",
        *CROP,
    ]  # fmt: skip
    assert linear.main(linear.get_args_parser().parse_args(argv)) == 0
    lines = _progress((tmp_path / "logs" / "log.txt").read_text())
    assert [(int(line["it"]), line["n"]) for line in lines] == [(0, "12"), (10, "12"), (11, "12")]
