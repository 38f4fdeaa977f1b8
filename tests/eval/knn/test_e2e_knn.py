"""k-NN end to end on the synthetic dataset: command line in-process and as ``python -m``, a training export
against the same weights as a hub file, 2 processes against 1, result files, and the errors users hit."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from dinov2.eval import knn
from dinov2.eval.setup import build_model_for_eval
from dinov2.utils.config import load_cfg
from tests.conftest import REPO_ROOT, torch_threads
from tests.dist_helpers import run_distributed
from tests.eval.conftest import CONFIG, CROP, TRAIN_PER_CLASS, VAL_PER_CLASS
from tests.eval.test_utils import CASES, ToyDataset, _extraction_worker, _reference


@pytest.fixture
def model(eval_model):
    with torch_threads(1):
        yield eval_model


def _knn_argv(synthetic, weights, output_dir, val=None):
    return [
        "--config-file", CONFIG, "--pretrained-weights", str(weights), "--output-dir", str(output_dir),
        "--train-dataset", synthetic.train, "--val-dataset", val or synthetic.val, "--nb_knn", "5", "10",
        "--n-per-class-list", "-1", "3", "--n-tries", "2", "--batch-size", "16", "--num-workers", "0", *CROP,
    ]  # fmt: skip


def _read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_command_line_in_process_and_python_m_on_a_training_export_agree(
    single_process_eval, synthetic, backbone_files, tmp_path
):
    hub_dir, export_dir = tmp_path / "hub", tmp_path / "export"
    args = knn.get_args_parser().parse_args(_knn_argv(synthetic, backbone_files.hub, hub_dir))
    assert knn.main(args) == 0
    lines = _read_lines(hub_dir / "results_eval_knn.json")
    keys = [next(iter(line)) for line in lines]
    assert keys == [f"{s} Top {t}" for s in [("full", 5), ("full", 10), ("3 per class", 3)] for t in (1, 5)]
    assert all(0.0 <= next(iter(line.values())) <= 100.0 for line in lines)
    detailed = json.loads((hub_dir / "results_eval_knn_detailed.json").read_text())
    assert (detailed["num_train"], detailed["num_val"]) == (4 * TRAIN_PER_CLASS, 4 * VAL_PER_CLASS)
    assert len(detailed["settings"]["3 per class"]["tries"]) == 2
    assert detailed["args"]["nb_knn"] == [5, 10] and (hub_dir / "config.yaml").is_file()
    assert "k-NN accuracy (%)" in (hub_dir / "logs" / "log.txt").read_text()

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "dinov2.eval.knn", *_knn_argv(synthetic, backbone_files.teacher, export_dir)]
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "k-NN accuracy (%)" in done.stdout and "Extracting train" in done.stderr  # table and progress bar
    exported = json.loads((export_dir / "results_eval_knn_detailed.json").read_text())
    assert exported["results"] == detailed["results"]  # same weights, same numbers


def test_train_images_are_their_own_nearest_neighbours(model, synthetic):
    """Query the train set with itself at k=1: every image finds itself, so features and labels line up."""
    results = knn.eval_knn_with_model(
        model, None, synthetic.train, synthetic.train, nb_knn=[1], num_workers=0, crop_size=28, progress=False,
        accuracy_averaging="per_class_accuracy",
    )  # fmt: skip
    assert results["('full', 1) Top 1"] == [100.0] * 4


def test_clear_errors_for_k_beyond_the_train_set_and_unlabelled_data(model, synthetic, tmp_path):
    with pytest.raises(ValueError, match=r"--nb_knn 100 is larger than the train set \(48 images"):
        knn.eval_knn_with_model(model, None, synthetic.train, synthetic.val, nb_knn=[10, 100], num_workers=0)
    flat = tmp_path / "unlabelled"
    flat.mkdir()
    for path in sorted((synthetic.root / "val").rglob("*.jpg"))[:3]:
        (flat / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match=f"dataset 'ImageFolder:root={flat}' has no labels"):
        knn.eval_knn_with_model(model, None, synthetic.train, f"ImageFolder:root={flat}", nb_knn=[5], num_workers=0)


def _two_process_worker(rank, world_size, hub, train, val):
    extraction = _extraction_worker(rank, world_size)
    model = build_model_for_eval(load_cfg(CONFIG), hub, device=torch.device("cpu"))
    options = dict(nb_knn=[5, 10], n_per_class_list=[-1, 3], n_tries=2, batch_size=8, num_workers=0, crop_size=28)
    return extraction, knn.eval_knn_with_model(model, None, train, val, progress=False, **options)


def test_two_processes_extract_and_search_like_one(model, synthetic, backbone_files):
    outputs = run_distributed(_two_process_worker, 2, str(backbone_files.hub), synthetic.train, synthetic.val)
    for case, (n, _) in enumerate(CASES):  # toy extraction: every image once, in dataset order, on every rank
        expected_features, expected_labels = _reference(ToyDataset(n))
        for rank in range(2):
            features, labels, seen, local, local_labels = outputs[rank][0][case]
            torch.testing.assert_close(features, expected_features)
            assert labels.tolist() == expected_labels.tolist()
            assert seen == len(range(rank, n, 2))  # its own shard only: no padding duplicates
            assert local_labels.tolist() == expected_labels[rank::2].tolist()
    options = dict(nb_knn=[5, 10], n_per_class_list=[-1, 3], n_tries=2, batch_size=8, num_workers=0, crop_size=28)
    single = knn.eval_knn_with_model(model, None, synthetic.train, synthetic.val, progress=False, **options)
    for _, results in outputs:
        assert results.keys() == single.keys()
        for key, value in single.items():
            assert results[key] == pytest.approx(value, abs=1e-4), key
