"""The manifest and the ``Curated:manifest=PATH`` dataset: exact samples, weights per source set, fingerprints."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from dinov2.curation.manifest import Part, write_manifest
from dinov2.data import make_dataset
from dinov2.data.samplers import InfiniteSampler


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A Synthetic dataset (12 JPEGs) and a flat ImageFolder of 5 PNGs whose pixel value is their index."""
    root = tmp_path_factory.mktemp("sources")
    synthetic = f"Synthetic:root={root}/synthetic:num_classes=3:images_per_class=4:size=24x20"
    folder = root / "folder"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((8, 8, 3), 10 * i, dtype=np.uint8)).save(folder / f"img{i}.png")
    return synthetic, f"ImageFolder:root={folder}"


def _pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_curated_yields_exactly_the_listed_samples(sources, tmp_path):
    synthetic, folder = sources
    parts = [Part("a", synthetic, np.array([3, 3, 0, 11])), Part("b", folder, np.array([4, 1]))]
    manifest = write_manifest(tmp_path / "manifest.json", parts)
    curated = make_dataset(dataset_str=f"Curated:manifest={manifest}")
    references = {name: make_dataset(dataset_str=s) for name, s in (("a", synthetic), ("b", folder))}
    expected = [("a", 3), ("a", 3), ("a", 0), ("a", 11), ("b", 4), ("b", 1)]
    assert len(curated) == len(expected)
    for i, (name, index) in enumerate(expected):
        image, target = curated[i]
        ref_image, ref_target = references[name][index]
        np.testing.assert_array_equal(_pixels(image), _pixels(ref_image))
        assert target == ref_target
        assert curated.describe_sample(i) == f"{name}: {references[name].describe_sample(index)}"
    record = json.loads(manifest.read_text())
    assert record["format"] == "dinov2-curated" and [p["count"] for p in record["parts"]] == [4, 2]
    assert np.load(tmp_path / record["parts"][1]["indices"], allow_pickle=False).dtype == np.int64


def test_weights_per_source_set(sources, tmp_path):
    synthetic, folder = sources
    parts = [Part("twice", folder, np.arange(5), 2.0), Part("half", synthetic, np.arange(12), 0.5),
             Part("none", folder, np.arange(5), 0.0), Part("once", folder, np.array([0]), 1.0)]  # fmt: skip
    manifest = write_manifest(tmp_path / "manifest.json", parts)
    curated = make_dataset(dataset_str=f"Curated:manifest={manifest}", transform=_pixels)
    assert len(curated) == 10 + 6 + 0 + 1
    located = [(p.name, i) for p, i in map(curated.locate, range(len(curated)))]
    assert sorted(i for n, i in located if n == "twice") == sorted(list(range(5)) * 2)
    half = [i for n, i in located if n == "half"]
    assert len(set(half)) == 6  # half of the list, without repeats
    again = make_dataset(dataset_str=f"Curated:manifest={manifest}")
    assert [again.locate(i)[1] for i in range(len(again))] == [i for _, i in located]  # deterministic
    other_seed = make_dataset(dataset_str=f"Curated:manifest={manifest}:seed=1")
    assert [other_seed.locate(i)[1] for i in range(10, 16)] != half
    # a shuffled sampler draws each part in proportion to weight x count
    stream = iter(InfiniteSampler(sample_count=len(curated), shuffle=True, seed=0))
    names = [curated.locate(next(stream))[0].name for _ in range(17 * 200)]
    assert names.count("twice") == 10 * 200 and names.count("half") == 6 * 200


def test_changed_dataset_is_reported(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    dataset = f"ImageFolder:root={folder}"
    manifest = write_manifest(tmp_path / "m" / "manifest.json", [Part("p", dataset, np.arange(3))])
    os.rename(folder / "2.png", folder / "9.png")
    with pytest.raises(ValueError, match=r"part 'p': dataset .* changed since curation.*verify=false"):
        make_dataset(dataset_str=f"Curated:manifest={manifest}")
    assert len(make_dataset(dataset_str=f"Curated:manifest={manifest}:verify=false")) == 3


def test_bad_manifests_and_dataset_strings(sources, tmp_path):
    synthetic, folder = sources
    with pytest.raises(ValueError, match="unknown key 'manifets'.*accepted keys: manifest, seed, strict, verify"):
        make_dataset(dataset_str=f"Curated:manifets={tmp_path}/m.json")
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        make_dataset(dataset_str=f"Curated:manifest={tmp_path}/missing.json")
    with pytest.raises(ValueError, match=r"part 'x': indices reach 7 but .* has 5"):
        write_manifest(tmp_path / "bad.json", [Part("x", folder, np.array([7]))])
    manifest = write_manifest(tmp_path / "ok.json", [Part("x", folder, np.array([1]))])
    record = json.loads(manifest.read_text())
    record["parts"][0]["weight"] = -1
    manifest.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="weight -1"):
        make_dataset(dataset_str=f"Curated:manifest={manifest}")
    record["parts"][0].update(weight=1, dataset=f"Curated:manifest={manifest}")
    manifest.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="cannot list another Curated"):
        make_dataset(dataset_str=f"Curated:manifest={manifest}")


def test_relative_dataset_paths_are_written_absolute(sources, tmp_path, monkeypatch):
    """A pool given as ``root=folder`` (relative to the curation's working directory) opens the same images when
    the manifest is read from another folder (e.g. a training run)."""
    _, folder = sources
    absolute = folder.split("root=", 1)[1]
    monkeypatch.chdir(os.path.dirname(absolute))
    relative = f"ImageFolder:root={os.path.basename(absolute)}"
    manifest = write_manifest(tmp_path / "manifest.json", [Part("a", relative, np.array([2, 4]))])
    assert json.loads(manifest.read_text())["parts"][0]["dataset"] == f"ImageFolder:root={absolute}"
    monkeypatch.chdir(tmp_path)
    curated = make_dataset(dataset_str=f"Curated:manifest={manifest}")
    reference = make_dataset(dataset_str=folder)
    for i, index in enumerate([2, 4]):
        np.testing.assert_array_equal(_pixels(curated[i][0]), _pixels(reference[index][0]))
