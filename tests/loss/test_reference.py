"""Every loss value of tests/reference/heads_losses.pt, reproduced with the lean and the plain cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinov2.loss import DINOLoss, KoLeoLoss, iBOTPatchLoss
from tests.conftest import load_reference

TOL = {"rtol": 1e-5, "atol": 1e-5}
LEAN = [pytest.param(True, id="lean"), pytest.param(False, id="plain")]


def _ref(name):
    return load_reference("heads_losses.pt")[name]


@pytest.mark.parametrize("lean", LEAN)
def test_dino_loss_centring_sequence(lean):
    ref = _ref("dino_loss")
    loss_fn = DINOLoss(**ref["kwargs"], lean_cross_entropy=lean)
    k = ref["kwargs"]["out_dim"]
    for step in ref["steps"]:
        torch.testing.assert_close(loss_fn.center, step["center_before_call"], **TOL)
        probs = loss_fn.softmax_center_teacher(step["teacher_logits"], ref["teacher_temp"])
        torch.testing.assert_close(loss_fn.center, step["center_used"], **TOL)
        torch.testing.assert_close(probs, step["teacher_softmaxed_centered"], **TOL)
        loss_fn.update_center(step["teacher_logits"])
        torch.testing.assert_close(loss_fn.center, step["center_after_update_center_call"], **TOL)
        loss_fn.apply_center_update()
        torch.testing.assert_close(loss_fn.center, step["center_after_apply"], **TOL)
        loss = loss_fn(step["student_logits"], list(probs.reshape(2, -1, k)))
        torch.testing.assert_close(loss, step["loss"], **TOL)


def test_dino_sinkhorn_without_process_group():
    ref = _ref("dino_sinkhorn")
    loss_fn = DINOLoss(ref["teacher_logits"].shape[-1])
    out = loss_fn.sinkhorn_knopp_teacher(ref["teacher_logits"], ref["teacher_temp"], ref["n_iterations"])
    torch.testing.assert_close(out, ref["output"], **TOL)


def test_ibot_sinkhorn_without_process_group():
    """The release raises here ('Default process group has not been initialized'); ours gives the world-1 result."""
    ref = _ref("ibot_sinkhorn")
    assert "process group" in ref["error_without_process_group"]
    n_masked = ref["n_masked_patches_tensor"].clone()
    loss_fn = iBOTPatchLoss(ref["teacher_logits"].shape[-1])
    out = loss_fn.sinkhorn_knopp_teacher(ref["teacher_logits"], ref["teacher_temp"], n_masked, ref["n_iterations"])
    torch.testing.assert_close(out, ref["output"], **TOL)
    assert torch.equal(n_masked, ref["n_masked_patches_tensor"])  # not modified in place


@pytest.mark.parametrize("lean", LEAN)
def test_ibot_centring_and_masked_losses(lean):
    ref = _ref("ibot")
    loss_fn = iBOTPatchLoss(**ref["kwargs"], lean_cross_entropy=lean)
    masks, n_masked = ref["masks"], ref["n_masked_patches"]
    for step in ref["steps"]:
        torch.testing.assert_close(loss_fn.center, step["center_before_call"], **TOL)
        probs = loss_fn.softmax_center_teacher(step["teacher_logits"], ref["teacher_temp"])  # [1, M, K]
        torch.testing.assert_close(loss_fn.center, step["center_used"], **TOL)
        torch.testing.assert_close(probs, step["teacher_softmaxed_centered"], **TOL)
        loss_fn.update_center(step["teacher_logits"])
        loss_fn.apply_center_update()
        torch.testing.assert_close(loss_fn.center, step["center_after_apply"], **TOL)
        student = step["student_logits"]
        loss = loss_fn.forward_masked(student, probs.squeeze(0), masks, n_masked, ref["masks_weight"])
        torch.testing.assert_close(loss, step["loss_forward_masked"], **TOL)
        loss = loss_fn.forward_masked(student, probs.squeeze(0), masks)
        torch.testing.assert_close(loss, step["loss_forward_masked_default_weight"], **TOL)


def test_ibot_default_masks_weight_matches_collate():
    ref = _ref("ibot")
    masks = ref["masks"]
    weight = (1 / masks.sum(-1).clamp(min=1).float()).unsqueeze(-1).expand_as(masks)[masks]
    torch.testing.assert_close(weight, ref["masks_weight"], rtol=0, atol=0)


@pytest.mark.parametrize("lean", LEAN)
def test_ibot_forward_masked_padded_and_dense(lean):
    ref = _ref("ibot")
    loss_fn = iBOTPatchLoss(**ref["kwargs"], lean_cross_entropy=lean)
    padded = ref["forward_masked_padded"]
    loss = loss_fn.forward_masked(
        padded["student_logits"], padded["teacher_probs"], ref["masks"], padded["n_masked_patches"], ref["masks_weight"]
    )
    torch.testing.assert_close(loss, padded["loss"], **TOL)
    dense = ref["forward_dense"]
    loss = loss_fn(dense["student_logits"], dense["teacher_probs"], dense["masks"])
    torch.testing.assert_close(loss, dense["loss"], **TOL)


@pytest.mark.parametrize("name", ["koleo", "koleo_duplicate_rows"])
def test_koleo(name):
    ref = _ref(name)
    loss_fn = KoLeoLoss()
    torch.testing.assert_close(loss_fn(ref["input"]), ref["loss"], **TOL)
    if "nn_index" in ref:
        nn_index = loss_fn.pairwise_NNs_inner(F.normalize(ref["input"], p=2, dim=-1, eps=1e-8))
        assert torch.equal(nn_index, ref["nn_index"])
