"""``scripts/benchmark_backbone.py``'s DINOv3 rows: ours, timm and transformers on the same weights, one table."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("timm", reason="the benchmark's peer rows need timm")
pytest.importorskip("transformers", reason="the benchmark's peer rows need transformers")

from scripts import benchmark_backbone  # noqa: E402


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()  # the script sets the process-wide thread count
    yield threads
    torch.set_num_threads(threads)


@pytest.mark.slow  # three ViT-S builds and timm / transformers imports: ~8 s alone, less after other peer tests
def test_dinov3_rows_same_features_and_memory(capsys, keep_threads):
    benchmark_backbone.main(["--arch", "dinov3_vits16", "--quick", "--threads", str(keep_threads)])
    lines = capsys.readouterr().out.splitlines()
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[3:]]
    assert [r["implementation"].split()[0] for r in rows] == ["ours", "timm", "transformers"]
    assert all(r["arch"] == "dinov3_vits16" for r in rows)
    assert all(float(r["max abs diff @112"]) < 1e-4 for r in rows)  # same weights, same cls token
    peaks = [float(r["peak MiB"]) for r in rows]
    assert 0 < peaks[0] <= peaks[1]  # ours allocates no more than timm at its peak
    assert all(float(r["ms/batch (min)"]) > 0 for r in rows)
