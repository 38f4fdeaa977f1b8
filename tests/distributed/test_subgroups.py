"""Process subgroups on one process (their 2-process behaviour: tests/train/distillation/test_multi.py)."""

from __future__ import annotations

import pytest
import torch

from dinov2 import distributed
from dinov2.distributed.subgroups import (
    broadcast_to_subgroups,
    check_rank_ranges,
    current_group,
    current_subgroup,
    new_subgroups,
    scope,
    whole_job,
)


def test_rank_ranges_are_validated():
    assert check_rank_ranges([[0, 2], [2, 3]], 3) == [range(0, 2), range(2, 3)]
    overlap, gap, empty, triple = ([[0, 2], [1, 3]], 3), ([[0, 1]], 2), ([[1, 0], [0, 1]], 2), ([[0, 1, 2]], 1)
    for ranges, n_ranks in (overlap, gap, empty, triple):
        with pytest.raises(ValueError, match="ranks_range"):
            check_rank_ranges(ranges, n_ranks)


def test_one_process_is_one_subgroup():
    subgroup = new_subgroups([[0, 1]])  # no process group: the whole (one-process) job
    assert subgroup.group is None and subgroup.rank == 0 and subgroup.size == 1 and subgroup.index == 0
    assert current_subgroup() == subgroup
    x = torch.arange(10.0).view(2, 5)
    assert torch.equal(broadcast_to_subgroups(x, dim=1, total=4, subgroup=subgroup), x[:, :4])
    with pytest.raises(ValueError, match="fewer than the global batch"):
        broadcast_to_subgroups(x, dim=1, total=6, subgroup=subgroup)


def test_scope_is_restored():
    marker = object()  # any value stands for a group here: nothing is communicated without a process group
    assert current_group() is None
    with scope(marker):
        assert current_group() is marker
        with whole_job():
            assert current_group() is None
        assert current_group() is marker
        assert distributed.get_global_size() == 1 and distributed.is_main_process()  # no process group: one
    assert current_group() is None
