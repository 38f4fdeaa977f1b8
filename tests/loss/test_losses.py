"""DINO / iBOT / KoLeo behaviour beyond the reference values: edge cases, errors, gradients."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from dinov2.loss import DINOLoss, KoLeoLoss, iBOTPatchLoss


def _probs(*shape, seed=0):
    return torch.softmax(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) / 0.05, dim=-1)


def test_dino_loss_sums_pairs_of_crop_means():
    k = 16
    students = [torch.randn(3, k), torch.randn(3, k), torch.randn(3, k)]
    teachers = [_probs(3, k, seed=1), _probs(3, k, seed=2)]
    expected = sum(-(t * F.log_softmax(s / 0.1, dim=-1)).sum(-1).mean() for s in students for t in teachers)
    torch.testing.assert_close(DINOLoss(k)(students, teachers), expected)


def test_dino_loss_gradients_lean_vs_plain():
    students = [torch.randn(4, 32, requires_grad=True) for _ in range(2)]
    teachers = list(_probs(2, 4, 32))
    grads = []
    for lean in (True, False):
        loss = DINOLoss(32, lean_cross_entropy=lean)(students, teachers)
        grads.append(torch.autograd.grad(loss, students))
    for lean_grad, plain_grad in zip(*grads):
        torch.testing.assert_close(lean_grad, plain_grad)


@pytest.mark.parametrize(
    ("students", "teachers", "match"),
    [
        ([], [torch.zeros(2, 8)], "at least one student and one teacher"),
        ([torch.zeros(2, 8)], [], "at least one student and one teacher"),
        ([torch.zeros(2, 9)], [torch.zeros(2, 9)], "built for 8 prototypes"),
        ([torch.zeros(2, 8)], [torch.zeros(3, 8)], "teacher probabilities #0 have shape"),
    ],
)
def test_dino_loss_bad_inputs(students, teachers, match):
    with pytest.raises(ValueError, match=match):
        DINOLoss(8)(students, teachers)


def test_dino_update_center_rejects_wrong_prototype_count():
    with pytest.raises(ValueError, match="built for 8 prototypes"):
        DINOLoss(8).update_center(torch.zeros(2, 16))


def test_ibot_no_masked_patch_gives_zero():
    loss_fn = iBOTPatchLoss(8)
    masks = torch.zeros(4, 6, dtype=torch.bool)
    student = torch.zeros(0, 8, requires_grad=True)
    loss = loss_fn.forward_masked(student, torch.zeros(0, 8), masks)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()
    padded = loss_fn.forward_masked(torch.randn(5, 8), _probs(5, 8), masks, n_masked_patches=0)
    assert padded.item() == 0.0
    dense = loss_fn(torch.randn(4, 6, 8), _probs(4, 6, 8), masks)
    assert dense.item() == 0.0


def test_ibot_forward_masked_normalisation():
    """sum over tokens of CE / #masked of its image, divided by all B images (masked or not)."""
    loss_fn = iBOTPatchLoss(8)
    masks = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 1, 0]], dtype=torch.bool)
    student, teacher = torch.randn(3, 8), _probs(3, 8)
    ce = -(teacher * F.log_softmax(student / 0.1, dim=-1)).sum(-1)
    expected = (ce[0] / 2 + ce[1] / 2 + ce[2]) / 3
    torch.testing.assert_close(loss_fn.forward_masked(student, teacher, masks), expected)


def test_ibot_bad_inputs():
    loss_fn = iBOTPatchLoss(8)
    masks = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match="pass n_masked_patches"):
        loss_fn.forward_masked(torch.zeros(3, 8), torch.zeros(3, 8), masks)  # 3 rows, 2 masked tokens
    with pytest.raises(ValueError, match="outside"):
        loss_fn.forward_masked(torch.zeros(3, 8), torch.zeros(3, 8), masks, n_masked_patches=4)
    with pytest.raises(ValueError, match="built for 8 prototypes"):
        loss_fn.forward_masked(torch.zeros(2, 7), torch.zeros(2, 7), masks)
    with pytest.raises(ValueError, match="teacher tokens"):
        loss_fn(torch.zeros(1, 3, 8), torch.zeros(1, 2, 8), masks)


def test_check_finite_flag():
    student = [torch.full((2, 4), float("nan"))]
    assert torch.isnan(DINOLoss(4)(student, [_probs(2, 4)]))  # off by default: NaN propagates
    with pytest.raises(FloatingPointError, match="non-finite values in the student logits"):
        DINOLoss(4, check_finite=True)(student, [_probs(2, 4)])
    masks = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(FloatingPointError, match="iBOT loss"):
        iBOTPatchLoss(4, check_finite=True).forward_masked(torch.full((2, 4), float("inf")), _probs(2, 4), masks)


def test_koleo_nearest_neighbour_excludes_self_and_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=g)
    loss_fn = KoLeoLoss()
    xn = F.normalize(x, dim=-1, eps=1e-8)
    nn_index = loss_fn.pairwise_NNs_inner(xn)
    assert (nn_index != torch.arange(12)).all()
    dist = torch.cdist(xn, xn).fill_diagonal_(float("inf"))
    assert torch.equal(nn_index, dist.argmin(dim=1))  # max inner product = min distance on the sphere
    expected = -torch.log(dist.min(dim=1).values + 1e-8).mean()
    torch.testing.assert_close(loss_fn(x), expected, rtol=1e-5, atol=1e-6)


def test_koleo_duplicate_rows_distance_is_eps_sqrt_d():
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    x[2] = x[0]
    xn = F.normalize(x, dim=-1, eps=1e-8)
    assert KoLeoLoss().pairwise_NNs_inner(xn)[0] == 2
    d = KoLeoLoss().pdist(xn[:1], xn[2:3])
    torch.testing.assert_close(d, torch.tensor([1e-8 * 16**0.5]))


def test_koleo_float32_without_autocast_warnings():
    x = torch.randn(6, 8, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            loss = KoLeoLoss()(x.bfloat16())
        loss.backward()
    assert loss.dtype == torch.float32 and x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match=r"features \[n, D\]"):
        KoLeoLoss()(torch.zeros(2, 3, 4))
