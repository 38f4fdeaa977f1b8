"""Logistic regression end to end on the synthetic dataset: command line, result files, C chosen on a hold-out,
on the validation set or on a fine-tune set, per-class accuracy, unlabelled fine-tune data."""

from __future__ import annotations

import json

import pytest

from dinov2.eval import log_regression
from dinov2.eval.log_regression.solver import default_c_values
from tests.conftest import torch_threads
from tests.eval.conftest import CONFIG, CROP


@pytest.fixture
def model(eval_model):
    with torch_threads(1):
        yield eval_model


def test_command_line_writes_released_lines_and_the_sweep(single_process_eval, synthetic, backbone_files, tmp_path):
    argv = [
        "--config-file", CONFIG, "--pretrained-weights", str(backbone_files.teacher), "--output-dir", str(tmp_path),
        "--train-dataset", synthetic.train, "--val-dataset", synthetic.val, "--max-train-iters", "30",
        "--batch-size", "16", *CROP,
    ]  # fmt: skip
    assert log_regression.main(log_regression.get_args_parser().parse_args(argv)) == 0
    lines = [json.loads(line) for line in (tmp_path / "results_eval_log_regression.json").read_text().splitlines()]
    assert [next(iter(line)) for line in lines] == ["top-1", "top-5", "best_C"]
    top1, top5, best_c = (next(iter(line.values())) for line in lines)
    assert 0.0 <= top1 <= top5 <= 100.0 and best_c in default_c_values()
    detailed = json.loads((tmp_path / "results_eval_log_regression_detailed.json").read_text())
    assert [entry["C"] for entry in detailed["sweep"]] == default_c_values()
    assert detailed["results"] == {"top-1": top1, "top-5": top5, "best_C": best_c}
    assert detailed["args"]["train_dtype"] == "float64" and detailed["finetune_on_val"] is False


def test_c_chosen_on_val_or_a_fine_tune_set_with_per_class_accuracy(model, synthetic, tmp_path):
    common = dict(max_train_iters=30, batch_size=16, crop_size=28, progress=False)
    on_val = log_regression.eval_log_regression_with_model(
        model, synthetic.train, synthetic.val, finetune_on_val=True, metric_type="per_class_accuracy", **common
    )
    assert len(on_val["top-1"]) == 4 and all(0.0 <= v <= 100.0 for v in on_val["top-1"])
    finetune = log_regression.eval_log_regression_with_model(
        model, synthetic.train, synthetic.val, finetune_dataset_str=synthetic.val, output_dir=tmp_path, **common
    )
    assert finetune["best_C"] in default_c_values()
    detailed = json.loads((tmp_path / "results_eval_log_regression_detailed.json").read_text())
    assert detailed["finetune_dataset"] == synthetic.val
    flat = tmp_path / "unlabelled"
    flat.mkdir()
    for path in sorted((synthetic.root / "val").rglob("*.jpg"))[:3]:
        (flat / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=f"dataset 'ImageFolder:root={flat}' has no labels"):
        log_regression.eval_log_regression_with_model(
            model, synthetic.train, synthetic.val, finetune_dataset_str=f"ImageFolder:root={flat}", **common
        )
    with pytest.raises(ValueError, match="--train-dtype 'float8'"):
        log_regression.as_torch_dtype("float8")
    small = f"ImageFolder:root={flat.parent / 'small'}"  # 3 labelled images: no 10 % hold-out, found before extraction
    for path in sorted((synthetic.root / "val").rglob("*.jpg"))[:3]:
        (flat.parent / "small" / path.parent.name).mkdir(parents=True, exist_ok=True)
        (flat.parent / "small" / path.parent.name / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=r"3 training images in .*small.* leave no 10 % hold-out.*--finetune-on-val"):
        log_regression.eval_log_regression_with_model(model, small, synthetic.val, **common)
