"""DINOv3's crop options (``dinov2/data/dinov3_augment.py``): shared colour jitter and local crops cut from the
global crops, alone and with Gram teacher crops, and how the trainer picks the augmentation."""

from __future__ import annotations

import pytest
import torch

from dinov2.data import DataAugmentationDINO
from dinov2.data import fast_augment as ops
from dinov2.data.crop_sizes import CropSizes
from dinov2.data.dinov3_augment import DataAugmentationDINOv3
from dinov2.train.train import _augmentation
from tests.train.gram_tiny import v3_cfg

SCALES = ((0.32, 1.0), (0.05, 0.32))
SIZES = {"global_crops_size": 32, "local_crops_size": 16}
# no photometric change at all: every crop is its geometry, normalised
PLAIN = {
    "color_jitter_probability": 0.0,
    "grayscale_probability": 0.0,
    "global_crop2_blur_probability": 0.0,
    "local_crops_blur_probability": 0.0,
    "global_crop2_solarize_probability": 0.0,
}


def _image(seed: int = 0, size: tuple[int, int] = (40, 48)) -> torch.Tensor:
    return torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _flat_image(rgb=(200, 90, 40)) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1).expand(3, 40, 48).contiguous()


def _crops(aug, image, seed: int) -> dict:
    torch.manual_seed(seed)
    return aug(image)


def test_without_options_the_crops_are_dinov2s_draw_for_draw():
    plain, v3 = DataAugmentationDINO(*SCALES, 4, **SIZES), DataAugmentationDINOv3(*SCALES, 4, **SIZES)
    expected, out = _crops(plain, _image(), 3), _crops(v3, _image(), 3)
    for key in ("global_crops", "local_crops"):
        assert all(torch.equal(a, b) for a, b in zip(out[key], expected[key], strict=True)), key
    assert out["offsets"] == () and "gram_teacher_crops" not in out


def _colours(out: dict) -> list[torch.Tensor]:
    """The one colour of each crop of a flat image (every crop of a flat image is flat)."""
    crops = out["global_crops"] + out["local_crops"]
    for crop in crops:
        assert torch.allclose(crop, crop[:, :1, :1].expand_as(crop), atol=1e-5)
    return [crop[:, 0, 0] for crop in crops]


def test_a_shared_colour_jitter_gives_every_crop_of_an_image_the_same_colours():
    options = {**PLAIN, "color_jitter_probability": 1.0, "global_crop2_solarize_probability": 0.0}
    shared = DataAugmentationDINOv3(*SCALES, 4, **SIZES, **options, share_color_jitter=True)
    own = DataAugmentationDINOv3(*SCALES, 4, **SIZES, **options)
    untouched = DataAugmentationDINO(*SCALES, 4, **SIZES, **PLAIN)
    original = _colours(_crops(untouched, _flat_image(), 0))[0]
    for seed in range(4):
        colours = _colours(_crops(shared, _flat_image(), seed))
        assert all(torch.allclose(c, colours[0], atol=1e-5) for c in colours)
        assert not torch.allclose(colours[0], original, atol=1e-3)  # jittered
        per_crop = _colours(_crops(own, _flat_image(), seed))
        assert not all(torch.allclose(c, per_crop[0], atol=1e-3) for c in per_crop)


def test_the_shared_jitter_is_one_draw_on_the_whole_image_before_the_crops():
    aug = DataAugmentationDINOv3(*SCALES, 2, **SIZES, share_color_jitter=True)
    image = _image(5)
    out = _crops(aug, image, 7)
    torch.manual_seed(7)
    jittered = aug._shared_colour(image)  # the first draws of the call
    params = aug.draw_crop_params("global1", 40, 48, colour=False)
    assert params.jitter_order is None and not params.grayscale
    torch.testing.assert_close(out["global_crops"][0], aug.apply_crop_params(jittered, params, 32))


@pytest.mark.parametrize("seed", range(3))
def test_local_crops_are_patch_aligned_windows_of_the_two_global_crops(seed):
    aug = DataAugmentationDINOv3(*SCALES, 4, **SIZES, **PLAIN, local_crops_subset_of_global_crops=True, patch_size=4)
    out = _crops(aug, _image(seed), seed)
    assert len(out["local_crops"]) == 4 and len(out["offsets"]) == 4
    sources = [out["global_crops"][0]] * 2 + [out["global_crops"][1]] * 2  # half from each, in order
    for crop, (row, col), source in zip(out["local_crops"], out["offsets"], sources, strict=True):
        assert row % 4 == 0 and col % 4 == 0 and 0 <= row <= 12 and 0 <= col <= 12
        assert crop.shape == (3, 16, 16) and crop.is_contiguous()
        assert torch.equal(crop, source[:, row : row + 16, col : col + 16])


