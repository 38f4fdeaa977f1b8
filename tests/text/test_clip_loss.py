"""The CLIP loss against the naive formula: value and gradients of image, text and temperature, on one process
and on two (gloo) processes holding halves of the batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dinov2.text.clip_loss import clip_loss
from tests.dist_helpers import run_distributed


def _naive(image, text, scale):
    s = scale * image @ text.T  # s_ij
    rows = torch.logsumexp(s, dim=1) - s.diag()
    columns = torch.logsumexp(s, dim=0) - s.diag()
    return (0.5 * (rows + columns)).mean()


def test_value_and_gradients_equal_the_naive_formula():
    g = torch.Generator().manual_seed(0)
    raw_image, raw_text = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    inputs = []
    for fn in (clip_loss, _naive):
        image, text = raw_image.clone().requires_grad_(), raw_text.clone().requires_grad_()
        log_scale = torch.tensor(2.0, requires_grad=True)
        loss = fn(F.normalize(image, dim=-1), F.normalize(text, dim=-1), log_scale.exp())
        loss.backward()
        inputs.append((loss.detach(), image.grad, text.grad, log_scale.grad))
    for got, want in zip(*inputs):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _rank_loss(rank, world_size, image, text):
    rows = slice(rank * 3, rank * 3 + 3)
    local_image, local_text = image[rows].clone().requires_grad_(), text[rows].clone().requires_grad_()
    log_scale = torch.tensor(2.0, requires_grad=True)
    loss = clip_loss(F.normalize(local_image, dim=-1), F.normalize(local_text, dim=-1), log_scale.exp())
    loss.backward()
    return loss.detach(), local_image.grad, local_text.grad, log_scale.grad


@pytest.mark.slow
def test_two_processes_give_the_loss_and_gradients_of_the_global_batch():
    g = torch.Generator().manual_seed(1)
    image, text = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    ranks = run_distributed(_rank_loss, 2, image, text)
    image_leaf, text_leaf = image.clone().requires_grad_(), text.clone().requires_grad_()
    log_scale = torch.tensor(2.0, requires_grad=True)
    want = _naive(F.normalize(image_leaf, dim=-1), F.normalize(text_leaf, dim=-1), log_scale.exp())
    want.backward()
    torch.testing.assert_close(sum(r[0] for r in ranks) / 2, want.detach())  # the mean of the rank losses
    # every rank receives the gradient of the sum of the rank losses (= 2 x the global mean) for its rows;
    # averaging over the 2 ranks (the trainer) gives the gradient of the global mean
    torch.testing.assert_close(torch.cat([r[1] for r in ranks]) / 2, image_leaf.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([r[2] for r in ranks]) / 2, text_leaf.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sum(r[3] for r in ranks) / 2, log_scale.grad, rtol=1e-5, atol=1e-6)
