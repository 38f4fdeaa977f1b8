"""Transfer dataset adapters on fake on-disk trees give the samples of torchvision's classes (same images, same
labels, same order); our own readers (SUN397 partitions, VOC 2007 labels, CUB, Caltech-101 split) too."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import datasets as tv
from torchvision.transforms import functional as TF

from dinov2.data.datasets.transfer import per_class_split
from dinov2.eval.transfer.datasets import dataset_splits, parse_folder_spec
from tests.eval.transfer import trees


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    for make in (trees.make_dtd, trees.make_pets, trees.make_sun397, trees.make_caltech101, trees.make_cub):
        make(root)
    return root


def _samples(dataset):
    """(image tensor, label) of every sample, RGB."""
    out = []
    for i in range(len(dataset)):
        image, label = dataset[i]
        out.append((image if isinstance(image, torch.Tensor) else TF.to_tensor(image.convert("RGB")), label))
    return out


def _assert_same(ours, theirs):
    ours, theirs = _samples(ours), _samples(theirs)
    assert len(ours) == len(theirs) > 0
    for (a, la), (b, lb) in zip(ours, theirs):
        assert la == lb and torch.equal(a, b)


@pytest.mark.parametrize(
    "name, cls, roles",
    [
        ("dtd", lambda r, s: tv.DTD(r, split=s, partition=1), {"train": "train", "val": "val", "test": "test"}),
        ("pets", lambda r, s: tv.OxfordIIITPet(r, split=s), {"train": "trainval", "test": "test"}),
    ],
)
def test_torchvision_backed_splits_equal_torchvision(root, name, cls, roles):
    splits = dataset_splits(name, root, TF.to_tensor)
    for role, tv_split in roles.items():
        _assert_same(splits[role], cls(str(root), tv_split))
    assert set(roles) == {role for role, ds in splits.items() if ds is not None}


def test_sun397_partition_is_torchvision_sun397_restricted_to_the_partition(root):
    full = tv.SUN397(str(root))
    by_path = {str(p): label for p, label in zip(full._image_files, full._labels)}
    splits = dataset_splits("sun397", root, TF.to_tensor)
    assert len(splits["train"]) == len(splits["test"]) == 6 and splits["val"] is None
    for role in ("train", "test"):
        ds = splits[role]
        assert ds.targets == [by_path[str(p)] for p in ds.paths]
        assert all(ds[i][0].shape[0] == 3 for i in range(len(ds)))  # grayscale images come out RGB
    assert sorted(set(splits["train"].targets)) == [0, 1, 2]  # the two-level class name resolves


def test_caltech101_split_is_30_per_class_of_torchvision_and_seeded(root):
    full = tv.Caltech101(str(root), target_type="category")
    splits = dataset_splits("caltech101", root, TF.to_tensor, seed=3)
    train, test = splits["train"].indices, splits["test"].indices
    assert sorted(train + test) == list(range(len(full))) and not set(train) & set(test)
    assert dataset_splits("caltech101", root, TF.to_tensor, seed=3)["train"].indices == train
    labels = [full.y[i] for i in train]
    assert labels.count(0) == 5 and labels.count(1) == 4 and labels.count(2) == 2  # fewer than 30: all
    assert per_class_split([0] * 40 + [1] * 35, 30, 0)[0] != per_class_split([0] * 40 + [1] * 35, 30, 1)[0]
    assert len(per_class_split([0] * 40 + [1] * 35, 30, 0)[0]) == 60
    assert splits["train"][0][0].shape[0] == 3  # grayscale image_0001 converted


def test_voc2007_targets_and_images_match_the_files_and_torchvision(tmp_path):
    targets = trees.make_voc2007(tmp_path)
    splits = dataset_splits("voc2007", tmp_path, TF.to_tensor)
    for split in ("train", "val", "test"):
        ds = splits[split]
        assert np.array_equal(ds.multi_hot, targets[split])
        assert [str(p) for p in ds.paths] == tv.VOCDetection(str(tmp_path), year="2007", image_set=split).images
        assert ds[2][1] == 2  # the label is the row of multi_hot


def test_cub_reader(root):
    rows = trees.make_cub(root)
    splits = dataset_splits("cub", root, TF.to_tensor)
    for role, is_train in (("train", True), ("test", False)):
        expected = [(f, label) for f, label, t in rows if t == is_train]
        got = [
            (str(p.relative_to(root / "CUB_200_2011" / "images")), t)
            for p, t in zip(splits[role].paths, splits[role].targets)
        ]
        assert got == expected


def test_missing_dataset_and_bad_folder_spec_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="flowers not found under --data-root .* never downloads"):
        dataset_splits("flowers", tmp_path, TF.to_tensor)
    with pytest.raises(ValueError, match="unknown transfer dataset 'imagenet'"):
        dataset_splits("imagenet", tmp_path, TF.to_tensor)
    with pytest.raises(ValueError, match="NAME:train=DIR:test=DIR"):
        parse_folder_spec("birds:train=/a")
    assert parse_folder_spec("birds:train=/a:test=/b:metric=mean_per_class") == (
        "birds",
        "mean_per_class",
        {"train": "/a", "test": "/b"},
    )
