"""Embedding: float16 shards of L2-normalised features in dataset order, identities, resume (2 processes:
tests/curation/test_distributed.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dinov2.curation.arrays import Embeddings
from dinov2.curation.cli import main as curation_main
from dinov2.data import make_dataset
from dinov2.data.transforms import make_classification_eval_transform
from dinov2.models import build_model_from_cfg
from tests.conftest import preserved_logging
from tests.train.tiny import tiny_cfg


def tiny_backbone(root: Path) -> torch.nn.Module:
    """Save a random tiny backbone (``model.yaml`` + ``backbone.pth`` in ``root``); returns it in eval mode."""
    cfg = tiny_cfg(root / "model")
    torch.manual_seed(0)
    model, _ = build_model_from_cfg(cfg, only_teacher=True)
    torch.save(model.state_dict(), root / "backbone.pth")
    OmegaConf.save(cfg, root / "model.yaml")
    return model.eval()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed")
    model = tiny_backbone(root)
    return root, f"Synthetic:root={root}/data:num_classes=2:images_per_class=11:size=40x32", model


def embed_argv(root: Path, dataset: str, out: Path) -> list[str]:
    return [
        "embed",
        "--config-file",
        str(root / "model.yaml"),
        "--pretrained-weights",
        str(root / "backbone.pth"),
        "--dataset",
        dataset,
        "--output-dir",
        str(out),
        "--crop-size",
        "16",
        "--resize-size",
        "16",
        "--shard-size",
        "8",
        "--batch-size",
        "5",
        "--num-workers",
        "0",
        "--no-progress",
    ]


def test_shards_hold_the_normalised_features_in_dataset_order(setup, tmp_path):
    root, dataset, model = setup
    with preserved_logging():
        curation_main(embed_argv(root, dataset, tmp_path / "one"))
    embeddings = Embeddings(tmp_path / "one")
    assert (len(embeddings), embeddings.dim) == (22, 32)
    assert [s.shape[0] for s in embeddings.shards] == [8, 8, 6] and embeddings.shards[0].dtype == np.float16
    images = make_dataset(
        dataset_str=dataset, transform=make_classification_eval_transform(resize_size=16, crop_size=16)
    )
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(torch.stack([images[i][0] for i in range(22)])), dim=1)
    rows = embeddings.read(0, 22).astype(np.float32)
    np.testing.assert_allclose(rows, expected.numpy(), rtol=0, atol=2e-3)
    assert np.abs(np.linalg.norm(rows, axis=1) - 1).max() < 2e-3
    assert embeddings.identities() == [images.describe_sample(i) for i in range(22)]
    np.testing.assert_array_equal(embeddings.take(np.array([21, 3, 9])), embeddings.read(0, 22)[[21, 3, 9]])


def test_resume_recomputes_only_missing_shards(setup, tmp_path):
    root, dataset, _ = setup
    out = tmp_path / "run"
    with preserved_logging():
        curation_main(embed_argv(root, dataset, out))
        first = {p.name: (p.stat().st_mtime_ns, np.load(p)) for p in out.glob("shard-*.npy")}
        for name in ("shard-00001.npy", "meta.json", "embed.json"):  # as if the job had died during shard 1
            (out / name).unlink()
        curation_main(embed_argv(root, dataset, out))
    for name, (stamp, array) in first.items():
        np.testing.assert_array_equal(np.load(out / name), array)
        assert (out / name).stat().st_mtime_ns == stamp or name == "shard-00001.npy"
    other = embed_argv(root, dataset, out)
    other[other.index("--crop-size") + 1] = "8"
    with pytest.raises(ValueError, match="other parameters.*crop_size"), preserved_logging():
        curation_main(other)
