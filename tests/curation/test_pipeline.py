"""The whole pipeline on a folder of generated images, from a YAML config, ending in a training run on ``Curated:``.

A random 2-block ViT embeds ~60 generated images plus planted exact copies (cosine ~1, while distinct images
stay below 0.997 with this model: the dedup threshold is 0.998); images copied into a reference folder are
removed by the relative dedup; the val split is both a retrieval query set and an as-is source.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dinov2.curation.cli import main as curation_main
from dinov2.curation.config import CurationConfigError
from dinov2.data import make_dataset
from dinov2.features.extract import UnreadableImagesError
from dinov2.models import build_model_from_cfg
from dinov2.train.train import get_args_parser as train_args_parser
from dinov2.train.train import main as train_main
from tests.conftest import preserved_logging
from tests.train.tiny import FP32_OPTS, TINY_OPTS, tiny_cfg

pytestmark = pytest.mark.slow

DUPLICATED = [0, 7, 21, 40]  # pool images that get an exact copy
IN_REFERENCE = [3, 33]  # pool images copied into the reference folder


def _images(root: Path) -> tuple[Path, Path, str]:
    """(pool folder, reference folder, val dataset string)."""
    synthetic = f"Synthetic:root={root}/synthetic:num_classes=3:images_per_class=20:val_images_per_class=4:size=40x32"
    train = make_dataset(dataset_str=synthetic)
    pool, reference = root / "pool", root / "reference"
    reference.mkdir()
    for i, (path, _) in enumerate(train.samples):
        target = pool / Path(path).parent.name / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
        if i in DUPLICATED:
            shutil.copy(path, target.with_name("zz_copy_" + target.name))  # sorts after the original
        if i in IN_REFERENCE:
            shutil.copy(path, reference / Path(path).name)
    return pool, reference, synthetic + ":split=VAL"


def _backbone(root: Path) -> tuple[Path, Path]:
    cfg = tiny_cfg(root / "model")
    torch.manual_seed(0)
    model, _ = build_model_from_cfg(cfg, only_teacher=True)
    weights = root / "backbone.pth"
    torch.save(model.state_dict(), weights)
    OmegaConf.save(cfg, root / "model.yaml")
    return root / "model.yaml", weights


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    root = tmp_path_factory.mktemp("curation")
    pool, reference, val = _images(root)
    config_file, weights = _backbone(root)
    references = {"eval": {"dataset": f"ImageFolder:root={reference}"}}
    yaml = {
        "output_dir": str(root / "out"),
        "device": "cpu",
        "progress": False,
        "embed": {
            "config_file": str(config_file),
            "pretrained_weights": str(weights),
            "batch_size": 16,
            "num_workers": 0,
            "crop_size": 16,
            "resize_size": 16,
            "shard_size": 25,
        },
        "pool": {"dataset": f"ImageFolder:root={pool}", "weight": 0.0},
        "dedup": {"k": 8, "threshold": 0.998},
        "relative_dedup": {"k": 8, "threshold": 0.998, "references": references},
        "retrieval": {"queries": {"val": {"dataset": val, "mode": "sample", "k": 2, "weight": 2.0}}},
        "kmeans": {
            "enabled": True,
            "n_clusters": [8, 3],
            "n_resampling_steps": [1, 1],
            "sample_size": [3, 2],
            "n_iters": 5,
        },
        "sample": {"target_size": 20},
        "pictures": {"levels": [1, 2], "clusters": 3, "per_cluster": 4, "size": 16},
        "as_is": {"val": {"dataset": val, "weight": 0.5}},
    }
    (root / "curation.yaml").write_text(json.dumps(yaml))  # JSON is YAML
    with preserved_logging():
        manifest = curation_main(["run", "--config-file", str(root / "curation.yaml")])
    return root, manifest


def test_pipeline_outputs(curated):
    root, manifest = curated
    out = root / "out"
    pool = make_dataset(dataset_str=f"ImageFolder:root={root}/pool")
    names = [Path(p).name for p, _ in pool.samples]
    copies = [i for i, n in enumerate(names) if n.startswith("zz_copy_")]
    kept = np.load(out / "dedup" / "kept_indices.npy")
    assert len(pool) == 64 and len(kept) == 60 and not np.isin(copies, kept).any()  # one of each pair kept
    relative = np.load(out / "dedup_relative" / "eval" / "kept_indices.npy")
    in_reference = {Path(p).name for p in (root / "reference").iterdir()}
    assert sorted(names[i] for i in set(kept) - set(relative)) == sorted(in_reference)
    record = json.loads(manifest.read_text())
    parts = {p["name"]: p for p in record["parts"]}
    assert set(parts) == {"retrieved/val", "balanced", "as_is/val"}
    assert parts["retrieved/val"]["count"] == 12 * 2 and parts["balanced"]["count"] == 20
    assert parts["as_is/val"]["weight"] == 0.5 and parts["retrieved/val"]["weight"] == 2.0
    balanced = np.load(out / "parts" / "balanced.npy")
    assert np.isin(balanced, relative).all() and len(np.unique(balanced)) == 20
    for level in (1, 2):
        assert (out / "pictures" / f"level{level}.png").stat().st_size > 0
    meta = json.loads((out / "embeddings" / "pool" / "meta.json").read_text())
    assert meta["count"] == 64 and [s["rows"] for s in meta["shards"]] == [25, 25, 14]


def test_rerun_skips_every_step(curated):
    root, manifest = curated
    watched = [
        root / "out" / f
        for f in (
            "embeddings/pool/shard-00000.npy",
            "kmeans/level1/centroids.npy",
            "retrieval/val/retrieved_indices.npy",
            "dedup/kept_indices.npy",
        )
    ]
    stamps = [p.stat().st_mtime_ns for p in watched]
    with preserved_logging():
        curation_main(["run", "--config-file", str(root / "curation.yaml")])
    assert [p.stat().st_mtime_ns for p in watched] == stamps


def test_training_starts_from_the_curated_dataset(curated):
    root, manifest = curated
    curated_dataset = make_dataset(dataset_str=f"Curated:manifest={manifest}")
    assert len(curated_dataset) == 24 * 2 + 20 + 6  # retrieved x2, balanced, half of the 12 val images
    opts = [
        *TINY_OPTS,
        *FP32_OPTS,
        f"train.dataset_path=Curated:manifest={manifest}",
        "optim.epochs=1",
        "optim.warmup_epochs=0",
        "teacher.warmup_teacher_temp_epochs=0",
        "optim.freeze_last_layer_epochs=0",
    ]
    args = train_args_parser().parse_args(["--output-dir", str(root / "train"), *opts])
    history = []
    with preserved_logging():
        train_main(args, history=history)
    assert [iteration for iteration, _ in history] == [0, 1, 2, 3]
    assert all(math.isfinite(v) for _, losses in history for v in losses.values())
    assert "Curated:manifest=" in (root / "train" / "config.yaml").read_text()


def _dedup_only(tmp_path: Path, pool: Path, embed: dict, size: int) -> dict:
    """A curation config (as a dict) that embeds the image folder ``pool`` at ``size`` px with ``embed``'s backbone
    and removes exact copies, on the CPU, into ``tmp_path / "out"``."""
    return {
        "output_dir": str(tmp_path / "out"),
        "device": "cpu",
        "progress": False,
        "embed": {"num_workers": 0, "crop_size": size, "resize_size": size, **embed},
        "pool": {"dataset": f"ImageFolder:root={pool}", "weight": 1.0},
        "dedup": {"k": 2, "threshold": 0.9999},
        "kmeans": {"enabled": False},
    }


def test_unreadable_pool_images_never_reach_the_manifest(tmp_path):
    """A truncated JPEG and a text file named ``.jpg`` among the pool: no row, no manifest entry; every manifest
    index names a good image (rows are mapped to dataset indices)."""
    _images(tmp_path)  # the generated pool folder
    pool = tmp_path / "damaged"
    pool.mkdir()
    good = sorted((tmp_path / "pool").rglob("[!z]*.jpg"))[:6]
    (pool / "a_truncated.jpg").write_bytes(good[0].read_bytes()[:200])
    (pool / "b_text.jpg").write_text("not an image")
    for path in good:
        shutil.copy(path, pool / f"c_{path.name}")
    config_file, weights = _backbone(tmp_path)
    embed = {"config_file": str(config_file), "pretrained_weights": str(weights), "batch_size": 4, "shard_size": 3}
    yaml = _dedup_only(tmp_path, pool, embed, size=16)
    (tmp_path / "curation.yaml").write_text(json.dumps(yaml))
    with preserved_logging():
        manifest = curation_main(["run", "--config-file", str(tmp_path / "curation.yaml")])
    curated_dataset = make_dataset(dataset_str=f"Curated:manifest={manifest}")
    names = sorted(Path(curated_dataset.describe_sample(i)).name for i in range(len(curated_dataset)))
    assert names == sorted(f"c_{path.name}" for path in good)
    listed = (tmp_path / "out" / "embeddings" / "pool" / "unreadable.txt").read_text().splitlines()
    assert [Path(line).name for line in listed] == ["a_truncated.jpg", "b_text.jpg"]
    with preserved_logging():
        yaml["embed"]["strict"] = True
        yaml["output_dir"] = str(tmp_path / "strict")
        (tmp_path / "strict.yaml").write_text(json.dumps(yaml))
        with pytest.raises(UnreadableImagesError, match="a_truncated.jpg.*b_text.jpg"):
            curation_main(["run", "--config-file", str(tmp_path / "strict.yaml")])


@pytest.mark.parametrize("config_file", ["", "dinov2_vits14"])
def test_the_embed_backbone_may_be_weights_alone_or_a_hub_name(tmp_path, config_file):
    """``embed.config_file: ""`` reads the architecture from the weights, a hub name builds its architecture."""
    from dinov2.models.vision_transformer import vit_small

    _images(tmp_path)
    torch.manual_seed(0)
    torch.save(vit_small(patch_size=14, img_size=28, block_chunks=0, init_values=1.0).state_dict(), tmp_path / "w.pth")
    embed = {"config_file": config_file, "pretrained_weights": str(tmp_path / "w.pth"), "batch_size": 16}
    yaml = _dedup_only(tmp_path, tmp_path / "pool", embed, size=28)
    (tmp_path / "curation.yaml").write_text(json.dumps(yaml))
    with preserved_logging():
        manifest = curation_main(["run", "--config-file", str(tmp_path / "curation.yaml")])
    assert len(make_dataset(dataset_str=f"Curated:manifest={manifest}")) == 60  # the exact copies removed


def test_a_preset_sized_for_more_images_names_the_key_to_lower(tmp_path):
    """configs/curation/small.yaml's sizes on a folder of 22 images: dedup.k=64 is capped to the pool (no error
    naming a flag ``run`` does not take); kmeans.n_clusters=[200, 20] is an error naming that key and the images."""
    _images(tmp_path)
    folder = sorted((tmp_path / "pool").iterdir())[0]
    config_file, weights = _backbone(tmp_path)
    preset = OmegaConf.load(Path(__file__).resolve().parents[2] / "dinov2/configs/curation/small.yaml")
    yaml = {
        **OmegaConf.to_container(preset),
        "output_dir": str(tmp_path / "out"),
        "device": "cpu",
        "progress": False,
        "pool": {"dataset": f"ImageFolder:root={folder}"},
    }
    yaml["embed"].update(config_file=str(config_file), pretrained_weights=str(weights), num_workers=0, crop_size=16)
    yaml["embed"]["resize_size"] = 16
    (tmp_path / "curation.yaml").write_text(json.dumps(yaml))
    with preserved_logging(), pytest.raises(CurationConfigError, match=r"kmeans.n_clusters=\[200, 20\].*holds \d"):
        curation_main(["run", "--config-file", str(tmp_path / "curation.yaml")])
    assert json.loads((tmp_path / "out" / "dedup" / "dedup.json").read_text())["params"]["k"] == 22
