"""GramLoss against a written-out formula."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from dinov2.loss import GramLoss


def _reference(student, teacher, img_level, remove_neg):
    s, t = (torch.nn.functional.normalize(f.double(), dim=-1) for f in (student, teacher))
    if not img_level:
        s, t = s.reshape(1, -1, s.shape[-1]), t.reshape(1, -1, t.shape[-1])
    gs, gt = torch.einsum("bpd,bqd->bpq", s, s), torch.einsum("bpd,bqd->bpq", t, t)
    if remove_neg:
        gs, gt = gs.clamp_min(0), gt.clamp_min(0)
    return ((gs - gt) ** 2).sum() / gs.numel()  # squared Frobenius norm over the number of entries


@pytest.mark.parametrize("img_level", [True, False])
@pytest.mark.parametrize("remove_neg", [True, False])
def test_gram_loss_formula(img_level, remove_neg):
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 10, 8), torch.randn(3, 10, 8)
    loss = GramLoss(remove_neg=remove_neg)(student, teacher, img_level=img_level)
    assert loss.dtype == torch.float32
    assert_close(loss.double(), _reference(student, teacher, img_level, remove_neg), rtol=1e-5, atol=0)


def test_gram_loss_half_inputs_and_teacher_only_flag():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    full = GramLoss()(student, teacher)
    assert_close(GramLoss()(student.half(), teacher.half()), full, rtol=2e-3, atol=0)
    # As released, the student keeps its negative entries under remove_only_teacher_neg.
    only_teacher = GramLoss(remove_neg=False, remove_only_teacher_neg=True)(student, teacher)
    s, t = (torch.nn.functional.normalize(f, dim=-1) for f in (student, teacher))
    expected = ((s @ s.transpose(1, 2) - (t @ t.transpose(1, 2)).clamp_min(0)) ** 2).mean()
    assert_close(only_teacher, expected)
    with pytest.raises(ValueError, match="remove_neg"):
        GramLoss(remove_neg=True, remove_only_teacher_neg=True)
