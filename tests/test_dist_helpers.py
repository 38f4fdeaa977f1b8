"""The multi-process test helper returns results (tensors included) from every rank in rank order."""

import torch

from tests.dist_helpers import run_distributed


def _rank_tensor(rank: int, world_size: int) -> dict:
    return {"t": torch.full((3,), float(rank)), "world": world_size}


def test_run_distributed_returns_tensors_by_rank():
    out = run_distributed(_rank_tensor, 2)
    assert [r["t"].tolist() for r in out] == [[0.0] * 3, [1.0] * 3]
    assert all(r["world"] == 2 for r in out)
