"""Released small helpers: seeding, batch-norm detection, git state, pretrained-weight loading."""

from __future__ import annotations

import logging
import random
import re

import numpy as np
import pytest
import torch
from torch import nn

from dinov2.models.weights import NotAWeightsFileError
from dinov2.utils.utils import fix_random_seeds, get_sha, has_batchnorms, load_pretrained_weights


def _draw():
    return random.random(), np.random.rand(), torch.rand(1).item()


def test_fix_random_seeds_repeats_every_generator():
    fix_random_seeds(5)
    first = _draw()
    fix_random_seeds(5)
    assert _draw() == first
    fix_random_seeds(6)
    assert _draw() != first


def test_has_batchnorms():
    assert has_batchnorms(nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.BatchNorm1d(2))))
    assert not has_batchnorms(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)))


def test_get_sha_format():
    assert re.fullmatch(r"sha: ([0-9a-f]{40}|N/A), status: (clean|has uncommitted changes), branch: \S+", get_sha())


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))


def test_load_pretrained_weights_strips_prefixes_and_picks_key(tmp_path, caplog):
    source = _model()
    wrapped = {f"module.backbone.{k}": v + 1 for k, v in source.state_dict().items()}
    wrapped["module.dino_head.w"] = torch.zeros(1)
    path = tmp_path / "ckpt.pth"
    torch.save({"teacher": wrapped, "iteration": 3}, path)
    target = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    with caplog.at_level(logging.WARNING, logger="dinov2"):
        msg = load_pretrained_weights(target, str(path), checkpoint_key="teacher")
    assert msg.missing_keys == [] and msg.unexpected_keys == ["dino_head.w"]
    assert "1 unexpected key(s) ['dino_head.w']" in caplog.text
    for key, value in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[key], value + 1, rtol=0, atol=0)


def test_load_pretrained_weights_reports_missing_keys(tmp_path, caplog):
    path = tmp_path / "partial.pth"
    torch.save({"0.weight": torch.ones(4, 3)}, path)
    target = _model()
    with caplog.at_level(logging.WARNING, logger="dinov2"):
        msg = load_pretrained_weights(target, str(path), checkpoint_key="teacher")  # key absent: whole dict
    assert sorted(msg.missing_keys) == ["0.bias", "1.bias", "1.weight"]
    assert "3 missing key(s)" in caplog.text
    assert torch.equal(target[0].weight, torch.ones(4, 3))


def test_load_pretrained_weights_refuses_pickled_objects(tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"0.weight": torch.ones(4, 3), "obj": _Unsafe()}, path)
    with pytest.raises(NotAWeightsFileError, match=r"Python objects .*_Unsafe"):  # named; never unpickled
        load_pretrained_weights(_model(), str(path), None)


def test_load_pretrained_weights_missing_file():
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained_weights(_model(), "nope.pth", None)


class _Unsafe:
    pass
