"""Sinkhorn-Knopp invariants and the deferred centre EMA (arithmetic, checkpoints, empty batches)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinov2.loss import DINOLoss, iBOTPatchLoss
from dinov2.loss.centering import sinkhorn_knopp


def _logits(n, k, seed=0):
    g = torch.Generator().manual_seed(seed)
    # like a DINO head: unit bottleneck features through a weight-normalised layer, |logit| <~ 1
    return F.normalize(torch.randn(n, k, generator=g), dim=-1) * 4


def _marginal_error(q):
    """Largest relative deviation of the prototype marginals from uniform (B / K each)."""
    n, k = q.shape
    return ((q.sum(dim=0) * k / n) - 1).abs().max().item()


def test_sinkhorn_samples_sum_to_one_and_marginals_converge():
    t = _logits(64, 256)
    errors = []
    for n_iterations in [1, 3, 10, 30, 200]:
        q = sinkhorn_knopp(t, 0.07, n_iterations)
        assert q.dtype == torch.float32 and (q >= 0).all()
        torch.testing.assert_close(q.sum(dim=1), torch.ones(64), rtol=0, atol=1e-6)  # each sample: mass 1
        errors.append(_marginal_error(q))
    # The prototype marginals are only as uniform as the iterations make them; 3 (the default) is coarse.
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-5


def test_sinkhorn_invariant_to_logit_shifts():
    """A per-prototype shift is undone by the first row normalisation; a per-sample one only at convergence."""
    t = _logits(16, 32)
    g = torch.Generator().manual_seed(1)
    per_prototype = 0.5 * torch.randn(1, 32, generator=g)
    per_sample = 0.5 * torch.randn(16, 1, generator=g)
    torch.testing.assert_close(sinkhorn_knopp(t + per_prototype, 0.1, 3), sinkhorn_knopp(t, 0.1, 3))
    converged = sinkhorn_knopp(t, 0.1, 300)
    torch.testing.assert_close(sinkhorn_knopp(t + per_sample, 0.1, 300), converged, rtol=1e-4, atol=1e-6)


def test_sinkhorn_half_precision_input_and_global_count():
    t = _logits(8, 16)
    torch.testing.assert_close(sinkhorn_knopp(t.half(), 0.1), sinkhorn_knopp(t.half().float(), 0.1))
    # iBOT passes the count as a tensor; with one process it is the local count.
    torch.testing.assert_close(sinkhorn_knopp(t, 0.1, n_samples=torch.tensor([8])), sinkhorn_knopp(t, 0.1))


def test_sinkhorn_with_no_samples():
    out = iBOTPatchLoss(16).sinkhorn_knopp_teacher(torch.zeros(0, 16), 0.07, torch.tensor([0]))
    assert out.shape == (0, 16)


@pytest.mark.parametrize("bad", [0.0, -0.04, float("nan"), float("inf")])
def test_bad_teacher_temperature(bad):
    t = _logits(4, 8)
    with pytest.raises(ValueError, match="teacher_temp must be a finite number > 0"):
        sinkhorn_knopp(t, bad)
    with pytest.raises(ValueError, match="teacher_temp"):
        DINOLoss(8).softmax_center_teacher(t, bad)


def test_centre_ema_arithmetic():
    """Constant teacher logits t: after n updates the centre is mean(t) * (1 - m^n)."""
    m = 0.8
    loss_fn = DINOLoss(4, center_momentum=m)
    t = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    for n in range(1, 5):
        loss_fn.softmax_center_teacher(t, 0.1)  # applies the previous step's update
        loss_fn.update_center(t)
        assert loss_fn.has_pending_center_update
        loss_fn.apply_center_update()
        expected = t.mean(dim=0, keepdim=True) * (1 - m**n)
        torch.testing.assert_close(loss_fn.center, expected)
    assert not loss_fn.has_pending_center_update


def test_centre_update_is_deferred_and_used_by_softmax():
    loss_fn = DINOLoss(3)
    t = torch.tensor([[1.0, 0.0, -1.0]])
    loss_fn.update_center(t)
    assert torch.count_nonzero(loss_fn.center) == 0  # not applied yet
    probs = loss_fn.softmax_center_teacher(t, 0.5)
    torch.testing.assert_close(loss_fn.center, 0.1 * t)
    torch.testing.assert_close(probs, torch.softmax((t - 0.1 * t) / 0.5, dim=-1))


def test_second_update_before_apply_is_not_lost():
    loss_fn = DINOLoss(2)
    loss_fn.update_center(torch.tensor([[1.0, 1.0]]))
    loss_fn.update_center(torch.tensor([[2.0, 2.0]]))
    loss_fn.apply_center_update()
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.1 * 0.9 + 0.2, 0.1 * 0.9 + 0.2]]))


def test_checkpoint_between_update_and_apply():
    """state_dict() flushes the pending update; load_state_dict() drops a stale one."""
    t = _logits(6, 8)
    a, b = DINOLoss(8), DINOLoss(8)
    a.update_center(t)
    state = a.state_dict()
    assert list(state) == ["center"]
    b.update_center(t)
    b.apply_center_update()
    torch.testing.assert_close(state["center"], b.center)  # what the next step would have used

    c = DINOLoss(8)
    c.update_center(10 * t)  # pending, then replaced by the loaded centre
    c.load_state_dict(state)
    assert not c.has_pending_center_update
    torch.testing.assert_close(c.softmax_center_teacher(t, 0.1), b.softmax_center_teacher(t, 0.1))


def test_ibot_centre_uses_token_mean_and_skips_empty_batches():
    loss_fn = iBOTPatchLoss(4)
    assert loss_fn.center.shape == (1, 1, 4)
    t = torch.arange(12.0).reshape(1, 3, 4)  # [1, M, K]
    loss_fn.update_center(t)
    loss_fn.apply_center_update()
    torch.testing.assert_close(loss_fn.center, 0.1 * t.mean(dim=1, keepdim=True))
    before = loss_fn.center.clone()
    loss_fn.update_center(torch.zeros(1, 0, 4))  # no masked token: the release would make the centre NaN
    loss_fn.apply_center_update()
    assert torch.equal(loss_fn.center, before)
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        loss_fn.update_center(torch.zeros(3, 4))


def test_centre_follows_module_device_and_dtype_moves():
    loss_fn = DINOLoss(4).double()
    loss_fn.update_center(torch.ones(2, 4))
    loss_fn.apply_center_update()
    assert loss_fn.center.dtype == torch.float64
    torch.testing.assert_close(loss_fn.center, torch.full((1, 4), 0.1, dtype=torch.float64))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="student_temp"):
        DINOLoss(8, student_temp=0)
    with pytest.raises(ValueError, match="center_momentum"):
        iBOTPatchLoss(8, center_momentum=1.5)
