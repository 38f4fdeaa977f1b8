"""Curation ``embed`` on DINOv3 backbones given by their weights alone (``--config-file ''``): unit-norm float16
embeddings equal to the backbone's normalised class token (ViT) or pooled last stage (ConvNeXt)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinov2.curation.arrays import Embeddings
from dinov2.curation.cli import main as curation_main
from dinov2.data import make_dataset
from dinov2.data.transforms import make_classification_eval_transform
from dinov2.features import load_backbone
from tests.conftest import preserved_logging


@pytest.mark.parametrize("family", ["vit", "convnext"])
def test_embed_a_dataset_with_a_dinov3_backbone(dinov3_files, synthetic, family, tmp_path):
    weights, out = str(dinov3_files.of(family)), tmp_path / "embeddings"
    argv = [
        "embed",
        "--config-file",
        "",
        "--pretrained-weights",
        weights,
        "--dataset",
        synthetic.val,
        "--output-dir",
        str(out),
        "--crop-size",
        "32",
        "--resize-size",
        "32",
        "--shard-size",
        "8",
        "--batch-size",
        "4",
        "--num-workers",
        "0",
        "--no-progress",
    ]
    with preserved_logging():  # the command sets up logging
        assert curation_main(argv) == out
    embeddings = Embeddings(out)
    assert (len(embeddings), embeddings.dim) == (16, 64)
    rows = embeddings.read(0, 16).astype(np.float32)
    dataset = make_dataset(
        dataset_str=synthetic.val, transform=make_classification_eval_transform(resize_size=32, crop_size=32)
    )
    model = load_backbone(weights, device="cpu").model
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(torch.stack([image for image, _ in dataset])), dim=-1)
    np.testing.assert_allclose(rows, expected.numpy(), atol=2e-3)  # float16 storage
