"""Datasets on generated files: ImageNet and ImageNet-22k layouts with their metadata, image folders,
unreadable files (skip / strict), the synthetic set, and dataset-string errors."""

from __future__ import annotations

import gzip
import io
import json
import logging
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from dinov2.data import DatasetWithEnumeratedTargets, make_dataset
from dinov2.data.datasets import (
    CorruptImageError,
    ImageFolder,
    ImageNet,
    ImageNet22k,
    Synthetic,
    make_synthetic_dataset,
    write_blocks_log,
)
from dinov2.data.datasets.extended import ExtendedVisionDataset, Unreadable, describe_sample, unreadable_policy

CLASSES = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish", "n01484850": "great white shark"}


def _jpeg(colour, size=(20, 16)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _colour(class_index: int) -> tuple[int, int, int]:
    return [(250, 10, 10), (10, 250, 10), (10, 10, 250)][class_index]


def _mean_colour(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32).mean((0, 1))


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    (root / "labels.txt").write_text("".join(f'{cid},"{name}"\n' for cid, name in CLASSES.items()))
    for class_index, class_id in enumerate(sorted(CLASSES)):
        (root / "train" / class_id).mkdir(parents=True)
        (root / "val" / class_id).mkdir(parents=True)
        for n in (3, 10, 7)[: class_index + 1]:
            (root / "train" / class_id / f"{class_id}_{n}.JPEG").write_bytes(_jpeg(_colour(class_index)))
        val_number = 5 - class_index
        (root / "val" / class_id / f"ILSVRC2012_val_{val_number:08d}.JPEG").write_bytes(_jpeg(_colour(class_index)))
    (root / "test").mkdir()
    for n in (2, 1):
        (root / "test" / f"ILSVRC2012_test_{n:08d}.JPEG").write_bytes(_jpeg((128, 128, 128)))
    return root


def test_imagenet_dump_extra_writes_released_files(imagenet_root, tmp_path):
    extra = tmp_path / "extra"
    for split in ImageNet.Split:
        ImageNet(split=split, root=str(imagenet_root), extra=str(extra)).dump_extra()
    names = sorted(p.name for p in extra.iterdir())
    assert names == sorted(
        [f"entries-{s}.npy" for s in ("TRAIN", "VAL", "TEST")]
        + [f"class-{kind}-{s}.npy" for kind in ("ids", "names") for s in ("TRAIN", "VAL")]
    )
    entries = np.load(extra / "entries-TRAIN.npy")
    assert entries.dtype.names == ("actual_index", "class_index", "class_id", "class_name")
    longest_name = max(len(n) for n in CLASSES.values())
    assert [entries.dtype[i].str for i in range(4)] == ["<u4", "<u4", "<U9", f"<U{longest_name}"]
    assert entries["actual_index"].tolist() == [3, 10, 3, 10, 3, 7]  # sorted classes, then sorted file names
    assert entries["class_index"].tolist() == [0, 1, 1, 2, 2, 2]
    assert np.load(extra / "class-ids-TRAIN.npy").tolist() == sorted(CLASSES)
    assert np.load(extra / "class-names-TRAIN.npy").tolist() == [CLASSES[c] for c in sorted(CLASSES)]
    test_entries = np.load(extra / "entries-TEST.npy")
    assert test_entries["actual_index"].tolist() == [1, 2] and set(test_entries["class_index"]) == {2**32 - 1}


def test_imagenet_samples_targets_and_class_info(imagenet_root, tmp_path):
    extra = str(tmp_path / "extra")
    for split in ("TRAIN", "VAL", "TEST"):
        ImageNet(split=split, root=str(imagenet_root), extra=extra).dump_extra()
    train = make_dataset(dataset_str=f"ImageNet:split=TRAIN:root={imagenet_root}:extra={extra}")
    assert len(train) == 6 and train.split == ImageNet.Split.TRAIN
    for index in range(len(train)):
        image, target = train[index]
        assert target == train.get_target(index) and image.mode == "RGB"
        assert np.abs(_mean_colour(image) - _colour(target)).max() < 8  # the image of its class folder
    assert train.get_class_id(5) == "n01484850" and train.get_class_name(0) == "tench, Tinca tinca"
    assert train.find_class_name(1) == "goldfish" and train.get_targets().tolist() == [0, 1, 1, 2, 2, 2]
    val = ImageNet(split=ImageNet.Split.VAL, root=str(imagenet_root), extra=extra, transform=_mean_colour)
    assert [int(np.argmax(val[i][0])) for i in range(3)] == [0, 1, 2]
    test = ImageNet(split="TEST", root=str(imagenet_root), extra=extra)
    assert len(test) == 2 and test[0][1] is None and test.get_targets() is None
    assert DatasetWithEnumeratedTargets(test)[1][1] == (1, 1)  # unlabelled: the index stands in
    assert DatasetWithEnumeratedTargets(train)[4][1] == (4, 2)


def test_imagenet_reads_metadata_written_elsewhere(imagenet_root, tmp_path):
    """An ``extra`` folder made by the released code (same names and dtypes, other string widths) works."""
    extra = tmp_path / "theirs"
    extra.mkdir()
    dtype = np.dtype([("actual_index", "<u4"), ("class_index", "<u4"), ("class_id", "U16"), ("class_name", "U64")])
    entries = np.array([(10, 1, "n01443537", "goldfish"), (7, 2, "n01484850", "great white shark")], dtype=dtype)
    np.save(extra / "entries-TRAIN.npy", entries)
    np.save(extra / "class-names-TRAIN.npy", np.array(["a", "goldfish", "shark"], dtype="U32"))
    dataset = ImageNet(split=ImageNet.Split.TRAIN, root=str(imagenet_root), extra=str(extra))
    assert len(dataset) == 2 and dataset[1][1] == 2 and dataset.find_class_name(1) == "goldfish"


def test_imagenet_errors_name_the_fix(imagenet_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ImageNet(split="TRAIN", root=str(tmp_path / "missing"), extra=str(tmp_path))
    dataset = ImageNet(split="VAL", root=str(imagenet_root), extra=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="dump_extra"):
        len(dataset)
    with pytest.raises(ValueError, match="TRAIN, VAL, TEST"):
        ImageNet(split="HOLDOUT", root=str(imagenet_root), extra=str(tmp_path))


def test_imagenet_metadata_is_read_again_after_dump_extra(imagenet_root, tmp_path):
    dataset = ImageNet(split="TRAIN", root=str(imagenet_root), extra=str(tmp_path / "extra"))
    with pytest.raises(FileNotFoundError, match="dump_extra"):
        len(dataset)
    dataset.dump_extra()  # the same object then reads the files it wrote
    assert len(dataset) == 6 and dataset.find_class_name(1) == "goldfish"
    test = ImageNet(split="TEST", root=str(imagenet_root), extra=str(tmp_path / "extra"))
    test.dump_extra()
    with pytest.raises(ValueError, match="ImageNet TEST has no class names"):
        test.find_class_name(0)
    with pytest.raises(ValueError, match="ImageNet TEST has no class ids"):
        test.find_class_id(0)


def test_imagenet22k_tarballs(tmp_path):
    root = tmp_path / "22k"
    (root / "blocks").mkdir(parents=True)
    for class_id in ["n00000002", "n00000001"]:
        with tarfile.open(root / f"{class_id}.tar", "w", format=tarfile.USTAR_FORMAT) as archive:
            for n in range(3):
                data = _jpeg(_colour(n), size=(30 + n, 20))
                if class_id == "n00000001" and n == 1:
                    data = gzip.compress(data)  # a few released members are gzip-compressed
                info = tarfile.TarInfo(f"{class_id}_{n}.JPEG")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        write_blocks_log(root / f"{class_id}.tar", root / "blocks" / f"{class_id}.log")
    lines = (root / "blocks" / "n00000001.log").read_text().splitlines()
    assert lines[0] == "block 0: n00000001_0.JPEG" and lines[-1].endswith(": ** Block of NULs **")
    extra = tmp_path / "extra22k"
    ImageNet22k(root=str(root), extra=str(extra)).dump_extra()
    entries = np.load(extra / "entries.npy")
    assert entries.dtype.names == ("class_index", "class_id", "start_offset", "end_offset", "filename")
    assert entries.dtype["start_offset"].str == "<u4" and np.load(extra / "class-ids.npy").tolist() == [
        "n00000001",
        "n00000002",
    ]
    dataset = make_dataset(dataset_str=f"ImageNet22k:root={root}:extra={extra}")
    assert len(dataset) == 6
    for index in range(6):
        image, target = dataset[index]
        n = int(str(entries[index]["filename"]).split("_")[1].split(".")[0])
        assert image.size == (30 + n, 20) and target == int(dataset.get_class_id(index)[-1]) - 1
        assert np.abs(_mean_colour(image) - _colour(n)).max() < 8


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "folder"
    for name, colour in (("dogs", (200, 0, 0)), ("cats", (0, 200, 0))):
        (root / name / "nested").mkdir(parents=True)
        (root / name / "b.jpg").write_bytes(_jpeg(colour))
        (root / name / "nested" / "a.PNG").write_bytes(_jpeg(colour))  # extension check is case-insensitive
        (root / name / "notes.txt").write_text("not an image")
        (root / name / ".hidden.jpg").write_bytes(b"")
    (root / "empty_class").mkdir()
    return root


def test_image_folder_labelled(folder):
    dataset = ImageFolder(root=str(folder))
    assert dataset.classes == ["cats", "dogs"] and dataset.is_labeled
    paths = [p.split("folder/")[1] for p, _ in dataset.samples]
    assert paths == ["cats/b.jpg", "cats/nested/a.PNG", "dogs/b.jpg", "dogs/nested/a.PNG"]
    assert [dataset[i][1] for i in range(4)] == [0, 0, 1, 1]
    assert np.argmax(_mean_colour(dataset[3][0])) == 0  # a dog image is red


def test_image_folder_flat_is_unlabelled(tmp_path):
    for name in ("z.jpg", "a.jpeg", "m.webp.txt"):
        (tmp_path / name).write_bytes(_jpeg((1, 2, 3)))
    dataset = make_dataset(dataset_str=f"ImageFolder:root={tmp_path}")
    assert [p.rsplit("/", 1)[1] for p, _ in dataset.samples] == ["a.jpeg", "z.jpg"]
    assert not dataset.is_labeled and dataset[0][1] == -1 and dataset.get_targets().tolist() == [-1, -1]


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        ImageFolder(root=str(tmp_path / "nope"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        make_dataset(dataset_str=f"ImageFolder:root={tmp_path}")


@pytest.fixture
def damaged_folder(tmp_path):
    good = _jpeg((10, 200, 10), size=(64, 48))
    files = {
        "0_good.jpg": good,
        "1_truncated.jpg": good[: len(good) // 2],
        "2_text.jpg": b"this is not an image",
        "3_empty.jpg": b"",
        "4_good.jpg": _jpeg((200, 10, 10), size=(64, 48)),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


def test_unreadable_images_are_skipped_with_a_warning(damaged_folder, caplog):
    dataset = ImageFolder(root=str(damaged_folder))
    with caplog.at_level(logging.WARNING, logger="dinov2"):
        colours = [int(np.argmax(_mean_colour(dataset[i][0]))) for i in range(5)]
        colours_again = [int(np.argmax(_mean_colour(dataset[i][0]))) for i in range(5)]
    assert colours == colours_again == [1, 0, 0, 0, 0]  # bad files -> the next readable image (4_good, red)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in ("1_truncated.jpg", "2_text.jpg", "3_empty.jpg"):
        assert sum(name in message for message in warned) == 1  # once per file
    assert dataset.skipped_count == 3 and dataset.bad_indices == {1, 2, 3}


def test_unreadable_images_raise_in_strict_mode(damaged_folder):
    dataset = make_dataset(dataset_str=f"ImageFolder:root={damaged_folder}:strict=true")
    assert dataset[0][0].size == (64, 48)
    for index, name in ((1, "1_truncated.jpg"), (2, "2_text.jpg"), (3, "3_empty.jpg")):
        with pytest.raises(CorruptImageError, match=name):
            dataset[index]


def test_synthetic_dataset_is_deterministic_and_labelled(tmp_path):
    kwargs = {"num_classes": 4, "images_per_class": 3, "size": (64, 48), "seed": 5, "val_images_per_class": 2}
    first = make_synthetic_dataset(tmp_path / "a", **kwargs)
    second = make_synthetic_dataset(tmp_path / "b", **kwargs)
    files = sorted(p.relative_to(first) for p in first.rglob("*.jpg"))
    assert len(files) == 4 * (3 + 2)
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    with Image.open(first / files[0]) as image:
        assert image.format == "JPEG" and image.size == (64, 48)
    other_seed = make_synthetic_dataset(tmp_path / "c", **{**kwargs, "seed": 6})
    assert (other_seed / files[0]).read_bytes() != (first / files[0]).read_bytes()
    with pytest.raises(ValueError, match="made with"):
        make_synthetic_dataset(tmp_path / "a", **{**kwargs, "seed": 6})
    val = make_dataset(
        dataset_str=f"Synthetic:root={tmp_path / 'a'}:split=VAL:num_classes=4:images_per_class=3:"
        "val_images_per_class=2:seed=5:size=64x48"
    )
    assert len(val) == 8 and val.classes == ["00_disc", "01_square", "02_triangle", "03_cross"]
    assert [val[i][1] for i in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_synthetic_classes_are_not_separable_by_mean_colour(tmp_path):
    train = Synthetic(root=str(tmp_path / "s"), num_classes=10, images_per_class=12, size=(64, 48))
    colours = np.stack([_mean_colour(train[i][0]) for i in range(len(train))])
    targets = train.get_targets()
    centroids = np.stack([colours[targets == c].mean(0) for c in range(10)])
    predicted = np.argmin(((colours[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == targets).mean() < 0.35  # chance is 0.1; even fitting on the same images stays low


def test_synthetic_class_colours_paint_each_class_motif_in_its_own_colours(tmp_path):
    from dinov2.data.datasets.synthetic import _PALETTE, class_colour_indices

    kwargs = {"num_classes": 10, "images_per_class": 2, "size": (64, 48), "val_images_per_class": 1}
    plain = make_synthetic_dataset(tmp_path / "plain", **kwargs)
    coloured = make_synthetic_dataset(tmp_path / "coloured", class_colours=True, **kwargs)
    assert json.loads((coloured / "synthetic.json").read_text())["class_colours"] is True
    assert (coloured / "train" / "00_disc" / "disc_00000.jpg").read_bytes() != (
        plain / "train" / "00_disc" / "disc_00000.jpg"
    ).read_bytes()
    pairs = {class_colour_indices(c) for c in range(10)}
    assert len(pairs) == 10 and all(a != b for a, b in pairs)  # distinct pairs of two different colours
    # the disc (class 0, a plain motif) is painted in its class's first colour: the image centre region holds it
    disc = np.asarray(Image.open(coloured / "train" / "00_disc" / "disc_00000.jpg"), dtype=np.float32)
    distances = np.abs(disc.reshape(-1, 3)[:, None] - _PALETTE[None]).sum(-1).min(0)  # closest pixel per colour
    assert distances[class_colour_indices(0)[0]] < 60
    with pytest.raises(ValueError, match="made with"):
        Synthetic(root=str(coloured), **kwargs)  # reading it back needs class_colours=true too
    assert len(Synthetic(root=str(coloured), class_colours=True, **kwargs)) == 20


@pytest.mark.parametrize(
    "dataset_str, match",
    [
        (
            "ImageNot:root=/x",
            "unknown dataset 'ImageNot'.*known datasets: ADE20K, CaptionFolder, CaptionManifest, Curated, DepthFolder, "
            "ImageFolder, ImageNet",
        ),
        ("ImageNet:split=TRAIN:root=/x:extra=/y:rot=1", "unknown key 'rot'.*accepted keys: extra, root, split, strict"),
        ("ImageNet:root=/x:extra=/y", "lacks required key.*split"),
        ("ImageNet:split=TRIAN:root=/x:extra=/y", "bad value for 'split'.*TRAIN, VAL, TEST"),
        ("ImageFolder:root", "expected key=value"),
        ("ImageFolder:root=/a:root=/b", "given twice"),
        ("ImageFolder:root=/a:strict=maybe", "bad value for 'strict'"),
        ("Synthetic:root=/a:size=500", "WIDTHxHEIGHT"),
        ("ImageNet22k:root=/x:extra=/y:split=TRAIN", "unknown key 'split'"),
    ],
)
def test_dataset_string_errors(dataset_str, match):
    with pytest.raises(ValueError, match=match):
        make_dataset(dataset_str=dataset_str)


def test_unreadable_images_are_dropped_when_the_caller_asks(damaged_folder, caplog):
    dataset = ImageFolder(root=str(damaged_folder))
    dataset.on_unreadable = "drop"  # the caller's choice (feature extraction, curation)
    assert not dataset.strict
    with caplog.at_level(logging.WARNING, logger="dinov2"):
        samples = [dataset[i] for i in range(5)] + [dataset[1]]  # a known bad index is dropped again
    assert [type(image) for image, _ in samples] == [Image.Image, Unreadable, Unreadable, Unreadable, Image.Image] + [
        Unreadable
    ]
    for index, name in ((1, "1_truncated.jpg"), (2, "2_text.jpg"), (3, "3_empty.jpg")):
        marker, target = dataset[index]
        assert marker.index == index and name in marker.where and target is None
    assert any("leaving it out" in r.getMessage() for r in caplog.records)


def test_on_unreadable_and_strict_say_the_same(damaged_folder):
    dataset = ImageFolder(root=str(damaged_folder), strict=True)
    assert dataset.on_unreadable == "raise"
    dataset.strict = False
    assert dataset.on_unreadable == "substitute"
    with pytest.raises(ValueError, match="on_unreadable must be one of substitute, raise, drop; got 'skip'"):
        dataset.on_unreadable = "skip"
    with pytest.raises(ValueError, match="strict=True means on_unreadable='raise'"):
        ExtendedVisionDataset(str(damaged_folder), strict=True, on_unreadable="drop")


def test_dataset_classes_pass_the_dataset_options_to_the_base(damaged_folder):
    dataset = ImageFolder(
        root=str(damaged_folder), transform=lambda image: image.size, target_transform=str, on_unreadable="drop"
    )
    assert dataset[0] == ((64, 48), "-1")
    assert isinstance(dataset[1][0], Unreadable)
    with pytest.raises(ValueError, match="strict=True means on_unreadable='raise'"):
        ImageFolder(root=str(damaged_folder), strict=True, on_unreadable="drop")
    with pytest.raises(TypeError, match="tranform"):  # a misspelt option is refused by the base, naming it
        ImageFolder(root=str(damaged_folder), tranform=None)


def test_unreadable_policy_applies_through_subsets_and_is_restored(damaged_folder):
    dataset = ImageFolder(root=str(damaged_folder))
    subset = torch.utils.data.Subset(dataset, [3, 1])
    with unreadable_policy(subset, "drop"):
        assert isinstance(subset[0][0], Unreadable) and describe_sample(subset, 0).endswith("3_empty.jpg")
    assert dataset.on_unreadable == "substitute" and isinstance(subset[0][0], Image.Image)


def test_extra_metadata_mixin_reads_once_and_names_the_dump_call(tmp_path):
    from dinov2.data.datasets.extra_metadata import ExtraMetadata

    class Toy(ExtraMetadata):
        def __init__(self, extra):
            self._set_extra_root(extra, "entries.npy", "Toy")

        def _dump_extra_call(self):
            return "Toy(...).dump_extra()"

        def __len__(self):
            return len(self._cached_extra("entries.npy"))

    toy = Toy(tmp_path / "extra")
    with pytest.raises(FileNotFoundError, match=r"Toy metadata .*entries\.npy.* create it once with Toy\(\.\.\.\)"):
        len(toy)
    toy._save_extra(np.arange(3), "entries.npy")
    assert len(toy) == 3 and toy._cached_extra("entries.npy") is toy._cached_extra("entries.npy")
    toy._save_extra(np.arange(0), "entries.npy")  # a save drops the cached array
    with pytest.raises(ValueError, match="Toy: entries.npy in .* lists no images"):
        Toy(tmp_path / "extra")
