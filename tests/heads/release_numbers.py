"""Outputs against the numbers a release printed with ``summary`` in ``scripts/check_dinov3_depther.py`` (shape,
mean, RMS and 8 evenly spaced samples): equal within rtol 1e-5 and atol 1e-5 x RMS."""

from __future__ import annotations

import math

import torch
from torch.testing import assert_close


def assert_like_release(output: torch.Tensor, reference: dict, what: str = "output") -> None:
    """``output`` has the reference's shape, dtype (float32 where the reference names none), mean, RMS and samples."""
    dtype = getattr(torch, reference.get("dtype", "float32"))
    assert list(output.shape) == reference["shape"] and output.dtype == dtype, f"{what}: {output.dtype}, {dtype}"
    flat = output.double().reshape(-1)
    atol = 1e-5 * reference["rms"]
    samples = flat[torch.linspace(0, flat.numel() - 1, 8).long()]
    assert_close(samples, torch.tensor(reference["val"], dtype=torch.float64), rtol=1e-5, atol=atol, msg=what)
    assert math.isclose(flat.mean().item(), reference["mean"], rel_tol=1e-5, abs_tol=atol), what
    assert math.isclose(flat.pow(2).mean().sqrt().item(), reference["rms"], rel_tol=1e-5, abs_tol=atol), what
