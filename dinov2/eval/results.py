"""Result helpers shared by the evaluation protocols: JSON-safe values, plain-text tables, result files."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from dinov2.utils.io import atomic_write_text

__all__ = ["to_jsonable", "format_table", "write_json", "append_json_lines"]


def to_jsonable(value: Any) -> Any:
    """Convert tensors (0-dim -> number, n-dim -> nested lists), enums, tuples and mappings to JSON types.

    NaN and infinities become ``None`` so the output is strict JSON.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return to_jsonable(value.item() if value.ndim == 0 else value.tolist())
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if hasattr(value, "item"):  # numpy scalars
        return to_jsonable(value.item())
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


def _cell(value: Any, float_format: str) -> str:
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        value = value.item()
    if isinstance(value, float):
        return "n/a" if not math.isfinite(value) else format(value, float_format)
    return "" if value is None else str(value)


def format_table(
    rows: Sequence[Mapping[str, Any]] | Sequence[Sequence[Any]],
    headers: Sequence[str] | None = None,
    float_format: str = ".2f",
    title: str | None = None,
) -> str:
    """Render rows as an aligned plain-text table (numbers right-aligned, text left-aligned).

    rows: dicts (headers default to all keys in first-seen order; missing cells are blank) or
    sequences (headers required).
    """
    if rows and isinstance(rows[0], Mapping):
        if headers is None:  # union of the rows' keys, in first-seen order
            headers = list(dict.fromkeys(key for row in rows for key in row))  # type: ignore[union-attr]
        matrix = [[row.get(h) for h in headers] for row in rows]  # type: ignore[union-attr]
    else:
        if headers is None:
            raise ValueError("format_table needs headers when rows are sequences")
        matrix = [list(row) for row in rows]
    cells = [[_cell(v, float_format) for v in row] for row in matrix]
    numeric = [all(isinstance(row[i], (int, float)) or row[i] is None for row in matrix) for i in range(len(headers))]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [title] if title else []
    out += [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in cells]
    return "\n".join(out)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` (converted with :func:`to_jsonable`) as indented JSON, atomically (temp file + rename)."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


def append_json_lines(path: str | os.PathLike, records: Mapping[str, Any]) -> None:
    """Append one ``{key: value}`` JSON object per line, as the released ``results_eval_*.json`` files do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for key, value in records.items():
            f.write(json.dumps({str(key): to_jsonable(value)}) + "\n")
