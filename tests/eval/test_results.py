"""Result helpers: strict JSON from tensors, aligned tables, released line-per-key result files."""

import json
import math

import torch

from dinov2.eval.metrics import MetricType
from dinov2.eval.results import append_json_lines, format_table, to_jsonable, write_json


def test_to_jsonable_is_strict_json():
    value = {
        ("full", 10): {"top-1": torch.tensor(78.5), "per-class": torch.tensor([1.0, math.nan])},
        "metric": MetricType.MEAN_ACCURACY,
        "C": float("inf"),
    }
    converted = to_jsonable(value)
    assert converted == {
        "('full', 10)": {"top-1": 78.5, "per-class": [1.0, None]},
        "metric": "mean_accuracy",
        "C": None,
    }
    json.dumps(converted, allow_nan=False)


def test_format_table_aligns_and_unions_columns():
    table = format_table([{"name": "a", "top-1": 81.234}, {"name": "longer", "top-1": 5.0, "std": 0.5}])
    lines = table.splitlines()
    assert lines[0].split() == ["name", "top-1", "std"]
    assert lines[2].split() == ["a", "81.23"]  # missing cell left blank
    assert lines[3].split() == ["longer", "5.00", "0.50"]
    assert lines[2].index("81.23") + len("81.23") == lines[3].index("5.00") + len("5.00")  # numbers right-aligned


def test_result_files(tmp_path):
    write_json(tmp_path / "out" / "results.json", {"top-1": torch.tensor(1.5)})
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == {"top-1": 1.5}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["results.json"]  # no temp file left
    append_json_lines(tmp_path / "knn.json", {"('full', 10) Top 1": 70.0, "('full', 10) Top 5": 90.0})
    append_json_lines(tmp_path / "knn.json", {"('full', 20) Top 1": 71.0})
    lines = (tmp_path / "knn.json").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"('full', 10) Top 1": 70.0},
        {"('full', 10) Top 5": 90.0},
        {"('full', 20) Top 1": 71.0},
    ]
