"""Per-rank RNG state of a checkpoint: exact round trip, and reproducible re-seeding when the world size changed."""

from __future__ import annotations

import random

import numpy as np
import torch

from dinov2.train.rng_state import capture_rng_state, restore_rank_rng, restore_rng_state, rng_file, save_rank_rng


def _draws():
    return (random.random(), float(np.random.rand()), np.random.randn(2).tolist(), torch.rand(3).tolist())


def test_capture_and_restore_round_trip_every_generator():
    np.random.randn()  # leaves a cached gaussian in numpy's state: it must come back too
    state = capture_rng_state()
    expected = _draws()
    restore_rng_state(state)
    assert _draws() == expected


def test_rank_file_restores_exactly_when_the_world_size_is_unchanged(tmp_path):
    save_rank_rng(tmp_path)
    assert rng_file(tmp_path, 0).is_file()
    expected = _draws()
    assert restore_rank_rng(tmp_path, saved_world_size=1, iteration=5) is True
    assert _draws() == expected


def test_another_world_size_reseeds_reproducibly(tmp_path):
    save_rank_rng(tmp_path)
    continued = _draws()
    assert restore_rank_rng(tmp_path, saved_world_size=2, iteration=5) is False
    first = _draws()
    assert first != continued  # not the old stream: it cannot continue on another number of processes
    assert restore_rank_rng(tmp_path, saved_world_size=2, iteration=5) is False
    assert _draws() == first  # the same seed from the same checkpoint, rank and iteration
    restore_rank_rng(tmp_path, saved_world_size=2, iteration=6)
    assert _draws() != first