def test_window_offsets_take_the_releases_range():
    """numpy.random.randint(0, (32 - 16) // 4, 2) * 4: 0, 4, 8 or 12, never 16 (the last position)."""
    aug = DataAugmentationDINOv3(*SCALES, 2, **SIZES, **PLAIN, local_crops_subset_of_global_crops=True, patch_size=4)
    torch.manual_seed(0)
    seen = {offset for _ in range(60) for pair in aug(_image())["offsets"] for offset in pair}
    assert seen == {0, 4, 8, 12}


def test_cut_local_crops_keep_their_own_blur_on_the_whole_global_crop():
    options = {**PLAIN, "local_crops_blur_probability": 1.0}
    aug = DataAugmentationDINOv3(*SCALES, 2, **SIZES, **options, local_crops_subset_of_global_crops=True, patch_size=4)
    out = _crops(aug, _image(1), 1)
    torch.manual_seed(1)
    first = aug.draw_crop_params("global1", 40, 48)
    base = ops.resized_crop(_image(1), first.top, first.left, first.height, first.width, 32)
    base = ops.hflip(base) if first.flip else base
    aug.draw_crop_params("global2", 40, 48)
    blur = aug.draw_crop_params("local", 32, 32, geometry=False)
    assert blur.blur_sigma is not None and (blur.top, blur.left, blur.height, blur.flip) == (0, 0, 32, False)
    whole = aug.apply_crop_params(base, blur, 32)  # blurred over the whole base, then cut
    row, col = out["offsets"][0]
    torch.testing.assert_close(out["local_crops"][0], whole[:, row : row + 16, col : col + 16])
    assert not torch.allclose(out["local_crops"][0], out["global_crops"][0][:, row : row + 16, col : col + 16])


def test_with_larger_gram_crops_the_windows_come_from_the_large_base_as_released():
    aug = DataAugmentationDINOv3(
        *SCALES,
        2,
        **SIZES,
        **PLAIN,
        gram_teacher_crops_size=48,
        gram_teacher_no_distortions=True,
        local_crops_subset_of_global_crops=True,
        patch_size=4,
    )
    out = _crops(aug, _image(2), 2)
    assert [tuple(c.shape) for c in out["gram_teacher_crops"]] == [(3, 48, 48)] * 2
    assert [tuple(c.shape) for c in out["global_crops"]] == [(3, 32, 32)] * 2
    for crop, (row, col), gram in zip(out["local_crops"], out["offsets"], out["gram_teacher_crops"], strict=True):
        torch.testing.assert_close(crop, gram[:, row : row + 16, col : col + 16])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"local_crops_number": 3}, "local_crops_number must be even, got 3"),
        ({"local_crops_size": 30}, "needs crops.local_crops_size <= crops.global_crops_size - student.patch_size"),
        ({"fast": False}, "need the tensor path"),
    ],
)
def test_impossible_cut_crops_are_refused(kwargs, message):
    settings = {"local_crops_number": 2, **SIZES, "patch_size": 4, "local_crops_subset_of_global_crops": True}
    settings.update(kwargs)
    with pytest.raises(ValueError, match=message):
        DataAugmentationDINOv3(*SCALES, **settings)


def test_the_trainer_takes_dinov3s_crop_keys(tmp_path):
    sizes = CropSizes(16, 8, None)
    assert type(_augmentation(v3_cfg(tmp_path), sizes)) is DataAugmentationDINO
    keys = ["crops.share_color_jitter=true", "crops.localcrops_subset_of_globalcrops=true"]
    aug = _augmentation(v3_cfg(tmp_path, *keys), sizes)
    assert isinstance(aug, DataAugmentationDINOv3)
    assert aug.share_color_jitter and aug.local_crops_subset_of_global_crops and aug.patch_size == 4
    message = "crops.share_color_jitter: DINOv3's crops are made by the data workers; set train.data_device=cpu"
    with pytest.raises(ValueError, match=message):
        _augmentation(v3_cfg(tmp_path, "crops.share_color_jitter=true", "train.data_device=cuda"), sizes)
