"""Multi-scale deformable attention (``dinov2.layers.ms_deform_attn``): it samples where its reference points and
offsets say, and its plain-autograd gradients are exact (the release needs a compiled CUDA kernel for them). Its
equality with the release, inside DINOv3's segmentor, is tested in tests/heads/test_dinov3_segmentor.py."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from dinov2.layers.ms_deform_attn import MSDeformAttn, get_reference_points


def test_deformable_attention_samples_where_it_is_told_and_has_exact_gradients():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=1).double()
    expected = torch.tensor([[[[1.0, 0.0]]] * 2, [[[-1.0, 0.0]]] * 2], dtype=torch.float64)  # heads at 0 and 180 deg
    assert_close(attn.sampling_offsets.bias.view(2, 2, 1, 2), expected)
    shapes = torch.tensor([[2, 3], [1, 2]])
    start = torch.tensor([0, 6])
    values = torch.randn(1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()  # sample at the reference point itself
    # a query at the centre of level 0's cell (row 1, column 2) and of level 1's cell (row 0, column 1)
    reference = torch.tensor([[[[5 / 6, 3 / 4], [3 / 4, 1 / 2]]]], dtype=torch.float64)
    centres = get_reference_points(shapes, None)  # [1, 8, 1, 2]: every cell's centre, levels one after the other
    assert_close(centres[0, [5, 7], 0].double(), reference[0, 0])
    out = attn(torch.randn(1, 1, 8, dtype=torch.float64), reference, values, shapes, start)
    value = attn.value_proj(values)  # uniform attention: the mean of the two cells' values
    assert_close(out, attn.output_proj((value[:, 5] + value[:, 7]) / 2)[:, None])
    with pytest.raises(ValueError, match="do not add up to 9 inputs"):
        attn(out, reference, torch.randn(1, 9, 8, dtype=torch.float64), shapes, start)
    with torch.no_grad():
        attn.sampling_offsets.bias.normal_(std=0.5)
    query = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    references = reference.expand(1, 3, 2, 2)
    assert torch.autograd.gradcheck(
        lambda q, v: attn(q, references, v, shapes, start), (query, values.requires_grad_())
    )
