"""Every weights layout reads through the one module (:mod:`dinov2.models.weights`): the same backbone and parts
from each, shapes without tensor data, a fingerprint that follows the content, and tables a model family extends
from its own module."""

from __future__ import annotations

import json
import os
import time
import zlib

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dinov2.models import weights
from dinov2.models.convert import chunked_to_flat, export_hf, to_hf_state_dict, to_timm_state_dict
from dinov2.models.vision_transformer import DinoVisionTransformer


def _vit(seed: int = 0, **kwargs) -> DinoVisionTransformer:
    torch.manual_seed(seed)
    options = dict(img_size=28, patch_size=14, embed_dim=16, depth=4, num_heads=2, init_values=1.0, block_chunks=0)
    model = DinoVisionTransformer(**{**options, **kwargs})
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))  # no zero tensor: a lost or swapped tensor shows
    return model


class _Trained(nn.Module):
    """The trainer's model: student and teacher, each a backbone and a DINO head (different weights)."""

    def __init__(self):
        super().__init__()
        self.student = nn.ModuleDict({"backbone": _vit(1), "dino_head": nn.Linear(16, 8)})
        self.teacher = nn.ModuleDict({"backbone": _vit(2, block_chunks=2), "dino_head": nn.Linear(16, 8)})


def _contiguous(state_dict: dict) -> dict:
    return {key: value.contiguous().clone() for key, value in state_dict.items()}  # safetensors: no shared storage


def _write(layout: str, folder, trained: _Trained):
    """(source, expected parts) for one layout; the expected backbone is the parts' ``backbone.*``."""
    backbone = {k: v.detach() for k, v in _flat_state(trained.teacher.backbone).items()}
    parts = {f"backbone.{k}": v for k, v in backbone.items()}
    head = {f"dino_head.{k}": v.detach() for k, v in trained.teacher.dino_head.state_dict().items()}
    path = folder / layout.replace(" ", "_")
    if layout == "hub file":
        torch.save(backbone, path)
    elif layout == "training export":
        torch.save({"teacher": {**parts, **head}}, path)
        parts = {**parts, **head}
    elif layout == "export without heads":
        torch.save({"teacher": parts}, path)
    elif layout == "chunked export":
        torch.save({"teacher": {f"module.{k}": v for k, v in trained.teacher.state_dict().items()}}, path)
        parts = {**parts, **head}
    elif layout == "training state":
        torch.save({"model": trained.state_dict(), "iteration": 3}, path)
        parts = {**parts, **head}
    elif layout == "checkpoint folder":
        from dinov2.train.checkpointing import Checkpointer

        optimizer = torch.optim.SGD(trained.student.parameters(), lr=0.1)
        path = Checkpointer(folder / "run").save(3, {"model": trained, "optimizer": optimizer})
        parts = {**parts, **head}
    elif layout == "safetensors file":
        path = path.with_suffix(".safetensors")
        save_file(_contiguous(backbone), str(path))
    elif layout == "Hugging Face folder":
        export_hf(_model_of(backbone), path)
    elif layout == "sharded Hugging Face folder":
        _sharded_hf(backbone, path)
    elif layout == "timm file":
        torch.save(to_timm_state_dict(backbone), path)
    elif layout == "dense head":
        decode = {"decode_head.conv_seg.weight": torch.randn(3, 16, 1, 1), "decode_head.conv_seg.bias": torch.ones(3)}
        torch.save({"state_dict": decode, "meta": {"depth_range": [0.0, 10.0]}}, path)
        parts = decode
    return path, parts


def _flat_state(backbone: DinoVisionTransformer) -> dict:
    """The backbone's state dict with flat block names (the hub layout)."""
    return chunked_to_flat(backbone.state_dict())


def _model_of(backbone: dict) -> DinoVisionTransformer:
    model = _vit(9)
    model.load_state_dict(backbone, strict=True)
    return model


def _sharded_hf(backbone: dict, folder) -> None:
    folder.mkdir()
    hf = to_hf_state_dict(backbone, file_names=True)
    names = sorted(hf)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in halves.items():
        save_file(_contiguous({k: hf[k] for k in keys}), str(folder / shard))
    weight_map = {k: shard for shard, keys in halves.items() for k in keys}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"model_type": "dinov2"}))


LAYOUTS = [
    "hub file", "training export", "export without heads", "chunked export", "training state", "checkpoint folder",
    "safetensors file", "Hugging Face folder", "sharded Hugging Face folder", "timm file", "dense head",
]  # fmt: skip


