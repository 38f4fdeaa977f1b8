"""Linear probe end to end on the synthetic dataset: command line, result files, resume, and the saved head
loaded through the hub ``_lc`` entry point (with the backbone as a hub file or as a training export)."""

from __future__ import annotations

import json

import torch

from dinov2.data import make_dataset
from dinov2.data.transforms import make_classification_eval_transform
from dinov2.eval import linear
from dinov2.hub.classifiers import dinov2_vits14_lc
from tests.eval.conftest import CONFIG, CROP


def _linear_argv(synthetic, weights, output_dir):
    return [
        "--config-file", CONFIG, "--pretrained-weights", str(weights), "--output-dir", str(output_dir),
        "--train-dataset", synthetic.train, "--val-dataset", synthetic.val,
        "--test-datasets", synthetic.val, synthetic.train, "--epochs", "2", "--epoch-length", "3",
        "--batch-size", "8", "--num-workers", "0", "--eval-period-iterations", "3",
        "--save-checkpoint-frequency", "1", "--learning-rates", "1e-4", "1e-3", "1e-2", "0.1", *CROP,
    ]  # fmt: skip


def _hub_top1(classifier, synthetic) -> float:
    """Top-1 (%) of a hub classifier on the val images with the eval transform the probe used."""
    dataset = make_dataset(
        dataset_str=synthetic.val, transform=make_classification_eval_transform(resize_size=32, crop_size=28)
    )
    images = torch.stack([image for image, _ in dataset])
    labels = torch.tensor([label for _, label in dataset])
    with torch.no_grad():
        return 100.0 * (classifier.eval()(images).argmax(dim=1) == labels).float().mean().item()


def test_command_line_trains_resumes_and_exports_a_hub_head(single_process_eval, synthetic, backbone_files, tmp_path):
    args = linear.get_args_parser().parse_args(_linear_argv(synthetic, backbone_files.hub, tmp_path))
    assert linear.main(args) == 0
    blocks = (tmp_path / "results_eval_linear.json").read_text().strip().split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == ["iter: 2", "iter: 6", "iter: 6", "iter: 6"]  # eval, final, 2 tests
    assert all(json.loads(b.splitlines()[1])["best_classifier"]["name"].startswith("classifier_") for b in blocks)
    detailed = json.loads((tmp_path / "results_eval_linear_detailed.json").read_text())
    results = detailed["results"]
    assert set(results) == {"best_classifier", f"{synthetic.val}_accuracy", f"{synthetic.train}_accuracy"}
    assert len(detailed["val"]["classifiers"]) == 4 * 2 * 2  # learning rates x blocks {1, 4} x avgpool
    values = [m[k] for m in detailed["val"]["classifiers"].values() for k in ("top-1", "top-5")]
    assert all(0.0 <= v <= 100.0 for v in values) and detailed["iterations"] == 6 and detailed["num_classes"] == 4
    assert {p.name for p in tmp_path.glob("model_*.pth")} == {
        "model_0000002.pth",
        "model_0000005.pth",
        "model_final.pth",
    }

    head = detailed["hub_head"]
    assert head["name"].split("_blocks_avgpool_True_")[0] in ("classifier_1", "classifier_4")
    assert head["val top-1"] == detailed["val"]["classifiers"][head["name"]]["top-1"]
    classifier = dinov2_vits14_lc(layers=head["layers"], weights=head["path"], backbone_weights=str(backbone_files.hub))
    assert classifier.linear_head.out_features == 4  # the hub takes the number of classes from the head file
    assert abs(_hub_top1(classifier, synthetic) - head["val top-1"]) < 1e-4
    from_export = dinov2_vits14_lc(
        layers=head["layers"], weights=head["path"], backbone_weights=str(backbone_files.teacher)
    )
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(from_export.eval()(x), classifier.eval()(x), rtol=0, atol=0)

    # the same command again (this time with the training export): resumes after the last iteration, same numbers
    args = linear.get_args_parser().parse_args(_linear_argv(synthetic, backbone_files.teacher, tmp_path))
    assert linear.main(args) == 0
    again = json.loads((tmp_path / "results_eval_linear_detailed.json").read_text())
    assert again["results"] == results and again["val"] == detailed["val"]
    assert "from iteration 6" in (tmp_path / "logs" / "log.txt").read_text()
