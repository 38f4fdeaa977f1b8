"""The CLIP loss against the naive formula: value and gradients of image, text and temperature (one process)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dinov2.text.clip_loss import clip_loss


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
