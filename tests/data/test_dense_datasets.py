"""Dense datasets on generated folders (released layouts), dataset strings, and errors naming the files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dinov2.data.dataset_strings import parse_dataset_str
from dinov2.data.datasets import ADE20K, NYU, VOC2012, DepthFolder, SegmentationFolder, SyntheticDense
from dinov2.data.datasets.synthetic_dense import make_synthetic_dense_dataset


def _image(path, size=(8, 6), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def _label(path, array, mode=None):
    """An 8-bit label PNG: grey, or palette-indexed as the VOC files (``mode='P'``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    image = Image.fromarray(array)
    if mode == "P":
        image = Image.frombytes("P", image.size, array.tobytes())
        image.putpalette([c for i in range(256) for c in (i, 0, 255 - i)])
    image.save(path)


def test_ade20k_layout_and_reduce_zero_label(tmp_path):
    for split in ("training", "validation"):
        for i in range(2):
            _image(tmp_path / "images" / split / f"ADE_{split}_{i:08d}.jpg", value=10 * i)
            labels = np.tile([0, 1, 150, 2], (6, 2))
            _label(tmp_path / "annotations" / split / f"ADE_{split}_{i:08d}.png", labels)
    dataset = ADE20K(root=str(tmp_path), split="VAL")
    assert len(dataset) == 2 and dataset.pairs[0][0].name == "ADE_validation_00000000.jpg"
    image, target = dataset[1]
    assert image.size == (8, 6) and target.dtype == np.int64
    assert target[0, :4].tolist() == [255, 0, 149, 1]  # "other" ignored, 1..150 -> 0..149
    cls, kwargs = parse_dataset_str(f"ADE20K:root={tmp_path}:split=train")
    assert cls is ADE20K and len(cls(**kwargs)) == 2


def test_mismatched_pairs_are_errors_naming_the_files(tmp_path):
    _image(tmp_path / "images" / "a.jpg")
    _image(tmp_path / "images" / "sub" / "b.png")
    _label(tmp_path / "labels" / "a.png", np.zeros((6, 8)))
    _label(tmp_path / "labels" / "c.png", np.zeros((6, 8)))
    with pytest.raises(ValueError) as error:
        SegmentationFolder(root=str(tmp_path))
    message = str(error.value)
    assert "images" in message and str(tmp_path / "images" / "sub" / "b.png") in message
    assert str(tmp_path / "labels" / "sub" / "b.png") in message and str(tmp_path / "labels" / "c.png") in message
    (tmp_path / "labels" / "c.png").unlink()
    _label(tmp_path / "labels" / "sub" / "b.png", np.zeros((5, 8)))  # wrong size
    dataset = SegmentationFolder(root=str(tmp_path))
    assert dataset[0][1].shape == (6, 8)
    with pytest.raises(ValueError, match=r"b\.png is 8x6 but its target .*b\.png is 8x5"):
        dataset[1]
    with pytest.raises(FileNotFoundError, match="target folder"):
        DepthFolder(root=str(tmp_path))


def test_segmentation_folder_palette_labels_and_depth_folder(tmp_path):
    _image(tmp_path / "images" / "x.jpg")
    _label(tmp_path / "labels" / "x.png", np.arange(48).reshape(6, 8) % 21, mode="P")
    assert SegmentationFolder(root=str(tmp_path))[0][1][0, :3].tolist() == [0, 1, 2]
    depth_mm = (np.arange(48).reshape(6, 8) * 250).astype(np.uint16)
    (tmp_path / "depths").mkdir()
    Image.fromarray(depth_mm).save(tmp_path / "depths" / "x.png")
    cls, kwargs = parse_dataset_str(f"DepthFolder:root={tmp_path}:depth_scale=250")
    image, depth = cls(**kwargs)[0]
    assert depth.dtype == np.float32 and depth[0, :3].tolist() == [0.0, 1.0, 2.0]


def test_voc2012_with_and_without_the_augmented_list(tmp_path):
    sets = tmp_path / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    for name, label_dir in [("a", "SegmentationClass"), ("b", "SegmentationClass"), ("c", "SegmentationClassAug")]:
        _image(tmp_path / "JPEGImages" / f"{name}.jpg")
        _label(tmp_path / label_dir / f"{name}.png", np.full((6, 8), 3), mode="P")
    (sets / "train.txt").write_text("a\n")
    (sets / "val.txt").write_text("b\n")
    assert len(VOC2012(root=str(tmp_path), split="TRAIN")) == 1
    with pytest.raises(FileNotFoundError, match="aug.txt"):
        VOC2012(root=str(tmp_path), split="TRAIN", aug="true")
    (sets / "aug.txt").write_text("c\n")
    train = VOC2012(root=str(tmp_path), split="TRAIN")
    assert [p[1].parent.name for p in train.pairs] == ["SegmentationClass", "SegmentationClassAug"]
    assert len(VOC2012(root=str(tmp_path), split="TRAIN", aug="false")) == 1
    assert int(VOC2012(root=str(tmp_path), split="VAL")[0][1][0, 0]) == 3  # no reduce_zero_label
    (sets / "val.txt").write_text("b\nmissing\n")
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/missing\.jpg"):
        VOC2012(root=str(tmp_path), split="VAL")


def test_nyu_file_list_layout(tmp_path):
    lines = []
    for scene, i in [("kitchen_0028b", 45), ("bathroom_0001", 3)]:
        _image(tmp_path / scene / f"rgb_{i:05d}.jpg")
        Image.fromarray(np.full((6, 8), 1500, dtype=np.uint16)).save(tmp_path / scene / f"sync_depth_{i:05d}.png")
        lines.append(f"/{scene}/rgb_{i:05d}.jpg /{scene}/sync_depth_{i:05d}.png 518.8579")
    lines.append("/kitchen_0028b/rgb_00046.jpg None 518.8579")  # skipped, as released
    (tmp_path / "nyu_train.txt").write_text("\n".join(lines) + "\n")
    dataset = NYU(root=str(tmp_path), split="TRAIN")
    assert [p[0].parent.name for p in dataset.pairs] == ["bathroom_0001", "kitchen_0028b"]  # sorted by image path
    assert float(dataset[0][1][0, 0]) == pytest.approx(1.5)
    with pytest.raises(FileNotFoundError, match="nyu_test.txt"):
        NYU(root=str(tmp_path), split="TEST")
    (tmp_path / "list.txt").write_text("/kitchen_0028b/rgb_00045.jpg /kitchen_0028b/nope.png 1\n")
    with pytest.raises(FileNotFoundError, match=r"kitchen_0028b/nope\.png"):
        parse_dataset_str(f"NYU:root={tmp_path}:split_file={tmp_path / 'list.txt'}")[0](
            root=str(tmp_path), split_file=str(tmp_path / "list.txt")
        )


def test_synthetic_dense_is_deterministic_and_consistent(tmp_path):
    root_a = make_synthetic_dense_dataset(tmp_path / "a", num_classes=3, images=3, val_images=2, size=(40, 30))
    root_b = make_synthetic_dense_dataset(tmp_path / "b", num_classes=3, images=3, val_images=2, size=(40, 30))
    files = sorted(p.relative_to(root_a) for p in root_a.rglob("*.png"))
    assert len(files) == 15
    assert all((root_a / f).read_bytes() == (root_b / f).read_bytes() for f in files)
    assert json.loads((root_a / "synthetic_dense.json").read_text())["num_classes"] == 3
    keys = f"root={root_a}:num_classes=3:images=3:val_images=2:size=40x30"
    seg_cls, seg_kwargs = parse_dataset_str(f"SyntheticDense:{keys}:split=VAL")
    depth_cls, depth_kwargs = parse_dataset_str(f"SyntheticDense:{keys}:task=depth")
    segmentation, depth = seg_cls(**seg_kwargs), depth_cls(**depth_kwargs)
    assert segmentation.num_classes == 4 and len(segmentation) == 2 and len(depth) == 3
    for index in range(3):
        _, labels = SyntheticDense(root=str(root_a), num_classes=3, images=3, val_images=2, size=(40, 30))[index]
        _, metres = depth[index]
        assert labels.max() <= 3 and metres.min() >= 1.0 and metres.max() <= 8.0
        background = labels == 0  # the ground plane: depth falls linearly from 8 m (top) to 2 m (bottom)
        rows = np.broadcast_to(np.linspace(8.0, 2.0, 30)[:, None], (30, 40))
        assert np.abs(metres[background] - rows[background]).max() <= 0.0005
    with pytest.raises(ValueError, match="made with"):
        make_synthetic_dense_dataset(root_a, num_classes=2, images=3, val_images=2, size=(40, 30))
