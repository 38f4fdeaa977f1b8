"""Block masking and the iBOT collate: counts within their ratio bins, consistent weights and bounds,
crop-major stacking, batches without local crops."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dinov2.data import MaskingGenerator, collate_data_and_cast

GRID = 14
N_TOKENS = GRID * GRID


def _generator() -> MaskingGenerator:
    return MaskingGenerator(input_size=(GRID, GRID), max_num_patches=0.5 * GRID * GRID)  # as the trainer builds it


def _samples(batch: int, n_local: int, global_size: int = 8, local_size: int = 4) -> list:
    """Crop ``c`` of sample ``b`` is filled with ``100 * b + c`` so its place in the batch is visible."""
    samples = []
    for b in range(batch):
        global_crops = [torch.full((3, global_size, global_size), 100.0 * b + c) for c in range(2)]
        local_crops = [torch.full((3, local_size, local_size), 100.0 * b + 10 + c) for c in range(n_local)]
        samples.append(({"global_crops": global_crops, "local_crops": local_crops, "offsets": ()}, ()))
    return samples


def test_masking_generator_counts_and_shape():
    generator = _generator()
    random.seed(0)
    assert generator(0).shape == (GRID, GRID) and generator(0).dtype == bool and not generator(0).any()
    ratios = []
    for target in range(4, 99, 3):
        for _ in range(20):
            count = int(generator(target).sum())
            assert count <= target  # never more than asked
            ratios.append(count / target)
    assert min(ratios) >= 0.5 and np.mean(ratios) > 0.95  # block masking mostly reaches the target


def test_masking_generator_blocks_respect_max_and_aspect():
    generator = MaskingGenerator(input_size=(GRID, GRID), max_num_patches=12)
    random.seed(1)
    for _ in range(50):
        mask = np.zeros((GRID, GRID), dtype=bool)
        added = generator._add_block(mask, 12)
        assert added == mask.sum() <= 12
        if added:
            rows, cols = np.nonzero(mask)
            height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
            assert height * width == added  # one filled rectangle
            assert 0.3 / 2 <= height / width <= 2 / 0.3  # log-uniform aspect in [0.3, 3.33], rounded to pixels


def test_masking_generator_is_deterministic_for_python_seed():
    generator = _generator()
    random.seed(7)
    first = [generator(40) for _ in range(5)]
    random.seed(7)
    second = [generator(40) for _ in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("batch, probability", [(8, 0.5), (5, 0.5), (6, 1.0), (7, 0.3)])
def test_collate_masks_bins_weights_upperbound(batch, probability):
    ratio = (0.1, 0.5)
    random.seed(batch)
    for _ in range(10):
        out = collate_data_and_cast(_samples(batch, 2), ratio, probability, torch.half, N_TOKENS, _generator())
        masks = out["collated_masks"]
        assert masks.shape == (2 * batch, N_TOKENS) and masks.dtype == torch.bool
        counts = masks.sum(-1)
        n_masked = int(2 * batch * probability)
        assert int((counts > 0).sum()) == n_masked
        edges = torch.linspace(*ratio, n_masked + 1)
        bin_hi = [int(N_TOKENS * edges[i + 1]) for i in range(n_masked)]
        assert out["upperbound"] == sum(bin_hi)
        sorted_counts = sorted(counts[counts > 0].tolist())
        for i, count in enumerate(sorted_counts):  # the i-th smallest count lies at or below the i-th bin's top
            assert count <= bin_hi[i]
            assert count >= 0.5 * int(N_TOKENS * edges[i])
        assert torch.equal(out["mask_indices_list"], masks.flatten().nonzero().flatten())
        assert out["mask_indices_list"].dtype == torch.int64
        assert out["n_masked_patches"].dtype == torch.long and out["n_masked_patches"].tolist() == [int(counts.sum())]
        image_of_token = out["mask_indices_list"] // N_TOKENS
        expected_weight = 1.0 / counts[image_of_token].float()
        assert out["masks_weight"].dtype == torch.float32
        torch.testing.assert_close(out["masks_weight"], expected_weight)
        torch.testing.assert_close(out["masks_weight"].sum(), torch.tensor(float(n_masked)))


def test_collate_masks_are_shuffled_over_positions():
    random.seed(3)
    hits = np.zeros(16)
    for _ in range(200):
        out = collate_data_and_cast(_samples(8, 0), (0.1, 0.5), 0.5, torch.float32, N_TOKENS, _generator())
        hits += out["collated_masks"].any(-1).numpy()
    assert hits.min() > 60 and hits.max() < 140  # each of 16 slots masked about half of the time


def test_collate_crop_major_stacking_and_dtype():
    batch, n_local = 4, 3
    out = collate_data_and_cast(_samples(batch, n_local), (0.1, 0.5), 0.5, torch.half, N_TOKENS, _generator())
    global_crops, local_crops = out["collated_global_crops"], out["collated_local_crops"]
    assert global_crops.shape == (2 * batch, 3, 8, 8) and global_crops.dtype == torch.half
    assert local_crops.shape == (n_local * batch, 3, 4, 4) and local_crops.dtype == torch.half
    for c in range(2):
        for b in range(batch):
            assert global_crops[c * batch + b].eq(100 * b + c).all()
    for c in range(n_local):
        for b in range(batch):
            assert local_crops[c * batch + b].eq(100 * b + 10 + c).all()


def test_collate_without_local_crops():
    out = collate_data_and_cast(_samples(3, 0), (0.1, 0.5), 0.5, torch.float32, N_TOKENS, _generator(), 96)
    assert out["collated_local_crops"].shape == (0, 3, 96, 96)
    out = collate_data_and_cast(_samples(3, 0), (0.1, 0.5), 0.5, torch.float32, N_TOKENS, _generator())
    assert out["collated_local_crops"].shape == (0, 3, 0, 0)


def test_collate_without_masking():
    out = collate_data_and_cast(_samples(4, 1), (0.1, 0.5), 0.0, torch.float32, N_TOKENS, None)
    assert not out["collated_masks"].any() and out["upperbound"] == 0 and out["n_masked_patches"].item() == 0
    assert out["masks_weight"].numel() == 0
    with pytest.raises(ValueError, match="mask_generator"):
        collate_data_and_cast(_samples(4, 1), (0.1, 0.5), 0.5, torch.float32, N_TOKENS, None)
