"""Parameter groups (layer-wise lr decay, wd exemptions, last-layer flags) against the released implementation.

The real DinoVisionTransformer lives in dinov2.models; these tests use stand-in modules with the same parameter
names, shapes and attributes (``n_blocks``, ``chunked_blocks``, ``blocks``), checked against the reference state
dicts, so they only exercise the name parsing.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinov2.utils.param_groups import (
    apply_optim_scheduler,
    build_optimizer,
    fuse_params_groups,
    get_params_groups_with_decay,
    get_vit_lr_decay_rate,
)
from tests.conftest import load_reference


class _Attention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)


class _Mlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)


class _LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))


class _Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim)
        self.ls1 = _LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim)
        self.ls2 = _LayerScale(dim)


class StandInViT(nn.Module):
    """Parameter layout of the released DinoVisionTransformer (chunks padded with identities)."""

    def __init__(self, img_size=518, patch_size=14, embed_dim=64, depth=3, block_chunks=0, num_register_tokens=0):
        super().__init__()
        n_patches = (img_size // patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, embed_dim))
        if num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        blocks = [_Block(embed_dim) for _ in range(depth)]
        self.n_blocks = depth
        self.chunked_blocks = block_chunks > 0
        if self.chunked_blocks:
            size = depth // block_chunks
            chunks = [[nn.Identity()] * i + blocks[i : i + size] for i in range(0, depth, size)]
            self.blocks = nn.ModuleList(nn.ModuleList(chunk) for chunk in chunks)
        else:
            self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim)


class _WeightNormLinear(nn.Module):
    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))
        self.weight_v = nn.Parameter(torch.zeros(out_dim, in_dim))


class StandInDINOHead(nn.Module):
    """Parameter layout of the released DINOHead (weight-normalised last layer)."""

    def __init__(self, in_dim=64, out_dim=256, hidden_dim=128, bottleneck_dim=32):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        self.last_layer = _WeightNormLinear(bottleneck_dim, out_dim)


class Wrapper(nn.Module):
    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.dino_head = head


def _summary(model, settings):
    """(per-parameter dict, fused groups with names) in the reference's JSON layout."""
    names = {id(p): n for n, p in model.named_parameters()}
    groups = get_params_groups_with_decay(model, **settings)
    params = {g["name"]: {k: g[k] for k in ("lr_multiplier", "wd_multiplier", "is_last_layer")} for g in groups}
    fused = [
        {**{k: v for k, v in g.items() if k != "params"}, "params": [names[id(p)] for p in g["params"]]}
        for g in fuse_params_groups(groups)
    ]
    return params, fused


def _settings():
    s = load_reference("param_groups.json")["settings"]
    return {"lr_decay_rate": s["lr_decay_rate"], "patch_embed_lr_mult": s["patch_embed_lr_mult"]}


@pytest.mark.parametrize("key, variant", [("backbone", "mlp"), ("backbone_chunked", "chunked")])
def test_backbone_groups_equal_reference(key, variant):
    ref = load_reference("param_groups.json")[key]
    entry = load_reference("backbones.pt")[variant]
    kwargs = entry["kwargs"]
    model = StandInViT(
        kwargs["img_size"], kwargs["patch_size"], kwargs["embed_dim"], kwargs["depth"], kwargs["block_chunks"]
    )
    model.load_state_dict(entry["state_dict"], strict=True)  # same names and shapes as the released model
    params, fused = _summary(model, _settings())
    assert list(params) == list(ref["params"])
    assert params == ref["params"]
    assert fused == ref["fused_groups"]
    assert (model.n_blocks, model.chunked_blocks) == (ref["n_blocks_seen"], ref["chunked_blocks_seen"])


def test_head_groups_equal_reference():
    ref = load_reference("param_groups.json")["head"]
    entry = load_reference("heads_losses.pt")["dino_head"]
    kw = entry["kwargs"]
    head = StandInDINOHead(kw["in_dim"], kw["out_dim"], kw["hidden_dim"], kw["bottleneck_dim"])
    head.load_state_dict(entry["state_dict"], strict=True)
    params, fused = _summary(head, _settings())
    assert params == ref["params"] and list(params) == list(ref["params"])
    assert fused == ref["fused_groups"]


