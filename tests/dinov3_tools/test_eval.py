"""k-NN, linear and logistic-regression evaluation of DINOv3 backbones (ViT and ConvNeXt) from the backbone door."""

from __future__ import annotations

import json

import pytest
import torch

from dinov2.eval import log_regression
from dinov2.eval.knn import eval_knn_with_model
from dinov2.eval.linear.cli import run_eval_linear
from dinov2.features import load_backbone


@pytest.mark.parametrize(("family", "name", "tokens"), [("vit", "dinov3_vit", 5), ("convnext", "dinov3_convnext", 0)])
def test_knn_on_both_families(dinov3_files, synthetic, family, name, tokens):
    loaded = load_backbone(dinov3_files.of(family), device="cpu")
    assert (loaded.family, loaded.embed_dim, loaded.num_extra_tokens) == (name, 64, tokens)
    options = dict(nb_knn=[1], num_workers=0, crop_size=32, progress=False, accuracy_averaging="per_class_accuracy")
    results = eval_knn_with_model(loaded.model, None, synthetic.train, synthetic.train, **options)
    assert results["('full', 1) Top 1"] == [100.0] * 4  # every train image is its own nearest neighbour
    val = eval_knn_with_model(loaded.model, None, synthetic.train, synthetic.val, **options)
    assert all(0.0 <= v <= 100.0 for v in val["('full', 1) Top 1"])


def test_linear_probe_on_a_dinov3_vit_and_convnext(dinov3_files, synthetic, single_process_eval, tmp_path):
    for family, blocks in (("vit", (1, 2)), ("convnext", (1, 4))):  # the ConvNeXt's "blocks" are its 4 stages
        model = load_backbone(dinov3_files.of(family), device="cpu").model
        run_eval_linear(
            model,
            str(tmp_path / family),
            synthetic.train,
            synthetic.val,
            batch_size=8,
            epochs=1,
            epoch_length=4,
            num_workers=0,
            save_checkpoint_frequency=1,
            eval_period_iterations=4,
            learning_rates=[1e-3, 0.1],
            autocast_dtype=torch.float32,
            n_last_blocks_list=blocks,
            crop_size=32,
            val_metric_type="mean_accuracy",
        )
        detailed = json.loads((tmp_path / family / "results_eval_linear_detailed.json").read_text())
        assert len(detailed["val"]["classifiers"]) == 2 * 2 * 2  # learning rates x blocks x avgpool
        assert all(0.0 <= m["top-1"] <= 100.0 for m in detailed["val"]["classifiers"].values())


def test_logistic_regression_on_a_dinov3_vit(dinov3_files, synthetic, single_process_eval, tmp_path):
    model = load_backbone(dinov3_files.vit, device="cpu").model
    results = log_regression.eval_log_regression_with_model(
        model,
        synthetic.train,
        synthetic.val,
        max_train_iters=30,
        batch_size=16,
        crop_size=32,
        progress=False,
        output_dir=str(tmp_path),
    )
    assert 0.0 <= results["top-1"] <= results["top-5"] <= 100.0
    assert json.loads((tmp_path / "results_eval_log_regression_detailed.json").read_text())["results"] == results
