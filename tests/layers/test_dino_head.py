"""DINOHead: released keys and outputs, weight-norm layer, init and the fp16 normalisation eps."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from dinov2.layers.dino_head import DINOHead, WeightNormLinear
from tests.conftest import load_reference

TOL = {"rtol": 1e-5, "atol": 1e-5}


def _reference_heads():
    ref = load_reference("heads_losses.pt")
    return [ref["dino_head"]] + list(ref["dino_head_extra"])


@pytest.mark.parametrize("index", [0, 1])
def test_reference_head_outputs(index):
    heads = _reference_heads()
    if index >= len(heads):
        pytest.skip("no such extra head in the reference")
    entry = heads[index]
    head = DINOHead(**entry["kwargs"]).eval()
    assert list(head.state_dict().keys()) == entry["state_dict_keys"]
    head.load_state_dict(entry["state_dict"], strict=True)
    with torch.no_grad():
        torch.testing.assert_close(head.mlp(entry["input"]), entry["mlp_output"], **TOL)
        torch.testing.assert_close(head.last_layer.weight, entry["last_layer_effective_weight"], **TOL)
        torch.testing.assert_close(head(entry["input"]), entry["output"], **TOL)


def test_every_extra_head_matches():
    for entry in _reference_heads()[1:]:
        head = DINOHead(**entry["kwargs"]).eval()
        head.load_state_dict(entry["state_dict"], strict=True)
        with torch.no_grad():
            torch.testing.assert_close(head(entry["input"]), entry["output"], **TOL)


def test_state_dict_layout_with_batchnorm():
    head = DINOHead(8, 16, use_bn=True, nlayers=3, hidden_dim=12, bottleneck_dim=4)
    linear_and_bn = sorted({k.rsplit(".", 1)[0] for k in head.state_dict()})
    assert linear_and_bn == ["last_layer", "mlp.0", "mlp.1", "mlp.3", "mlp.4", "mlp.6"]
    assert isinstance(head.mlp[1], nn.BatchNorm1d) and isinstance(head.mlp[2], nn.GELU)
    assert head.last_layer.weight_g.shape == (16, 1) and head.last_layer.weight_v.shape == (16, 4)


def test_init_matches_release():
    torch.manual_seed(0)
    head = DINOHead(256, 64, nlayers=3, hidden_dim=512, bottleneck_dim=128)
    linears = [m for m in head.mlp if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    for linear in linears:
        assert torch.count_nonzero(linear.bias) == 0
        assert abs(linear.weight.std().item() - 0.02) < 0.002
    g = head.last_layer.weight_g
    assert g.requires_grad and torch.equal(g, torch.ones_like(g))
    # Effective weight rows have norm g = 1.
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(64))
    assert not any(isinstance(m, nn.Linear) and m.bias is not None for m in [head.last_layer])


def test_weight_norm_linear_matches_torch_weight_norm_and_trains_g():
    torch.manual_seed(1)
    ours = WeightNormLinear(6, 5)
    ours.weight_g.data.uniform_(0.5, 1.5)
    plain = nn.Linear(6, 5, bias=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        plain = nn.utils.weight_norm(plain)  # the release's module, as the oracle
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(3, 6)
    torch.testing.assert_close(ours(x), plain(x))
    ours(x).square().sum().backward()
    plain(x).square().sum().backward()
    torch.testing.assert_close(ours.weight_g.grad, plain.weight_g.grad)
    torch.testing.assert_close(ours.weight_v.grad, plain.weight_v.grad)


def test_l2_normalisation_eps_depends_on_dtype():
    head = DINOHead(4, 3, nlayers=1, bottleneck_dim=4)
    head.mlp = nn.Identity()  # feed the normalisation directly
    with torch.no_grad():
        head.last_layer.weight_v.copy_(torch.eye(3, 4))
    tiny = torch.full((1, 4), 1e-7)  # norm 2e-7: below 1e-6, above 1e-12
    out32 = head(tiny)
    torch.testing.assert_close(out32.norm(), torch.tensor(3**0.5 / 2))  # unit vector -> 3 of 4 coords
    out16 = head.half()(tiny.half())
    # eps 1e-6 in fp16: x / 1e-6 ~ 0.1 per coordinate (1e-7 is subnormal in fp16), far from a unit vector
    assert out16.dtype == torch.float16 and torch.isfinite(out16).all()
    assert 0.05 < out16.float().max() < 0.15


def test_construction_and_forward_emit_no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        head = DINOHead(8, 16, hidden_dim=12, bottleneck_dim=4)
        head(torch.randn(2, 8)).sum().backward()