def _quirk_model(name):
    chunked = StandInViT(img_size=224, depth=4, block_chunks=2)
    if name == "chunked_direct":
        return chunked
    if name == "wrapper_with_backbone_attr_chunked":
        return Wrapper(chunked, StandInDINOHead())
    return Wrapper(StandInViT(), StandInDINOHead())


@pytest.mark.parametrize(
    "quirk", ["chunked_direct", "wrapper_with_backbone_attr_chunked", "wrapper_with_backbone_attr_flat"]
)
def test_quirks_equal_reference(quirk):
    ref = load_reference("param_groups.json")["quirks"][quirk]
    params, fused = _summary(_quirk_model(quirk), _settings())
    assert params == ref["params"] and list(params) == list(ref["params"])
    assert fused == ref["fused_groups"]


def test_direct_decay_rate_calls_equal_reference():
    calls = load_reference("param_groups.json")["get_vit_lr_decay_rate_calls"]
    assert len(calls) > 20
    for call in calls:
        args = dict(
            lr_decay_rate=call["lr_decay_rate"],
            num_layers=call["num_layers"],
            force_is_backbone=call["force_is_backbone"],
            chunked_blocks=call["chunked_blocks"],
        )
        if call["error"] is None:
            assert get_vit_lr_decay_rate(call["name"], **args) == call["value"], call
        else:
            exc_type, message = call["error"].split(": ", 1)
            assert exc_type == "ValueError"
            with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
                get_vit_lr_decay_rate(call["name"], **args)


def test_frozen_and_wrapped_parameters():
    model = StandInViT(img_size=28, depth=2)
    model.cls_token.requires_grad_(False)
    names = [g["name"] for g in get_params_groups_with_decay(model, 0.9)]
    assert "cls_token" not in names and "pos_embed" in names
    # FSDP / checkpoint wrappers insert name segments that must not change the groups
    wrapped = nn.Module()
    wrapped._fsdp_wrapped_module = model
    wrapped.n_blocks, wrapped.chunked_blocks = 2, False
    wrapped_names = [g["name"] for g in get_params_groups_with_decay(wrapped, 0.9)]
    assert wrapped_names == names


def test_optimizer_groups_follow_schedules():
    head, backbone = StandInDINOHead(), StandInViT(img_size=28, depth=2)
    groups = fuse_params_groups(get_params_groups_with_decay(backbone, 0.5, 0.2))
    groups += fuse_params_groups(get_params_groups_with_decay(head))
    optimizer = build_optimizer(groups, betas=(0.9, 0.95))
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len([*head.parameters(), *backbone.parameters()])
    apply_optim_scheduler(optimizer, lr=0.1, wd=0.04, last_layer_lr=0.0)
    for g in optimizer.param_groups:
        expected_lr = (0.0 if g["is_last_layer"] else 0.1) * g["lr_multiplier"]
        assert g["lr"] == expected_lr and g["weight_decay"] == 0.04 * g["wd_multiplier"]
    last = [g for g in optimizer.param_groups if g["is_last_layer"]]
    assert len(last) == 1 and last[0]["lr"] == 0.0
    patch = [g for g in optimizer.param_groups if g["lr_multiplier"] == pytest.approx(0.5**3 * 0.2)]
    assert patch and all(g["lr"] == pytest.approx(0.1 * 0.5**3 * 0.2) for g in patch)
    # with the last-layer lr frozen at 0 an AdamW step leaves the last layer unchanged
    before = head.last_layer.weight_v.detach().clone()
    sum(p.sum() for g in optimizer.param_groups for p in g["params"]).backward()
    optimizer.step()
    torch.testing.assert_close(head.last_layer.weight_v, before, rtol=0, atol=0)


def test_apply_optim_scheduler_names_missing_key():
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(2))])
    with pytest.raises(KeyError, match="fuse_params_groups"):
        apply_optim_scheduler(optimizer, 0.1, 0.1, 0.1)
