"""Caption datasets: a folder of images with .txt captions and CSV / JSON-lines manifests; errors name the file."""

from __future__ import annotations

import json
import random

import pytest

import dinov2.train.dinotxt_parts  # noqa: F401  (registers the caption dataset strings)
from dinov2.data import make_dataset
from dinov2.data.datasets.captions import CaptionFolder, CaptionManifest
from tests.text.helpers import make_image_folder


@pytest.fixture()
def folder(tmp_path):
    make_image_folder(tmp_path / "images", classes=("red", "blue"), per_class=2, size=16)
    for image in sorted((tmp_path / "images").rglob("*.png")):
        image.with_suffix(".txt").write_text(f"a {image.parent.name} square\n\n{image.parent.name} thing\n")
    return tmp_path / "images"


def test_caption_folder_draws_one_of_the_captions(folder):
    dataset = make_dataset(dataset_str=f"CaptionFolder:root={folder}")
    assert isinstance(dataset, CaptionFolder) and len(dataset) == 4
    assert dataset.get_captions(0) == ["a blue square", "blue thing"]  # blank lines dropped
    random.seed(0)
    drawn = {dataset[0][1] for _ in range(20)}
    assert drawn == {"a blue square", "blue thing"} and dataset[0][0].size == (16, 16)


def test_a_missing_caption_file_is_named(folder):
    (folder / "red" / "0.txt").unlink()
    with pytest.raises(FileNotFoundError, match="0.txt"):
        CaptionFolder(root=str(folder))


def test_csv_and_jsonl_manifests(folder, tmp_path):
    (tmp_path / "m.csv").write_text("image,caption\nred/0.png,a red one\nred/0.png,red\nblue/1.png,a blue one\n")
    dataset = make_dataset(dataset_str=f"CaptionManifest:path={tmp_path / 'm.csv'}:root={folder}")
    assert isinstance(dataset, CaptionManifest) and len(dataset) == 2
    assert dataset.get_captions(0) == ["a red one", "red"] and dataset[1][0].size == (16, 16)
    lines = [{"image": "red/1.png", "captions": ["x", "y"]}, {"image": "blue/0.png", "caption": "z"}]
    (folder / "m.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    dataset = CaptionManifest(path=str(folder / "m.jsonl"))  # paths relative to the manifest's folder
    assert [dataset.get_captions(i) for i in range(2)] == [["x", "y"], ["z"]]
    (tmp_path / "bad.csv").write_text("file,text\na.png,b\n")
    with pytest.raises(ValueError, match="'image' and 'caption' columns"):
        CaptionManifest(path=str(tmp_path / "bad.csv"))
