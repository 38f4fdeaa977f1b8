"""Data loaders: batches independent of the number of workers, exact resume with ``sampler_advance``,
RNG isolation, disjoint ranks in a real process group."""

from __future__ import annotations

import itertools
import random
from functools import partial

import numpy as np
import pytest
import torch

from dinov2.data import (
    DataAugmentationDINO,
    MaskingGenerator,
    SamplerType,
    collate_data_and_cast,
    make_data_loader,
    make_dataset,
)
from dinov2.data.samplers import ShardedInfiniteSampler
from tests.dist_helpers import run_distributed


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("loader") / "synthetic"
    augmentation = DataAugmentationDINO((0.32, 1.0), (0.05, 0.32), 2, global_crops_size=28, local_crops_size=14)
    return make_dataset(
        dataset_str=f"Synthetic:root={root}:num_classes=3:images_per_class=5:val_images_per_class=0:size=64x48",
        transform=augmentation,
        target_transform=lambda _: (),
    )


def _collate():
    generator = MaskingGenerator(input_size=(2, 2), max_num_patches=2)
    return partial(
        collate_data_and_cast, mask_ratio_tuple=(0.1, 0.5), mask_probability=0.5, dtype=torch.half,
        n_tokens=4, mask_generator=generator,
    )  # fmt: skip


def _batches(dataset, count, **kwargs):
    options = {"batch_size": 4, "num_workers": 0, "seed": 7, "collate_fn": _collate(), **kwargs}
    return list(itertools.islice(iter(make_data_loader(dataset=dataset, **options)), count))


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]) if torch.is_tensor(a[key]) else a[key] == b[key], key


def test_batches_do_not_depend_on_num_workers(dataset):
    reference = _batches(dataset, 5, sampler_type=SamplerType.SHARDED_INFINITE)
    _assert_same(reference, _batches(dataset, 5, sampler_type=SamplerType.SHARDED_INFINITE, num_workers=2))
    assert reference[0]["collated_global_crops"].shape == (8, 3, 28, 28)
    assert not torch.equal(reference[0]["collated_global_crops"], reference[1]["collated_global_crops"])


@pytest.mark.parametrize("sampler_type", [SamplerType.SHARDED_INFINITE, SamplerType.INFINITE])
def test_sampler_advance_resumes_augmentations_and_masks_exactly(dataset, sampler_type):
    uninterrupted = _batches(dataset, 7, sampler_type=sampler_type)  # 28 samples: crosses a 15-sample pass
    for done in (1, 4):
        resumed = _batches(dataset, 7 - done, sampler_type=sampler_type, sampler_advance=done * 4, num_workers=2)
        _assert_same(uninterrupted[done:], resumed)


def test_epoch_sampler_resume_inside_an_epoch(dataset):
    loader = make_data_loader(
        dataset=dataset, batch_size=3, num_workers=0, seed=1, sampler_type=SamplerType.EPOCH, collate_fn=_collate()
    )
    loader.sampler.set_epoch(2)
    full = list(loader)
    assert len(full) == 5
    resumed_loader = make_data_loader(
        dataset=dataset, batch_size=3, num_workers=0, seed=1, sampler_type=SamplerType.EPOCH,
        sampler_advance=6, collate_fn=_collate(),
    )  # fmt: skip
    resumed_loader.sampler.set_epoch(2)
    _assert_same(full[2:], list(resumed_loader))


def test_seeds_change_augmentations(dataset):
    a = _batches(dataset, 1, sampler_type=SamplerType.SHARDED_INFINITE, shuffle=False)
    b = _batches(dataset, 1, sampler_type=SamplerType.SHARDED_INFINITE, shuffle=False, seed=8)
    assert not torch.equal(a[0]["collated_global_crops"], b[0]["collated_global_crops"])


def test_main_process_rng_is_left_alone(dataset):
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    expected = torch.rand(3), random.random(), np.random.rand()
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    _batches(dataset, 2, sampler_type=SamplerType.INFINITE)
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1] and np.random.rand() == expected[2]


def test_released_per_worker_streams_still_available(dataset):
    batches = _batches(dataset, 2, sampler_type=SamplerType.INFINITE, seed_per_sample=False)
    assert batches[1]["collated_local_crops"].shape == (8, 3, 14, 14)


def test_loader_argument_errors(dataset):
    with pytest.raises(ValueError, match="only valid with SamplerType.EPOCH"):
        make_data_loader(dataset=dataset, batch_size=2, num_workers=0, sampler_size=5)
    with pytest.raises(ValueError, match="needs a sampler_type"):
        make_data_loader(dataset=dataset, batch_size=2, num_workers=0, sampler_type=None, sampler_advance=3)
    loader = make_data_loader(dataset=dataset, batch_size=2, num_workers=0, persistent_workers=True)
    assert loader.pin_memory == torch.cuda.is_available()


class _IndexAndNoise(torch.utils.data.Dataset):
    """Sample ``i`` -> (i, a draw of the global torch RNG): shows which index and which seed a sample got."""

    def __len__(self):
        return 40

    def __getitem__(self, index):
        return index, torch.rand(1).item()


def _rank_batches(rank, world_size):
    loader = make_data_loader(
        dataset=_IndexAndNoise(), batch_size=5, num_workers=0, seed=3, sampler_type=SamplerType.SHARDED_INFINITE
    )
    indices, noise = next(iter(loader))
    sampler = ShardedInfiniteSampler(sample_count=40, shuffle=True, seed=3)  # default start/step: rank/world
    return indices.tolist(), noise.tolist(), list(itertools.islice(sampler, 20))


def test_ranks_of_a_process_group_get_disjoint_samples_and_seeds():
    (indices0, noise0, pass0), (indices1, noise1, pass1) = run_distributed(_rank_batches, 2)
    assert not set(indices0) & set(indices1)
    assert not set(noise0) & set(noise1)  # same positions on two ranks are seeded differently
    assert not set(pass0) & set(pass1) and len(set(pass0) | set(pass1)) == 40  # a pass covers the dataset
    rank0 = ShardedInfiniteSampler(sample_count=40, shuffle=True, seed=3, start=0, step=2)
    assert pass0 == list(itertools.islice(rank0, 20))
