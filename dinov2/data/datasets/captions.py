"""Image-caption datasets for training dino.txt: a folder of images with ``.txt`` captions, or a manifest.

A sample is ``(image, caption)``: the decoded RGB image and **one** caption of the image, drawn at random on each
access among its captions (as the released COCO-captions reader does); the data loader seeds every sample from its
position in the stream, so the draw is reproducible and a resumed run sees the same captions.

- :class:`CaptionFolder` (``CaptionFolder:root=PATH``): every image under ``root`` (recursive) with a text file of
  the same stem beside it (``dog.jpg`` + ``dog.txt``), one caption a line (blank lines ignored).
- :class:`CaptionManifest` (``CaptionManifest:path=FILE[:root=DIR]``): a CSV file with a header naming the columns
  ``image`` and ``caption`` (one row per caption; rows of one image are grouped), or a JSON-lines file of
  ``{"image": ..., "caption": "..."}`` or ``{"image": ..., "captions": [...]}``. Image paths are relative to ``root``
  (default: the manifest's folder).

A missing caption, an image without captions or a malformed manifest is an error naming the file at construction.
"""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

from .extended import ExtendedVisionDataset
from .image_folder import IMG_EXTENSIONS, check_root, find_images

__all__ = ["CaptionFolder", "CaptionManifest", "read_caption_file", "read_manifest"]


def read_caption_file(path: Path) -> list[str]:
    """The non-blank lines of a caption file (at least one), stripped."""
    captions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not captions:
        raise ValueError(f"caption file {str(path)!r} is empty: write one caption a line")
    return captions


def _manifest_rows(path: Path) -> list[tuple[str, list[str]]]:
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"image", "caption"} <= set(reader.fieldnames or ()):
                raise ValueError(f"CSV manifest {str(path)!r} needs a header with 'image' and 'caption' columns")
            return [(row["image"], [row["caption"]]) for row in reader]
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        captions = record.get("captions", [record["caption"]] if "caption" in record else None)
        if "image" not in record or not captions:
            raise ValueError(f"{str(path)!r} line {number}: needs 'image' and 'caption' (or 'captions') keys")
        rows.append((record["image"], [str(c) for c in captions]))
    return rows


def read_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[tuple[str, list[str]]]:
    """``[(image path, captions)]`` of a CSV / JSON-lines manifest, rows of one image grouped, in first-seen order."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"caption manifest {str(path)!r} does not exist (a .csv or .jsonl file)")
    base = Path(root).expanduser() if root else path.parent
    grouped: dict[str, list[str]] = {}
    for image, captions in _manifest_rows(path):
        grouped.setdefault(str(base / image), []).extend(c.strip() for c in captions if c.strip())
    empty = [image for image, captions in grouped.items() if not captions]
    if empty or not grouped:
        raise ValueError(
            f"manifest {str(path)!r}: {'images without captions: ' + str(empty[:3]) if empty else 'empty'}"
        )
    return list(grouped.items())


class _CaptionDataset(ExtendedVisionDataset):
    """Images with lists of captions; the target is one caption drawn at random."""

    def __init__(self, root: str, samples: list[tuple[str, list[str]]], **options):
        super().__init__(root, **options)
        self.samples = samples

    def describe_sample(self, index: int) -> str:
        return self.samples[index][0]

    def get_image_data(self, index: int) -> bytes:
        with open(self.samples[index][0], "rb") as f:
            return f.read()

    def get_captions(self, index: int) -> list[str]:
        return self.samples[index][1]

    def get_target(self, index: int) -> str:
        return random.choice(self.samples[index][1])  # seeded per sample by the data loader

    def __len__(self) -> int:
        return len(self.samples)


class CaptionFolder(_CaptionDataset):
    """Images under ``root`` with a same-stem ``.txt`` caption file each (see the module docstring)."""

    def __init__(self, *, root: str, **options) -> None:
        """``options``: the dataset options of :class:`ExtendedVisionDataset` (transform, strict...)."""
        path = check_root(root, type(self).__name__)
        images = find_images(path, IMG_EXTENSIONS, recursive=True)
        if not images:
            raise ValueError(f"CaptionFolder: no images in {str(path)!r}; put images with .txt captions there")
        missing = [str(image.with_suffix(".txt")) for image in images if not image.with_suffix(".txt").is_file()]
        if missing:
            raise FileNotFoundError(
                f"CaptionFolder: {len(missing)} images have no caption file, e.g. {missing[:3]}; "
                "write one caption a line in <image stem>.txt beside each image"
            )
        samples = [(str(image), read_caption_file(image.with_suffix(".txt"))) for image in images]
        super().__init__(str(path), samples, **options)


class CaptionManifest(_CaptionDataset):
    """Images and captions listed in a CSV / JSON-lines manifest (see the module docstring)."""

    def __init__(self, *, path: str, root: str | None = None, **options) -> None:
        """``options``: the dataset options of :class:`ExtendedVisionDataset` (transform, strict...)."""
        samples = read_manifest(path, root)
        super().__init__(str(root or Path(path).parent), samples, **options)
