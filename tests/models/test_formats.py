"""Format detection of backbone weights: every supported file / folder / dict gives our state dict, strictly.

Peer layouts are produced by our converters here (no timm / transformers needed); tests/models/test_peer_formats.py
checks those converters against the real libraries.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from dinov2.models.convert import to_hf_state_dict, to_timm_state_dict
from dinov2.models.formats import detect_format
from dinov2.models.vision_transformer import DinoVisionTransformer
from dinov2.models.weights import load_backbone_state_dict

DIMS = dict(img_size=28, patch_size=14, embed_dim=16, depth=2, num_heads=2, init_values=1.0, block_chunks=0)


def _model(**kwargs) -> DinoVisionTransformer:
    torch.manual_seed(1)
    model = DinoVisionTransformer(**DIMS, **kwargs)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))  # no zero tensor: a lost or swapped tensor shows
    return model


def _assert_same(state_dict: dict, model: DinoVisionTransformer) -> None:
    expected = model.state_dict()
    assert state_dict.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(state_dict[key], value), key


def _save(state_dict: dict, path) -> None:
    tensors = {k: v.contiguous().clone() for k, v in state_dict.items()}  # safetensors refuses shared storage
    save_file(tensors, str(path)) if str(path).endswith(".safetensors") else torch.save(tensors, path)


@pytest.mark.parametrize("registers", [0, 4])
@pytest.mark.parametrize("ffn_layer", ["mlp", "swiglufused"])
def test_every_layout_gives_our_state_dict(tmp_path, registers, ffn_layer):
    model = _model(num_register_tokens=registers, ffn_layer=ffn_layer)
    ours = model.state_dict()
    timm = to_timm_state_dict(ours)
    timm_back = load_backbone_state_dict(timm)
    # timm folds the cls position into cls_token and has no mask token: only those two tensors differ
    changed = {"cls_token", "pos_embed", "mask_token"} if registers else {"mask_token"}
    for key in set(ours) - changed:
        assert torch.equal(timm_back[key], ours[key]), key
    assert torch.equal(timm_back["mask_token"], torch.zeros_like(ours["mask_token"]))
    cases = {
        "ours.safetensors": ours,
        "hub.pth": ours,
        "teacher_checkpoint.pth": {"teacher": {f"backbone.{k}": v for k, v in ours.items()}},
        "hf.safetensors": to_hf_state_dict(ours, file_names=True),
        "hf_memory_names.bin": to_hf_state_dict(ours),
    }
    for name, content in cases.items():
        path = tmp_path / name
        _save(content, path) if "teacher" not in name else torch.save(content, path)
        _assert_same(load_backbone_state_dict(path), model)
    assert load_backbone_state_dict(tmp_path / "hub.pth").keys() == load_backbone_state_dict(ours).keys()


def test_detect_format_from_key_names():
    model = _model(num_register_tokens=4)
    assert detect_format(model.state_dict()) == "dinov2"
    assert detect_format(to_timm_state_dict(model.state_dict())) == "timm"
    assert detect_format(to_hf_state_dict(model.state_dict())) == "hf"
    assert detect_format({f"dinov2.{k}": v for k, v in to_hf_state_dict(model.state_dict()).items()}) == "hf"
    plain_timm = to_timm_state_dict(_model().state_dict())
    assert "reg_token" not in plain_timm and detect_format(plain_timm) == "timm"  # no mask token


def test_model_folders(tmp_path):
    model = _model()
    hf = to_hf_state_dict(model.state_dict(), file_names=True)
    single = tmp_path / "single"
    single.mkdir()
    _save(hf, single / "model.safetensors")
    (single / "config.json").write_text(json.dumps({"model_type": "dinov2"}))
    _assert_same(load_backbone_state_dict(single), model)

    sharded = tmp_path / "sharded"  # transformers' layout for large models: an index and several shards
    sharded.mkdir()
    names = sorted(hf)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in halves.items():
        _save({k: hf[k] for k in keys}, sharded / shard)
    weight_map = {k: shard for shard, keys in halves.items() for k in keys}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    _assert_same(load_backbone_state_dict(str(sharded)), model)

    timm_folder = tmp_path / "timm"  # timm's hub folders: config.json with an "architecture", timm names
    timm_folder.mkdir()
    _save(to_timm_state_dict(model.state_dict()), timm_folder / "pytorch_model.bin")
    (timm_folder / "config.json").write_text(json.dumps({"architecture": "vit_small_patch14_dinov2"}))
    assert torch.equal(load_backbone_state_dict(timm_folder)["blocks.1.mlp.fc2.weight"], model.blocks[1].mlp.fc2.weight)


def test_unknown_keys_are_errors_that_name_them(tmp_path):
    model = _model()
    hf = to_hf_state_dict(model.state_dict(), file_names=True)
    with pytest.raises(ValueError, match=r"unknown Hugging Face DINOv2 key.*classifier\.weight"):
        load_backbone_state_dict({**{f"dinov2.{k}": v for k, v in hf.items()}, "classifier.weight": torch.ones(2)})
    with pytest.raises(ValueError, match=r"unknown Hugging Face DINOv2 key.*encoder\.layer\.0\.attention\.pooler"):
        load_backbone_state_dict({**hf, "encoder.layer.0.attention.pooler.weight": torch.ones(2)})
    timm = to_timm_state_dict(model.state_dict())
    with pytest.raises(ValueError, match=r"unknown timm key.*head\.weight.*num_classes=0"):
        load_backbone_state_dict({**timm, "head.weight": torch.ones(10, 16), "head.bias": torch.ones(10)})
    incomplete = {k: v for k, v in hf.items() if "attention.attention.key" not in k}
    with pytest.raises(ValueError, match="2 of the 3 parts of blocks.0.attn.qkv"):
        load_backbone_state_dict(incomplete)


def test_missing_and_foreign_sources_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="do not exist"):
        load_backbone_state_dict(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="holds none of model.safetensors"):
        load_backbone_state_dict(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="'vit' model, not DINOv2"):
        load_backbone_state_dict(tmp_path)
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="hold a list, not a state dict"):
        load_backbone_state_dict(tmp_path / "list.pth")
