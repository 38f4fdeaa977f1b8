"""Counting the FLOPs a step really executes, for throughput and model-FLOPs-utilisation (MFU) reports.

``torch.utils.flop_counter.FlopCounterMode`` intercepts every matrix product (linear layers, convolutions,
attention kernels, in forward and backward) while the code runs: no tracing, so shape-dependent code paths
(position-embedding interpolation, packed multi-crop attention, efficient stochastic depth) are counted as they
execute. Element-wise work (norms, GELU, softmax) is not counted, the usual MFU convention.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Run ``fn(*args, **kwargs)`` and return (FLOPs of its matrix products, its result). 1 multiply-add = 2 FLOPs."""
    with FlopCounterMode(display=False) as counter:
        result = fn(*args, **kwargs)
    return counter.get_total_flops(), result


def vit_forward_flops(n_images: int, n_tokens: int, dim: int, depth: int, mlp_ratio: float, patch_flops: int) -> int:
    """Analytic FLOPs of a ViT forward with an MLP FFN: per block and token ``2 (4 + 2 r) d^2`` for the linears
    and ``4 N d`` for attention's two products, plus the patch embedding (``patch_flops`` per image)."""
    linear = 2 * n_images * n_tokens * depth * (4 + 2 * mlp_ratio) * dim * dim
    attention = 4 * n_images * depth * n_tokens * n_tokens * dim
    return int(linear + attention + n_images * patch_flops)
