"""Result helpers shared by the evaluation protocols: JSON-safe values, plain-text tables, result files."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dinov2.utils.io import to_jsonable, write_json

__all__ = ["to_jsonable", "format_table", "write_json", "append_json_lines"]


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


def append_json_lines(path: str | os.PathLike, records: Mapping[str, Any]) -> None:
    """Append one ``{key: value}`` JSON object per line, as the released ``results_eval_*.json`` files do."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for key, value in records.items():
            f.write(json.dumps({str(key): to_jsonable(value)}) + "\n")
