"""Tracking while training: TensorBoard scalars equal the training_metrics.json records, and the online k-NN monitor
evaluates the teacher every N iterations into the same records (tiny run on a synthetic labelled set)."""

from __future__ import annotations

import json

import pytest

from dinov2.logging import MetricLogger
from dinov2.train.knn_monitor import KnnMonitor
from tests.conftest import preserved_logging
from tests.train.test_train_loop import _run


def _records(out):
    return [json.loads(line) for line in (out / "training_metrics.json").read_text().splitlines()]


@pytest.mark.slow
def test_tensorboard_and_knn_monitor_in_a_real_run(tmp_path):
    pytest.importorskip("tensorboard", reason="TensorBoard event files need the tensorboard package ([tracking])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = tmp_path / "data"
    labelled = f"Synthetic:root={data}:num_classes=3:images_per_class=8:val_images_per_class=4:size=40x32"
    out = tmp_path / "run"
    with preserved_logging():
        _run(
            out,
            f"train.dataset_path={labelled}",
            "tracking.tensorboard=true",
            "tracking.knn.period_iterations=4",
            f"tracking.knn.train_dataset={labelled}:split=TRAIN",
            f"tracking.knn.val_dataset={labelled}:split=VAL",
            "tracking.knn.nb_knn=[1,3]",
            "tracking.knn.crop_size=16",
            "tracking.knn.batch_size=8",
        )
    records = _records(out)
    knn = [r for r in records if "knn_top1_k1" in r]
    assert [r["iteration"] for r in knn] == [3, 7]  # after every 4 of the 8 iterations
    assert all(0.0 <= r[k] <= 100.0 for r in knn for k in ("knn_top1_k1", "knn_top1_k3"))
    periodic = [r for r in records if "total_loss" in r]
    assert [r["iteration"] for r in periodic] == [0, 7]

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"total_loss", "lr", "knn_top1_k1", "knn_top1_k3"} <= tags
    for record in records:  # every scalar of every record, at its iteration
        for key, value in record.items():
            if key == "iteration" or not isinstance(value, (int, float)):
                continue
            steps = {e.step: e.value for e in events.Scalars(key)}
            assert steps[record["iteration"]] == pytest.approx(value, rel=1e-6), key


def test_monitor_needs_both_datasets(tmp_path):
    from tests.train.tiny import tiny_cfg

    cfg = tiny_cfg(tmp_path, "tracking.knn.period_iterations=5")
    with pytest.raises(ValueError, match="needs tracking.knn.train_dataset and tracking.knn.val_dataset"):
        KnnMonitor(cfg.tracking.knn)
    assert not KnnMonitor(tiny_cfg(tmp_path).tracking.knn).enabled


def test_metric_logger_records_go_to_the_file_and_the_sinks(tmp_path):
    seen = []
    logger = MetricLogger(output_file=str(tmp_path / "m.json"), sinks=[seen.append])
    logger.update(loss=2.0)
    logger.dump_in_output_file(iteration=0, iter_time=0.5, data_time=0.1)
    logger.record(3, knn_top1_k20=55.5)
    lines = [json.loads(line) for line in (tmp_path / "m.json").read_text().splitlines()]
    assert lines == seen
    assert lines[1] == {"iteration": 3, "knn_top1_k20": 55.5}
    assert lines[0]["loss"] == 2.0 and lines[0]["iteration"] == 0


def test_unreadable_monitor_images_turn_the_monitor_off_not_the_run(tmp_path, caplog):
    """issue 26: an unreadable image in the monitor's small sets is named in an error and the monitor stops; the
    hours of training around it go on. A k larger than the monitor's train set is refused when it is built."""
    from PIL import Image

    from dinov2.models.vision_transformer import _vit
    from tests.train.tiny import tiny_cfg

    for split in ("train", "val"):
        for label, colour in (("a", (200, 0, 0)), ("b", (0, 0, 200))):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (32, 32), colour).save(folder / f"{i}.jpg")
    (tmp_path / "val" / "a" / "broken.jpg").write_text("not an image")
    opts = [
        "tracking.knn.period_iterations=5",
        f"tracking.knn.train_dataset=ImageFolder:root={tmp_path / 'train'}",
        f"tracking.knn.val_dataset=ImageFolder:root={tmp_path / 'val'}",
        "tracking.knn.nb_knn=[1]",
        "tracking.knn.crop_size=28",
    ]
    fits = r"knn.nb_knn 5 is larger than the train set \(4 images\); use k <= 4, e.g. tracking.knn.nb_knn=\[1\]"
    with pytest.raises(ValueError, match=fits):
        KnnMonitor(tiny_cfg(tmp_path, *opts, "tracking.knn.nb_knn=[1,5]").tracking.knn)  # at start, not mid-run
    monitor = KnnMonitor(tiny_cfg(tmp_path, *opts).tracking.knn)
    with caplog.at_level("ERROR", logger="dinov2"):
        assert monitor.evaluate(_vit(32, 1, 2, 14, 0, img_size=28).eval()) == {}
    assert "broken.jpg" in caplog.text and "k-NN monitor turned off" in caplog.text
    assert not monitor.enabled and not monitor.due(4)
