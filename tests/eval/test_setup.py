"""Evaluation set-up: the backbone from a config and weights in every supported form, strict loading, errors."""

from __future__ import annotations

import argparse
import contextlib

import pytest
import torch

from dinov2.eval.setup import (
    WeightsMismatchError,
    autocast_context,
    build_model_for_eval,
    get_args_parser,
    get_autocast_dtype,
    load_backbone_weights,
    setup_and_build_model,
)
from dinov2.models.vision_transformer import vit_small
from dinov2.utils.config import load_cfg
from tests.conftest import torch_threads
from tests.eval.conftest import CONFIG

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _single_thread():
    with torch_threads(1):
        yield


def _assert_same_weights(model, state_dict):
    flat = {k: v for k, v in model.state_dict().items()}
    assert flat.keys() == state_dict.keys()
    for key, value in state_dict.items():
        assert torch.equal(flat[key], value), key


def test_teacher_export_and_hub_file_build_the_same_frozen_backbone(backbone_files):
    cfg = load_cfg(CONFIG)
    from_export = build_model_for_eval(cfg, str(backbone_files.teacher), device=CPU)
    from_hub = build_model_for_eval(cfg, str(backbone_files.hub), device=CPU)
    _assert_same_weights(from_export, backbone_files.state_dict)
    _assert_same_weights(from_hub, backbone_files.state_dict)
    assert not from_hub.training and not any(p.requires_grad for p in from_hub.parameters())
    assert from_hub.pos_embed.shape == (1, 1370, 384)  # eval configs keep the 518 px table of the weights


def test_chunked_config_loads_flat_weights_and_computes_the_same_features(backbone_files):
    flat = build_model_for_eval(load_cfg(CONFIG), str(backbone_files.hub), device=CPU)
    chunked = build_model_for_eval(load_cfg(CONFIG, ["student.block_chunks=4"]), str(backbone_files.teacher), CPU)
    assert any(key.startswith("blocks.3.11.") for key in chunked.state_dict())
    x = torch.randn(2, 3, 28, 42)
    with torch.no_grad():
        torch.testing.assert_close(chunked(x), flat(x), rtol=0, atol=0)


def test_weights_from_a_url_are_downloaded_and_loaded(backbone_files, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # torch.hub's download cache
    model = build_model_for_eval(load_cfg(CONFIG), backbone_files.hub.as_uri(), device=CPU)
    _assert_same_weights(model, backbone_files.state_dict)
    assert list((tmp_path / "torch_home").rglob("dinov2_vits14_pretrain.pth"))


def test_missing_or_absent_weights_are_clear_errors(tmp_path):
    cfg = load_cfg(CONFIG)
    with pytest.raises(FileNotFoundError, match="--pretrained-weights .*nope.pth.* does not exist"):
        build_model_for_eval(cfg, str(tmp_path / "nope.pth"), device=CPU)
    with pytest.raises(ValueError, match="--pretrained-weights is required"):
        build_model_for_eval(cfg, "", device=CPU)
    torch.save({"teacher": {"note": "no tensors"}}, tmp_path / "empty.pth")
    with pytest.raises(ValueError, match="holds no tensors"):
        build_model_for_eval(cfg, str(tmp_path / "empty.pth"), device=CPU)


@pytest.mark.parametrize(
    "config, opts, expected",
    [
        # registers expected but absent: a missing key, and the config key to check
        ("eval/vits14_reg4_pretrain", [], ["1 missing key(s): ['register_tokens']", "student.num_register_tokens"]),
        # a 224 px training-size table: the shape mismatch and the crop size that fits the weights
        (CONFIG, ["crops.global_crops_size=224"], ["pos_embed: weights [1, 1370, 384] vs model [1, 257, 384]",
                                                   "--opts crops.global_crops_size=518"]),
        # another architecture: every shape differs, the hint names the embed dims
        ("eval/vitb14_pretrain", [], ["shape mismatch(es)", "embed dim 384, the config builds 768"]),
        ("eval/vitl14_pretrain", [], ["168 missing key(s)", "blocks.12.norm1.weight"]),
    ],
)  # fmt: skip
def test_weights_that_do_not_fit_the_config_list_every_problem(backbone_files, config, opts, expected):
    with pytest.raises(WeightsMismatchError) as error:
        build_model_for_eval(load_cfg(config, opts), str(backbone_files.hub), device=CPU)
    message = str(error.value)
    assert "nothing was loaded" in message
    for part in expected:
        assert part in message, message


def test_a_failed_load_leaves_the_model_untouched(backbone_files):
    torch.manual_seed(1)
    model = vit_small(patch_size=14, img_size=224, init_values=1.0, block_chunks=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError, match="pos_embed"):
        load_backbone_weights(model, backbone_files.hub)
    _assert_same_weights(model, before)


def test_autocast_dtype_from_the_config_and_cpu_runs_in_float32():
    assert get_autocast_dtype(load_cfg(CONFIG)) == torch.half  # default teacher param_dtype fp16
    bf16 = "compute_precision.teacher.backbone.mixed_precision.param_dtype=bf16"
    assert get_autocast_dtype(load_cfg(CONFIG, [bf16])) == torch.bfloat16
    assert get_autocast_dtype(load_cfg("train/demo_cpu")) == torch.float
    assert autocast_context(torch.half, "cpu") is contextlib.nullcontext  # the release autocast CUDA ops only
    assert autocast_context(torch.float, "cuda") is contextlib.nullcontext


def test_released_setup_flags():
    args = get_args_parser(add_help=False).parse_args([])
    assert (args.config_file, args.pretrained_weights, args.output_dir, args.opts) == (None, None, "", [])
    args = get_args_parser().parse_args(["--config-file", "c.yaml", "--opts", "a.b=1", "c=2", "--output-dir", "o"])
    assert (args.config_file, args.opts, args.output_dir) == ("c.yaml", ["a.b=1", "c=2"], "o")
    with pytest.raises(ValueError, match="--config-file is required"):
        setup_and_build_model(argparse.Namespace(config_file=None, pretrained_weights="w.pth", output_dir="", opts=[]))
