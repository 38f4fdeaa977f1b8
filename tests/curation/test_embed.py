"""Embedding: float16 shards of L2-normalised features in dataset order, identities, resume (2 processes:
tests/curation/test_distributed.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from dinov2.curation.arrays import Embeddings, RowSet
from dinov2.curation.cli import main as curation_main
from dinov2.curation.dedup import deduplicate
from dinov2.curation.embed import dataset_indices, embed_dataset
from dinov2.curation.files import read_json
from dinov2.data import make_dataset
from dinov2.data.transforms import make_classification_eval_transform
from dinov2.features.extract import UnreadableImagesError
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


@pytest.fixture(scope="module")
def damaged(setup, tmp_path_factory):
    """A folder of two good images before a truncated JPEG and a text file named ``.jpg``, and the same good
    images alone (``clean``)."""
    root, dataset, _ = setup
    make_dataset(dataset_str=dataset)  # writes the synthetic images
    images = sorted((root / "data").rglob("*.jpg"))[:2]
    folder, clean = tmp_path_factory.mktemp("damaged"), tmp_path_factory.mktemp("clean")
    good = [image.read_bytes() for image in images]
    files = {"0_truncated.jpg": good[0][: len(good[0]) // 2], "1_text.jpg": b"not an image\n"}
    files.update({"2_good.jpg": good[0], "3_good.jpg": good[1]})
    for name, data in files.items():
        (folder / name).write_bytes(data)
        if "good" in name:
            (clean / name).write_bytes(data)
    return folder, clean


def test_unreadable_images_are_left_out_never_substituted(setup, damaged, tmp_path):
    root, _, _ = setup
    folder, clean = damaged
    with preserved_logging():
        curation_main(embed_argv(root, f"ImageFolder:root={folder}", tmp_path / "damaged"))
        curation_main(embed_argv(root, f"ImageFolder:root={clean}", tmp_path / "clean"))
    embeddings, expected = Embeddings(tmp_path / "damaged"), Embeddings(tmp_path / "clean")
    # rows and identities correspond: the bad files have no row, the good ones their own embedding
    assert [Path(name).name for name in embeddings.identities()] == ["2_good.jpg", "3_good.jpg"]
    np.testing.assert_array_equal(embeddings.read(0, len(embeddings)), expected.read(0, 2))
    listed = (tmp_path / "damaged" / "unreadable.txt").read_text().splitlines()
    assert [Path(name).name for name in listed] == ["0_truncated.jpg", "1_text.jpg"]
    assert read_json(tmp_path / "damaged" / "embed.json", "embed")["unreadable"] == 2
    assert dataset_indices(tmp_path / "damaged", [0, 1]).tolist() == [2, 3]
    assert dataset_indices(tmp_path / "clean", [0, 1]).tolist() == [0, 1]
    # dedup keeps the good image (the unreadable files used to carry its embedding and win)
    kept = deduplicate(RowSet.open(tmp_path / "damaged", "pool"), tmp_path / "dedup", k=1, threshold=0.6)
    assert [Path(embeddings.identities()[i]).name for i in kept.kept] == ["2_good.jpg", "3_good.jpg"]


def test_resume_keeps_the_list_of_unreadable_images(setup, damaged, tmp_path):
    root, _, _ = setup
    out, argv = tmp_path / "run", embed_argv(root, f"ImageFolder:root={damaged[0]}", tmp_path / "run")
    argv[argv.index("--shard-size") + 1] = "2"  # shard 0: both bad files (no row), shard 1: the good images
    with preserved_logging():
        curation_main(argv)
        first = (out / "unreadable.txt").read_text(), np.load(out / "dataset_indices.npy")
        for name in ("shard-00001.npy", "meta.json", "embed.json", "unreadable.txt", "dataset_indices.npy"):
            (out / name).unlink()
        curation_main(argv)
    assert (out / "unreadable.txt").read_text() == first[0] and len(first[0].splitlines()) == 2
    np.testing.assert_array_equal(np.load(out / "dataset_indices.npy"), first[1])
    assert len(Embeddings(out)) == 2


def test_strict_embedding_stops_naming_the_unreadable_files(setup, damaged, tmp_path):
    _, _, model = setup
    transform = make_classification_eval_transform(resize_size=16, crop_size=16)
    dataset = make_dataset(dataset_str=f"ImageFolder:root={damaged[0]}", transform=transform)
    with pytest.raises(UnreadableImagesError, match=r"2 of 4 images are unreadable .*0_truncated.jpg.*1_text.jpg"):
        embed_dataset(model, dataset, tmp_path / "strict", num_workers=0, progress=False, strict=True)
    assert not list((tmp_path / "strict").glob("shard-*"))


def test_the_strict_flag_of_the_command_line_stops_naming_the_unreadable_files(setup, damaged, tmp_path):
    root, _, _ = setup
    argv = [*embed_argv(root, f"ImageFolder:root={damaged[0]}", tmp_path / "strict"), "--strict"]
    with preserved_logging(), pytest.raises(UnreadableImagesError, match=r"0_truncated.jpg.*1_text.jpg"):
        curation_main(argv)
    assert not list((tmp_path / "strict").glob("shard-*.npy"))


def test_standalone_sample_and_pictures_map_rows_to_images(setup, damaged, tmp_path):
    """After embed left two unreadable files out, ``sample`` writes the good images' dataset indices and
    ``pictures`` shows them: the same picture as for a folder holding only the good images."""
    root, _, _ = setup
    folder, clean = damaged
    pictures = {}
    with preserved_logging():
        for name, images in (("damaged", folder), ("clean", clean)):
            out, dataset = tmp_path / name, f"ImageFolder:root={images}"
            curation_main(embed_argv(root, dataset, out / "embed"))
            kmeans = ["--n-clusters", "1", "--n-iters", "2", "--output-dir", str(out / "kmeans")]
            curation_main(["kmeans", "--embeddings", str(out / "embed"), *kmeans])
            curation_main(
                ["sample", "--clustering", str(out / "kmeans"), "--target-size", "2", "--output", str(out / "s.npy")]
            )
            picture = ["--dataset", dataset, "--output", str(out / "grid.png"), "--size", "16"]
            curation_main(["pictures", "--clustering", str(out / "kmeans"), *picture])
            pictures[name] = np.asarray(Image.open(out / "grid.png"))
    assert np.load(tmp_path / "damaged" / "s.npy").tolist() == [2, 3]  # 2_good.jpg, 3_good.jpg
    assert np.load(tmp_path / "clean" / "s.npy").tolist() == [0, 1]
    np.testing.assert_array_equal(pictures["damaged"], pictures["clean"])


def test_the_command_line_takes_a_hub_name_or_weights_alone_as_its_help_says(setup, tmp_path, capsys):
    """``--config-file dinov2_vits14`` (a hub name) and ``--config-file ''`` (the architecture read from the weights)
    embed like the config they stand for; overrides with them are a usage error (before: both were refused as a
    config file that is not there)."""
    from dinov2.models.vision_transformer import vit_small

    root, dataset, _ = setup
    torch.manual_seed(0)
    weights = tmp_path / "vits14.pth"
    torch.save(vit_small(patch_size=14, img_size=28, block_chunks=0, init_values=1.0).state_dict(), weights)

    def argv(config: str, out: str) -> list[str]:
        base = embed_argv(root, dataset, tmp_path / out)
        base[base.index("--config-file") + 1], base[base.index("--pretrained-weights") + 1] = config, str(weights)
        base[base.index("--crop-size") + 1] = base[base.index("--resize-size") + 1] = "28"
        return base

    with preserved_logging():
        curation_main(argv("dinov2_vits14", "hub"))
        curation_main(argv("", "alone"))
    by_name, alone = Embeddings(tmp_path / "hub"), Embeddings(tmp_path / "alone")
    assert (len(by_name), by_name.dim) == (22, 384)
    np.testing.assert_array_equal(by_name.read(0, 22), alone.read(0, 22))
    with pytest.raises(SystemExit) as exit_info:
        curation_main([*argv("dinov2_vits14", "bad"), "crops.global_crops_size=28"])
    assert exit_info.value.code == 2
    assert "change a config; --config-file dinov2_vits14 has none" in capsys.readouterr().err