@pytest.fixture
def opened(monkeypatch):
    """The paths that ``weights._open`` (the one place that opens weights) was called with: a spy on it."""
    calls, real = [], weights._open

    def spy(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(weights, "_open", spy)
    return calls


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_reads_through_the_one_module(tmp_path, layout, opened):
    path, expected = _write(layout, tmp_path, _Trained())
    parts = weights.read_parts(path)
    assert len(opened) == 1 and opened[0] == path
    if layout == "timm file":  # converted: the mask token (timm has none) comes back as zeros
        expected = {**expected, "backbone.mask_token": torch.zeros(1, 16)}
    assert parts.keys() == expected.keys()
    assert all(torch.equal(parts[key], value) for key, value in expected.items())
    if layout != "dense head":
        backbone = weights.read_backbone_weights(path)
        assert backbone.keys() == {k.removeprefix("backbone.") for k in parts if k.startswith("backbone.")}
        assert all(torch.equal(backbone[k.removeprefix("backbone.")], v) for k, v in parts.items() if "backbone" in k)
    assert len(opened) == (2 if layout != "dense head" else 1)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shapes_are_those_of_the_full_read_without_reading_tensors(tmp_path, layout, monkeypatch):
    path, _ = _write(layout, tmp_path, _Trained())
    full = {key: tuple(value.shape) for key, value in weights.read_parts(path).items()}
    real = weights._open

    def no_data(path):  # every format gives its shapes from a header, metadata or a memory map
        stored = real(path)
        return weights.Stored(stored.meta, lambda: pytest.fail(f"tensor data of {path} was read"))

    monkeypatch.setattr(weights, "_open", no_data)
    assert weights.read_shapes(path) == full
    assert weights.read_shapes({"x": torch.ones(2, 3)}) == {"backbone.x": (2, 3)}  # an already read mapping


def _backdate(path) -> None:
    """Files older than the timestamp resolution: the ones an opened source may be kept for."""
    past = time.time() - 60
    for file in [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]:
        os.utime(file, (past, past))


@pytest.mark.parametrize("layout", ["training export", "checkpoint folder", "safetensors file"])
def test_checking_shapes_then_loading_opens_once(tmp_path, layout, opened):
    path, expected = _write(layout, tmp_path, _Trained())
    _backdate(path)
    shapes = weights.read_shapes(path)
    parts = weights.read_parts(path)  # takes the source the shapes read opened
    assert opened == [path] and shapes == {k: tuple(v.shape) for k, v in parts.items()}
    weights.read_parts(path)  # taken: a later read opens it again
    assert opened == [path, path]


def test_a_recently_written_file_is_never_kept(tmp_path, opened):
    path, _ = _write("hub file", tmp_path, _Trained())
    weights.read_shapes(path)
    torch.save({"blocks.0.norm1.weight": torch.ones(3)}, path)  # rewritten within the timestamp's resolution
    assert weights.read_shapes(path) == {"backbone.blocks.0.norm1.weight": (3,)}
    assert len(opened) == 2


@pytest.mark.parametrize("layout", ["training export", "checkpoint folder", "Hugging Face folder"])
def test_fingerprint_is_stable_across_reads_and_follows_the_content(tmp_path, layout):
    path, _ = _write(layout, tmp_path, _Trained())
    first = weights.fingerprint(path)
    weights.read_parts(path)
    assert weights.fingerprint(path) == first
    file = path if path.is_file() else next(p for p in sorted(path.rglob("*")) if p.suffix in (".distcp", ".json"))
    if layout == "checkpoint folder":  # the completion marker lists every file's size and CRC32
        file = path / "COMPLETE"
    data = bytearray(file.read_bytes())
    data[-2] ^= 0xFF
    file.write_bytes(bytes(data))
    assert weights.fingerprint(path)["crc32"] != first["crc32"] and weights.fingerprint(path)["size"] == first["size"]


def test_fingerprint_values_are_those_written_into_earlier_checkpoints(tmp_path):
    """A resumed run compares the saved fingerprint of its teacher: the formula must not change."""
    path, _ = _write("training export", tmp_path, _Trained())
    data = path.read_bytes()
    expected = zlib.crc32(f":{zlib.crc32(data)}".encode())
    assert weights.fingerprint(path) == {"path": str(path.resolve()), "size": len(data), "crc32": expected}


def test_a_model_family_registers_its_format_and_layout_from_its_own_module(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "READERS", list(weights.READERS))  # restored after the test
    monkeypatch.setattr(weights, "LAYOUTS", list(weights.LAYOUTS))
    backbone = _flat_state(_vit(4))
    torch.save({f"family.{k}": v for k, v in backbone.items()}, tmp_path / "weights.fam")
    read_torch = weights.READERS[-1].read
    fmt = weights.register_reader(weights.Reader("family file", lambda p: p.suffix == ".fam", read_torch))
    layout = weights.register_layout(
        weights.Layout(
            "family layout",
            lambda checkpoint: all(str(k).startswith("family.") for k in checkpoint),
            lambda checkpoint: {k.removeprefix("family."): v for k, v in checkpoint.items()},
        )
    )
    assert weights.READERS[0] is fmt and weights.LAYOUTS[0] is layout
    weights.register_reader(fmt)  # registering again (a module imported twice) replaces the entry
    assert [r.name for r in weights.READERS].count("family file") == 1
    target = _vit(5)
    weights.load_backbone_weights(target, tmp_path / "weights.fam")
    assert all(torch.equal(target.state_dict()[k], v) for k, v in backbone.items())
    shapes = weights.read_shapes(tmp_path / "weights.fam")
    assert shapes == {f"backbone.{k}": tuple(v.shape) for k, v in backbone.items()}


def test_a_file_that_cannot_be_memory_mapped_is_read_in_full_and_not_kept(tmp_path, opened):
    backbone = _flat_state(_vit(6))
    path = tmp_path / "legacy.pth"
    torch.save(backbone, path, _use_new_zipfile_serialization=False)  # the pre-1.6 format: no memory map
    _backdate(path)
    assert weights.read_shapes(path) == {f"backbone.{k}": tuple(v.shape) for k, v in backbone.items()}
    parts = weights.read_parts(path)  # a source held in memory is not kept: opened again
    assert all(torch.equal(parts[f"backbone.{k}"], v) for k, v in backbone.items()) and len(opened) == 2
