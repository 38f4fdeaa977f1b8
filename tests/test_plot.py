"""Run plots from real short training runs (the tiny trainer) with a real k-NN evaluation in the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dinov2.eval.knn import eval_knn_with_model
from dinov2.eval.setup import build_model_for_eval
from dinov2.plot import main
from dinov2.train.train import get_args_parser
from dinov2.train.train import main as train_main
from dinov2.utils.config import load_cfg
from dinov2.utils.schedules import build_schedulers
from dinov2.visualize.plot import panels, read_run
from tests.conftest import preserved_logging
from tests.train.tiny import FP32_OPTS, TINY_OPTS

pytest.importorskip("matplotlib", reason="plots need matplotlib (dev / plot extras)")
pytestmark = pytest.mark.slow  # two tiny training runs and two k-NN evaluations: about 20 s


def _train(output_dir: Path, data: str, *opts: str) -> None:
    argv = ["--output-dir", str(output_dir), *TINY_OPTS, *FP32_OPTS, f"train.dataset_path={data}:split=TRAIN", *opts]
    train_main(get_args_parser().parse_args(argv))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real tiny runs (8 and 4 iterations, two learning rates), the first one k-NN evaluated at 3 and 7."""
    root = tmp_path_factory.mktemp("plot")
    data = f"Synthetic:root={root}/data:num_classes=3:images_per_class=6:val_images_per_class=2:size=40x32"
    knn = {}
    with preserved_logging():
        _train(root / "a", data, "evaluation.eval_period_iterations=4")
        _train(root / "b", data, "optim.epochs=1", "optim.warmup_epochs=0", "optim.base_lr=0.01")
        cfg = load_cfg(root / "a" / "config.yaml", validate=False)
        for iteration in (3, 7):
            export = root / "a" / "eval" / f"training_{iteration}"
            model = build_model_for_eval(cfg, export / "teacher_checkpoint.pth", device=torch.device("cpu"))
            knn[iteration] = eval_knn_with_model(model, str(export / "knn"), f"{data}:split=TRAIN", f"{data}:split=VAL",
                                                 nb_knn=(2, 4), crop_size=16, num_workers=0, batch_size=8,
                                                 progress=False)  # fmt: skip
    return root, knn


def test_a_run_folder_gives_every_training_scalar_and_the_evaluations(runs):
    root, knn = runs
    run = read_run(root / "a")
    expected = {"total_loss", "dino_local_crops_loss", "dino_global_crops_loss", "ibot_loss", "koleo_loss", "lr",
                "last_layer_lr", "wd", "mom", "teacher_temp", "backbone_grad_norm", "dino_head_grad_norm",
                "images_per_sec", "iter_time", "data_time"}  # fmt: skip
    assert expected <= set(run.scalars)
    records = [json.loads(line) for line in (root / "a" / "training_metrics.json").read_text().splitlines()]
    assert run.scalars["lr"].iterations == [r["iteration"] for r in records] == [0, 7]
    assert run.scalars["total_loss"].values == [r["total_loss"] for r in records]
    schedule = build_schedulers(load_cfg(root / "a" / "config.yaml", validate=False)).teacher_temp
    assert run.scalars["teacher_temp"].values == [schedule[0], schedule[7]]  # rebuilt from config.yaml
    assert run.scalars["teacher_temp"].values[0] == pytest.approx(0.04)
    top1 = run.evaluations["knn: ('full', 2) Top 1"]
    assert top1.iterations == [3, 7]
    assert top1.values == [knn[3]["('full', 2) Top 1"], knn[7]["('full', 2) Top 1"]]
    assert not any("Top 5" in key for key in run.evaluations)  # top-1 values only


def test_panels_cover_every_term_and_both_runs(runs):
    root, _ = runs
    titles = [p.title for p in panels([read_run(root / "a"), read_run(root / "b")])]
    assert titles[:5] == ["total loss", "dino local crops loss", "dino global crops loss", "ibot loss", "koleo loss"]
    for title in ("learning rate", "weight decay", "teacher momentum", "teacher temperature",
                  "gradient norm before clipping", "images / s (all processes)", "evaluation: knn"):  # fmt: skip
        assert title in titles


def test_command_writes_one_figure_for_several_runs(runs, tmp_path, capsys):
    root, _ = runs
    output = tmp_path / "curves.png"
    assert main([str(root / "a"), str(root / "b"), "--output", str(output), "--columns", "4"]) == 0
    assert "runs a, b" in capsys.readouterr().out
    picture = np.asarray(Image.open(output).convert("RGB"))
    n_panels = len(panels([read_run(root / "a"), read_run(root / "b")]))
    assert picture.shape[:2] == (320 * -(-n_panels // 4), 500 * 4)  # 5 x 3.2 inches per panel at 100 dpi
    assert picture.std() > 10


def test_resumed_runs_new_scalars_and_linear_results(runs, tmp_path):
    root, _ = runs
    lines = (root / "a" / "training_metrics.json").read_text().splitlines()
    last = json.loads(lines[-1])
    (tmp_path / "training_metrics.json").write_text(
        "\n".join([*lines, json.dumps({**last, "total_loss": 1.5, "knn_monitor_top1": 40.0})]) + "\n"
    )  # a resumed run logs iteration 7 again; a later monitor adds a scalar
    (tmp_path / "linear").mkdir()
    (tmp_path / "linear" / "results_eval_linear.json").write_text(
        'iter: 1249\n{"best_classifier": {"name": "classifier_1_blocks_avgpool_False_lr_0_01000", "accuracy": 0.5}}\n\n'
        'iter: 2499\n{"best_classifier": {"name": "classifier_4_blocks_avgpool_True_lr_0_10000", "accuracy": 0.75}}\n\n'
    )  # the released linear layout: the last block is the result
    run = read_run(tmp_path)
    assert run.scalars["total_loss"].iterations == [0, 7] and run.scalars["total_loss"].values[-1] == 1.5
    assert "knn monitor top1" in [p.title for p in panels([run])]
    assert run.evaluations["linear: best_classifier.accuracy"].values == [0.75]
    assert run.evaluations["linear: best_classifier.accuracy"].iterations == [7]  # no export in the path: last


def test_bad_folders_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_run(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        read_run(tmp_path)
    (tmp_path / "training_metrics.json").write_text('{"iteration": 0, "lr": 1.0}\n{"iteration": 1, "lr"')
    with pytest.raises(ValueError, match="line 2: not a JSON object"):
        read_run(tmp_path)
