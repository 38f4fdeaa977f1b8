"""Counting the FLOPs a step really executes, for throughput and model-FLOPs-utilisation (MFU) reports.

``torch.utils.flop_counter.FlopCounterMode`` intercepts every matrix product (linear layers, convolutions,
attention kernels, in forward and backward) while the code runs: no tracing, so shape-dependent code paths
(position-embedding interpolation, packed multi-crop attention, efficient stochastic depth) are counted as they
execute. Element-wise work (norms, GELU, softmax) is not counted, the usual MFU convention.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode


def _cpu_attention_forward_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_backward_flops(grad_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    return flop_counter.sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)


def _missing_formulas() -> dict:
    """Formulas for the CPU SDPA kernels, which torch < 2.7 does not count (it counted CPU attention as 0)."""
    aten = torch.ops.aten
    formulas = {
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_forward_flops,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward_flops,
    }
    return {op: formula for op, formula in formulas.items() if op not in flop_counter.flop_registry}


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Run ``fn(*args, **kwargs)`` and return (FLOPs of its matrix products, its result). 1 multiply-add = 2 FLOPs."""
    with FlopCounterMode(display=False, custom_mapping=_missing_formulas()) as counter:
        result = fn(*args, **kwargs)
    return counter.get_total_flops(), result


def vit_forward_flops(n_images: int, n_tokens: int, dim: int, depth: int, mlp_ratio: float, patch_flops: int) -> int:
    """Analytic FLOPs of a ViT forward with an MLP FFN: per block and token ``2 (4 + 2 r) d^2`` for the linears
    and ``4 N d`` for attention's two products, plus the patch embedding (``patch_flops`` per image)."""
    linear = 2 * n_images * n_tokens * depth * (4 + 2 * mlp_ratio) * dim * dim
    attention = 4 * n_images * depth * n_tokens * n_tokens * dim
    return int(linear + attention + n_images * patch_flops)
