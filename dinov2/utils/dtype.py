"""Precision names used in configs and command lines, and their torch dtypes (released module path).

One table for the whole library: ``compute_precision.*.mixed_precision.*`` values, ``--dtype`` flags of the
scripts and the evaluation command lines all read it, and config validation derives its choices from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["DTYPES", "TypeSpec", "as_torch_dtype", "parse_dtype"]

#: Config names of the floating dtypes.
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_ALIASES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
    "double": torch.float64,
    "fp64": torch.float64,
}

TypeSpec = str | torch.dtype | np.dtype | type


def parse_dtype(value: Any, name: str = "dtype") -> torch.dtype:
    """``"fp32" | "fp16" | "bf16"`` (or a ``torch.dtype`` among them) -> ``torch.dtype``; names ``name`` on error."""
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    if isinstance(value, str) and value in DTYPES:
        return DTYPES[value]
    raise ValueError(f"{name} must be one of {sorted(DTYPES)}, got {value!r}")


def as_torch_dtype(dtype: TypeSpec, name: str = "dtype") -> torch.dtype:
    """Any dtype spelling (config name, ``"float64"``, ``"torch.float16"``, a numpy or torch dtype) as a
    ``torch.dtype``; ``name`` is the option named in the error."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key in DTYPES:
            return DTYPES[key]
        if key in _ALIASES:
            return _ALIASES[key]
        raise ValueError(f"{name} {dtype!r} is not one of {sorted({*DTYPES, *_ALIASES})}")
    return torch.from_numpy(np.zeros((), dtype=np.dtype(dtype))).dtype
