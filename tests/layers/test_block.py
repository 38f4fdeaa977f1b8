"""Block: eval arithmetic, efficient stochastic depth (subset only, expected value), train/eval modes, packing."""

from __future__ import annotations

import torch

from dinov2.layers import Block, LayerScale, drop_add_residual_stochastic_depth
from dinov2.layers.block import drop_add_residual_stochastic_depth_packed
from dinov2.layers.packing import pack, unpack


def _block(drop_path: float = 0.0) -> Block:
    torch.manual_seed(0)
    return Block(16, num_heads=2, qkv_bias=True, init_values=0.7, drop_path=drop_path)


def test_eval_block_is_two_prenorm_residual_branches():
    block = _block(drop_path=0.5).eval()
    x = torch.randn(3, 5, 16)
    h = x + block.ls1(block.attn(block.norm1(x)))
    expected = h + block.ls2(block.mlp(block.norm2(h)))
    torch.testing.assert_close(block(x), expected)
    assert isinstance(block.ls1, LayerScale) and torch.allclose(block.ls1.gamma, torch.tensor(0.7))


def test_efficient_stochastic_depth_touches_only_the_kept_subset():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4)
    seen = []

    def branch(subset: torch.Tensor) -> torch.Tensor:
        seen.append(subset)
        return subset.square() + 1  # never zero

    out = drop_add_residual_stochastic_depth(x, branch, sample_drop_ratio=0.3)
    keep = int(8 * 0.7)
    assert seen[0].shape == (keep, 3, 4)  # the branch ran on the subset only
    changed = [i for i in range(8) if not torch.equal(out[i], x[i])]
    assert len(changed) == keep
    for i in changed:  # kept samples get the branch scaled by B / kept
        torch.testing.assert_close(out[i], x[i] + 8 / keep * (x[i].square() + 1))
    assert {tuple(s.flatten().tolist()) for s in seen[0]} == {tuple(x[i].flatten().tolist()) for i in changed}


def test_efficient_stochastic_depth_keeps_the_expected_value():
    torch.manual_seed(0)
    x = torch.randn(4, 2, 3)
    f = x.sin() + 2
    trials = 4000
    mean = sum(drop_add_residual_stochastic_depth(x, lambda s: s.sin() + 2, 0.5) for _ in range(trials)) / trials
    # each trial adds 2 * f to a random half of the samples: per-element std of the mean is |f| / sqrt(trials)
    assert ((mean - (x + f)).abs() <= 5 * f.abs() / trials**0.5).all()


def test_block_expected_value_in_training_equals_eval_output():
    block = _block(drop_path=0.25)
    with torch.no_grad():
        block.ls2.gamma.zero_()  # FFN branch off: the output is linear in the attention branch's keep mask
    batch = 10  # int(10 * 0.75) = 7 kept: the scale must be 10 / 7, not 1 / 0.75
    x = torch.randn(1, 5, 16).expand(batch, -1, -1)  # one image repeated: the batch mean is the expectation
    expected = block.eval()(x[:1])
    out = block.train()(x)
    assert (out != x).any(dim=(1, 2)).sum() == 7
    torch.testing.assert_close(out.mean(dim=0, keepdim=True), expected, rtol=1e-5, atol=1e-5)


def test_packed_single_group_matches_tensor_helper_for_the_same_seed():
    x = torch.randn(6, 4, 8)

    def branch(t: torch.Tensor) -> torch.Tensor:
        return t.tanh()

    torch.manual_seed(3)
    expected = drop_add_residual_stochastic_depth(x, branch, 0.4)
    torch.manual_seed(3)
    packed = drop_add_residual_stochastic_depth_packed(x.reshape(-1, 8), [(6, 4)], lambda t, g: branch(t), 0.4)
    torch.testing.assert_close(packed.view(6, 4, 8), expected, rtol=0, atol=0)


def test_packed_stochastic_depth_draws_one_subset_per_group():
    torch.manual_seed(0)
    groups = [(5, 3), (8, 2)]
    x = torch.zeros(5 * 3 + 8 * 2, 4)
    seen_groups = []

    def ones(t: torch.Tensor, g) -> torch.Tensor:
        seen_groups.append(list(g))
        return torch.ones_like(t)

    out = drop_add_residual_stochastic_depth_packed(x, groups, ones, 0.5)
    assert seen_groups == [[(2, 3), (4, 2)]]  # max(int(B * 0.5), 1) images per group
    for (b, _), image_rows, kept in zip(groups, unpack(out, groups), (2, 4)):
        per_image = image_rows[:, 0, 0]
        assert (per_image != 0).sum() == kept
        assert set(per_image.tolist()) == {0.0, b / kept}
        assert torch.equal(image_rows, per_image[:, None, None].expand_as(image_rows))


def _attn_rows_seen(block: Block, x) -> list[int]:
    rows = []
    handle = block.attn.register_forward_hook(lambda m, args, out: rows.append(args[0].shape[0]))
    block(x)
    handle.remove()
    return rows


def test_train_and_eval_modes_choose_the_stochastic_depth_method():
    x = torch.randn(4, 5, 16)
    crops = [torch.randn(4, 5, 16), torch.randn(6, 2, 16)]
    assert _attn_rows_seen(_block(0.5).eval(), x) == [20]  # eval: every image
    assert _attn_rows_seen(_block(0.5).train(), x) == [2 * 5]  # rate > 0.1: subset of int(4 * 0.5) images
    assert _attn_rows_seen(_block(0.05).train(), x) == [20]  # rate <= 0.1: per-sample DropPath on all
    # list (multi-crop) path: the release uses the subset method for every rate > 0
    assert _attn_rows_seen(_block(0.05).train(), crops) == [int(4 * 0.95) * 5 + int(6 * 0.95) * 2]
    block = _block(0.5).train()
    assert not torch.equal(block(x), block(x))  # random in training
    block.eval()
    assert torch.equal(block(x), block(x))


def test_block_list_forward_equals_each_crop_alone():
    block = _block().eval()
    crops = [torch.randn(2, 9, 16), torch.randn(3, 4, 16)]
    outs = block(crops)
    assert isinstance(outs, list) and len(outs) == 2
    for crop, out in zip(crops, outs):
        torch.testing.assert_close(out, block(crop), rtol=1e-5, atol=1e-5)
    packed, groups = pack(crops)
    torch.testing.assert_close(block.forward_packed(packed, groups), pack(outs)[0])
