"""The training loop end to end on a tiny model and a tiny generated dataset: outputs, exact resume, recovery."""

from __future__ import annotations

import json
import logging
import shutil
import zlib
from pathlib import Path

import pytest
import torch

from dinov2.models.convert import to_backbone_state_dict
from dinov2.train.checkpointing import EXTRA_FILE, MARKER
from dinov2.train.train import get_args_parser, main
from tests.conftest import preserved_logging
from tests.train.tiny import FP32_OPTS, TINY_OPTS

N_ITERATIONS = 8  # 2 epochs of 4; checkpoints after iterations 3 and 7 (checkpointing.period=4)


class StopAfter(list):
    """A history that stops the run after ``n`` iterations (a crash right after that iteration's checkpoint)."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def append(self, item):
        super().append(item)
        if len(self) == self.n:
            raise KeyboardInterrupt("simulated stop")


def _args(output_dir: Path, *opts: str, no_resume: bool = False):
    dataset = f"Synthetic:root={output_dir.parent}/data:num_classes=3:images_per_class=6:size=40x32"
    argv = ["--output-dir", str(output_dir)] + (["--no-resume"] if no_resume else [])
    opts = [*TINY_OPTS, *FP32_OPTS, f"train.dataset_path={dataset}", "checkpointing.period=4", *opts]
    return get_args_parser().parse_args(argv + opts)


def _run(output_dir: Path, *opts: str, history: list | None = None, no_resume: bool = False) -> list:
    history = [] if history is None else history
    main(_args(output_dir, *opts, no_resume=no_resume), history=history)
    return history


def _final_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(output_dir / "eval" / "training_7" / "teacher_checkpoint.pth", weights_only=True)["teacher"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """One uninterrupted run of 8 iterations (shared by the tests below)."""
    out = tmp_path_factory.mktemp("runs") / "straight"
    with preserved_logging():
        history = _run(out, "evaluation.eval_period_iterations=4")
    return out, history


def test_outputs_of_a_run(straight_run):
    out, history = straight_run
    assert [it for it, _ in history] == list(range(N_ITERATIONS))
    assert set(history[0][1]) == {"dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "ibot_loss"}
    cfg_text = (out / "config.yaml").read_text()
    assert "vit_test" in cfg_text and "lr:" in cfg_text
    lines = [json.loads(line) for line in (out / "training_metrics.json").read_text().splitlines()]
    assert [line["iteration"] for line in lines] == [0, 7]  # every 10 iterations and the last one
    assert {"total_loss", "lr", "dino_global_crops_loss"} <= set(lines[0])
    assert sorted(p.name for p in out.glob("model_*")) == ["model_0000003", "model_0000007"]
    exports = sorted(p.parent.name for p in out.glob("eval/*/teacher_checkpoint.pth"))
    assert exports == ["training_3", "training_7"]
    teacher = _final_weights(out)
    assert any(k.startswith("dino_head.") for k in teacher)
    backbone = to_backbone_state_dict({"teacher": teacher})
    assert "cls_token" in backbone and "blocks.1.mlp.fc2.weight" in backbone


def test_resume_continues_exactly(straight_run, tmp_path):
    reference_out, reference = straight_run
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _run(out, "evaluation.eval_period_iterations=4", history=StopAfter(4))
    resumed = _run(out, "evaluation.eval_period_iterations=4")
    assert [it for it, _ in resumed] == [4, 5, 6, 7]
    assert resumed == reference[4:]  # identical per-iteration losses
    for (name, a), b in zip(_final_weights(out).items(), _final_weights(reference_out).values()):
        assert torch.equal(a, b), name


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(straight_run, tmp_path, caplog):
    reference_out, reference = straight_run
    out = tmp_path / "corrupt"
    shutil.copytree(reference_out, out, ignore=shutil.ignore_patterns("eval"))
    shard = next((out / "model_0000007").glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    (out / "ckpt_tmp_0000011").mkdir()  # left by a process killed while writing a later checkpoint
    dinov2_logger = logging.getLogger("dinov2")  # does not propagate to the root logger: listen to it directly
    dinov2_logger.addHandler(caplog.handler)
    try:
        resumed = _run(out, "evaluation.eval_period_iterations=4")
    finally:
        dinov2_logger.removeHandler(caplog.handler)
    assert any(r.levelno == logging.WARNING and "model_0000007" in r.getMessage() for r in caplog.records)
    assert [it for it, _ in resumed] == [4, 5, 6, 7]
    assert resumed == reference[4:]


def test_checkpoints_hold_no_sampler_position(straight_run):
    out, _ = straight_run
    extra = torch.load(out / "model_0000003" / EXTRA_FILE, weights_only=True)
    assert extra["plain"] == {}  # the loader is advanced from the iteration; a sample count was never read


def test_checkpoint_written_with_a_sampler_position_still_resumes_exactly(straight_run, tmp_path):
    """Checkpoints written before the dead ``sampler_position`` value was dropped hold it among their plain values."""
    reference_out, reference = straight_run
    out = tmp_path / "old"
    shutil.copytree(reference_out, out, ignore=shutil.ignore_patterns("eval", "model_0000007"))
    folder = out / "model_0000003"
    extra = torch.load(folder / EXTRA_FILE, weights_only=True)
    extra["plain"]["sampler_position"] = 4 * 4  # (iteration + 1) * train.batch_size_per_gpu, as it was written
    torch.save(extra, folder / EXTRA_FILE)
    marker = json.loads((folder / MARKER).read_text())
    marker["files"][EXTRA_FILE] = [len(data := (folder / EXTRA_FILE).read_bytes()), zlib.crc32(data)]
    (folder / MARKER).write_text(json.dumps(marker))
    resumed = _run(out, "evaluation.eval_period_iterations=4")
    assert [it for it, _ in resumed] == [4, 5, 6, 7]
    assert resumed == reference[4:]


def test_no_resume_starts_afresh(straight_run, tmp_path):
    reference_out, reference = straight_run
    out = tmp_path / "afresh"
    shutil.copytree(reference_out, out, ignore=shutil.ignore_patterns("eval"))
    history = StopAfter(2)
    with pytest.raises(KeyboardInterrupt):
        _run(out, history=history, no_resume=True)
    assert history == reference[:2]
