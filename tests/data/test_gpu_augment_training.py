"""A short training run with ``train.data_device=cuda`` on a CPU machine: the device path runs on the CPU training
device, with loader workers, and trains on the same batches as the CPU path (same losses)."""

from __future__ import annotations

import pytest
import torch

from dinov2.train.train import get_args_parser, main
from tests.conftest import preserved_logging
from tests.train.tiny import FP32_OPTS, TINY_OPTS

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def _losses(tmp_path, name: str, *opts: str) -> list:
    dataset = f"Synthetic:root={tmp_path}/data:num_classes=3:images_per_class=6:size=40x32"
    argv = ["--output-dir", str(tmp_path / name), "--no-resume", *TINY_OPTS, *FP32_OPTS]
    argv += [f"train.dataset_path={dataset}", "optim.epochs=1", "checkpointing.period=100", *opts]
    history = []
    with preserved_logging():
        main(get_args_parser().parse_args(argv), history=history)
    return history


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks train.data_device=cuda on a CPU training device")
def test_training_with_the_device_path_on_cpu(tmp_path):
    reference = _losses(tmp_path, "workers", "train.data_device=cpu")
    on_device = _losses(tmp_path, "device", "train.data_device=cuda", "train.num_workers=2")
    assert [it for it, _ in on_device] == [0, 1, 2, 3]
    for (_, expected), (_, got) in zip(reference, on_device):
        assert expected.keys() == got.keys()
        for name in expected:  # the same batches (up to a rare 1-level flip): the same losses
            assert got[name] == pytest.approx(expected[name], rel=1e-5, abs=1e-7), name
