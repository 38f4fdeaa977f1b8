"""High-resolution adaptation's data side: resolution entries, the per-iteration sampler, the combined loader and the
Gram teacher crops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from dinov2.data import DataAugmentationDINO
from dinov2.data import fast_augment as ops
from dinov2.data.crop_sizes import CropSizes, CropSizeSampler, MultiResolutionLoader, crop_size_entries
from dinov2.data.dinov3_augment import DataAugmentationDINOv3

HIGH_RES_RATIOS = [0.3, 0.3, 0.3, 0.05, 0.05]  # dinov3_vit7b16_high_res_adapt.yaml


def test_entries_of_the_high_res_config():
    crops = OmegaConf.create(
        {
            "global_crops_size": [512, 768, 768, 768, 768],
            "local_crops_size": [112, 112, 168, 224, 336],
            "gram_teacher_crops_size": [768, 1152, 1152, 1152, 1152],
            "global_local_crop_pairs_ratios": HIGH_RES_RATIOS,
        }
    )
    entries, ratios = crop_size_entries(crops)
    assert entries[0] == CropSizes(512, 112, 768) and entries[4] == CropSizes(768, 336, 1152)
    assert ratios == pytest.approx(HIGH_RES_RATIOS)
    single, one = crop_size_entries(OmegaConf.create({"global_crops_size": 224, "local_crops_size": 96}))
    assert single == [CropSizes(224, 96, None)] and one == [1.0]
    crops.local_crops_size = [112, 168]
    with pytest.raises(ValueError, match="crops.local_crops_size has 2 entries"):
        crop_size_entries(crops)


def test_sampler_ratios_over_many_iterations():
    n = 20_000
    counts = np.bincount(CropSizeSampler(HIGH_RES_RATIOS, seed=0).indices(0, n), minlength=5)
    p = np.asarray(HIGH_RES_RATIOS)
    assert np.all(np.abs(counts - n * p) <= 4 * np.sqrt(n * p * (1 - p))), counts


def test_sampler_is_a_function_of_the_iteration():
    a, b = CropSizeSampler(HIGH_RES_RATIOS, seed=3), CropSizeSampler(HIGH_RES_RATIOS, seed=3)
    tail = a.indices(5000, 5100)
    assert np.array_equal(b.indices(0, 5100)[5000:], tail)  # any start, any order of queries
    assert not np.array_equal(CropSizeSampler(HIGH_RES_RATIOS, seed=4).indices(5000, 5100), tail)
    stop = 4096 + 777  # across a block boundary
    assert a.counts(stop) == np.bincount(a.indices(0, stop), minlength=5).tolist()
    assert CropSizeSampler([1.0]).counts(10) == [10] and CropSizeSampler([1.0]).index(7) == 0


def _fake_loaders(n: int) -> list:
    """Loader ``k`` yields ``(k, 0), (k, 1), ...`` from where it was advanced to."""

    class Loader:
        def __init__(self, k: int, advance: int = 0):
            self.k, self.advance = k, advance

        def __iter__(self):
            return ((self.k, i) for i in itertools.count(self.advance))

    return [Loader(k) for k in range(n)], Loader


def test_combined_loader_resumes_exactly():
    sampler = CropSizeSampler(HIGH_RES_RATIOS, seed=0)
    loaders, Loader = _fake_loaders(5)
    straight = list(itertools.islice(MultiResolutionLoader(loaders, sampler), 300))
    assert [k for k, _ in straight] == sampler.indices(0, 300).tolist()
    start = 211
    advanced = [Loader(k, served) for k, served in enumerate(sampler.counts(start))]
    resumed = list(itertools.islice(MultiResolutionLoader(advanced, sampler, start_iter=start), 300 - start))
    assert resumed == straight[start:]


def _image(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


CROP_ARGS = ((0.32, 1.0), (0.05, 0.32), 2)  # global scale, local scale, local crops
SIZES = {"global_crops_size": 16, "local_crops_size": 8}


def _gram_augmentation(gram_size: int, no_distortions: bool) -> DataAugmentationDINOv3:
    return DataAugmentationDINOv3(
        *CROP_ARGS, **SIZES, gram_teacher_crops_size=gram_size, gram_teacher_no_distortions=no_distortions
    )


@pytest.mark.parametrize("no_distortions", [True, False])
def test_gram_crops_at_the_global_size_leave_the_global_crops_unchanged(no_distortions):
    plain, gram = DataAugmentationDINO(*CROP_ARGS, **SIZES), _gram_augmentation(16, no_distortions)
    torch.manual_seed(1)
    expected = plain(_image())
    torch.manual_seed(1)
    out = gram(_image())
    for key in ("global_crops", "local_crops"):
        for a, b in zip(out[key], expected[key]):
            assert torch.equal(a, b), key
    if not no_distortions:  # the Gram crop is the distorted global crop
        assert all(torch.equal(a, b) for a, b in zip(out["gram_teacher_crops"], out["global_crops"]))


def test_undistorted_gram_crops_at_a_larger_size():
    aug = _gram_augmentation(24, no_distortions=True)
    torch.manual_seed(2)
    out = aug(_image())
    assert [tuple(c.shape) for c in out["gram_teacher_crops"]] == [(3, 24, 24)] * 2
    assert [tuple(c.shape) for c in out["global_crops"]] == [(3, 16, 16)] * 2
    torch.manual_seed(2)
    params = aug.draw_crop_params("global1", 40, 48)  # the first draws of the call above
    crop = ops.resized_crop(_image(), params.top, params.left, params.height, params.width, 24)
    crop = ops.hflip(crop) if params.flip else crop
    torch.testing.assert_close(out["gram_teacher_crops"][0], ops.normalize_255(crop.float(), *aug._scale_shift))
