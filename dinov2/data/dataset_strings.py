"""Dataset strings ``Name:key=value:key=value`` -> (dataset class, constructor kwargs).

Known names and keys (``*`` = required)::

    ImageNet:split*=TRAIN|VAL|TEST:root*=PATH:extra*=PATH[:strict=BOOL]
    ImageNet22k:root*=PATH:extra*=PATH[:strict=BOOL]
    ImageFolder:root*=PATH[:strict=BOOL]
    Synthetic:root*=PATH[:split=TRAIN|VAL][:num_classes=INT][:images_per_class=INT]
              [:val_images_per_class=INT][:seed=INT][:size=WxH][:class_colours=BOOL][:strict=BOOL]
    Curated:manifest*=PATH[:verify=BOOL][:seed=INT][:strict=BOOL]   (a curation manifest, see datasets/curated.py)
    ADE20K:root*=PATH[:split=TRAIN|VAL][:strict=BOOL]
    VOC2012:root*=PATH[:split=TRAIN|VAL][:aug=auto|true|false][:strict=BOOL]
    NYU:root*=PATH[:split=TRAIN|TEST][:split_file=PATH][:depth_scale=FLOAT][:strict=BOOL]
    SegmentationFolder:root*=PATH[:images=DIR][:labels=DIR][:reduce_zero_label=BOOL][:strict=BOOL]
    DepthFolder:root*=PATH[:images=DIR][:depths=DIR][:depth_scale=FLOAT][:strict=BOOL]
    SyntheticDense:root*=PATH[:split=TRAIN|VAL][:task=segmentation|depth][:num_classes=INT][:images=INT]
                   [:val_images=INT][:size=WxH][:seed=INT][:strict=BOOL]

``strict=true`` makes an unreadable image raise instead of being skipped. Other dataset classes
can be added with :func:`register_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .datasets import (
    ADE20K,
    NYU,
    VOC2012,
    Curated,
    DepthFolder,
    ImageFolder,
    ImageNet,
    ImageNet22k,
    SegmentationFolder,
    Synthetic,
    SyntheticDense,
)
from .datasets.captions import CaptionFolder, CaptionManifest

__all__ = ["DatasetSpec", "parse_dataset_str", "register_dataset", "known_datasets"]


def _to_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def _to_size(value: str) -> tuple[int, int]:
    width, sep, height = value.lower().partition("x")
    if not sep:
        raise ValueError(f"expected WIDTHxHEIGHT (e.g. 500x375), got {value!r}")
    return int(width), int(height)


def _to_imagenet_split(value: str) -> Any:
    try:
        return ImageNet.Split[value]
    except KeyError:
        raise ValueError(f"expected one of {', '.join(ImageNet.Split.__members__)}, got {value!r}") from None


@dataclass(frozen=True)
class DatasetSpec:
    """How a dataset-string name maps to a class: its required and optional keys, with value parsers."""

    cls: Callable
    required: tuple[str, ...]
    optional: dict[str, Callable[[str], Any]] = field(default_factory=dict)
    converters: dict[str, Callable[[str], Any]] = field(default_factory=dict)
    given: dict[str, Any] = field(default_factory=dict)  # constructor arguments that do not come from the string

    @property
    def keys(self) -> list[str]:
        return sorted({*self.required, *self.optional})


_REGISTRY: dict[str, DatasetSpec] = {
    "ImageNet": DatasetSpec(ImageNet, ("split", "root", "extra"), {"strict": _to_bool}, {"split": _to_imagenet_split}),
    "ImageNet22k": DatasetSpec(ImageNet22k, ("root", "extra"), {"strict": _to_bool}),
    "ImageFolder": DatasetSpec(ImageFolder, ("root",), {"strict": _to_bool}),
    "Synthetic": DatasetSpec(
        Synthetic,
        ("root",),
        {
            "split": str.upper,
            "num_classes": int,
            "images_per_class": int,
            "val_images_per_class": int,
            "seed": int,
            "size": _to_size,
            "class_colours": _to_bool,
            "strict": _to_bool,
        },
    ),
    # a Curated set opens its source sets by their dataset strings: this parser is handed to it (its module cannot
    # import this one, which imports it)
    "Curated": DatasetSpec(
        Curated,
        ("manifest",),
        {"verify": _to_bool, "seed": int, "strict": _to_bool},
        given={"parse_source": lambda source_str: parse_dataset_str(source_str)},
    ),
    "ADE20K": DatasetSpec(ADE20K, ("root",), {"split": str.upper, "strict": _to_bool}),
    "VOC2012": DatasetSpec(VOC2012, ("root",), {"split": str.upper, "aug": str.lower, "strict": _to_bool}),
    "NYU": DatasetSpec(
        NYU, ("root",), {"split": str.upper, "split_file": str, "depth_scale": float, "strict": _to_bool}
    ),
    "SegmentationFolder": DatasetSpec(
        SegmentationFolder, ("root",), {"images": str, "labels": str, "reduce_zero_label": _to_bool, "strict": _to_bool}
    ),
    "DepthFolder": DatasetSpec(
        DepthFolder, ("root",), {"images": str, "depths": str, "depth_scale": float, "strict": _to_bool}
    ),
    "CaptionFolder": DatasetSpec(CaptionFolder, ("root",), {"strict": _to_bool}),  # dino.txt: image + .txt caption
    "CaptionManifest": DatasetSpec(CaptionManifest, ("path",), {"root": str, "strict": _to_bool}),  # CSV / JSONL
    "SyntheticDense": DatasetSpec(
        SyntheticDense,
        ("root",),
        {
            "split": str.upper,
            "task": str.lower,
            "num_classes": int,
            "images": int,
            "val_images": int,
            "size": _to_size,
            "seed": int,
            "strict": _to_bool,
        },
    ),
}


def register_dataset(name: str, spec: DatasetSpec) -> None:
    """Make ``name`` usable in dataset strings (e.g. for a project-specific dataset class)."""
    if ":" in name or "=" in name or not name:
        raise ValueError(f"dataset name must be non-empty without ':' or '=', got {name!r}")
    _REGISTRY[name] = spec


def known_datasets() -> list[str]:
    return sorted(_REGISTRY)


def _split_tokens(dataset_str: str) -> tuple[str, dict[str, str]]:
    name, *tokens = dataset_str.split(":")
    raw: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ValueError(f"dataset string {dataset_str!r}: expected key=value after ':', got {token!r}")
        if key in raw:
            raise ValueError(f"dataset string {dataset_str!r}: key {key!r} given twice")
        raw[key] = value
    return name, raw


def parse_dataset_str(dataset_str: str) -> tuple[Callable, dict[str, Any]]:
    """``"Name:key=value:..."`` -> ``(dataset class, kwargs)``; errors name the bad part and what is accepted."""
    name, raw = _split_tokens(dataset_str)
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(
            f"unknown dataset {name!r} in dataset string {dataset_str!r}; known datasets: {', '.join(known_datasets())}"
        )
    for key in raw:
        if key not in spec.required and key not in spec.optional:
            raise ValueError(
                f"unknown key {key!r} for dataset {name} in {dataset_str!r}; accepted keys: {', '.join(spec.keys)}"
            )
    missing = [key for key in spec.required if key not in raw]
    if missing:
        example = ":".join([name] + [f"{k}=..." for k in spec.required])
        raise ValueError(f"dataset string {dataset_str!r} lacks required key(s) {', '.join(missing)} (e.g. {example})")
    kwargs: dict[str, Any] = dict(spec.given)
    for key, value in raw.items():
        convert = spec.converters.get(key) or spec.optional.get(key) or str
        try:
            kwargs[key] = convert(value)
        except ValueError as error:
            raise ValueError(f"dataset string {dataset_str!r}: bad value for {key!r}: {error}") from None
    return spec.cls, kwargs
