"""Joint transforms keep image and target aligned: images whose pixels encode their own coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinov2.data import dense_transforms as T

H, W = 90, 120


def _coordinate_pair():
    """Image with R = x, G = y (uint8) and a target holding ``y * 256 + x``."""
    y, x = np.mgrid[0:H, 0:W]
    image = np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8)
    return image, (y * 256 + x).astype(np.int64)


def _decode(image: np.ndarray) -> np.ndarray:
    return image[..., 1].astype(np.int64) * 256 + image[..., 0].astype(np.int64)


def _max_offset(image, target, skip=None):
    """Largest |coordinate from image - coordinate from target| in pixels (x and y), over non-skipped pixels."""
    keep = np.ones(target.shape, bool) if skip is None else target != skip
    img_y, img_x = np.divmod(_decode(np.round(image).astype(np.int64))[keep], 256)
    tgt_y, tgt_x = np.divmod(target[keep], 256)
    return max(np.abs(img_y - tgt_y).max(), np.abs(img_x - tgt_x).max())


@pytest.mark.parametrize("seed", range(4))
def test_crop_flip_nyu_crop_keep_exact_alignment(seed):
    np.random.seed(seed)
    image, target = _coordinate_pair()
    for transform in (T.RandomCrop((50, 64)), T.RandomFlip(0.5), T.RandomCrop((200, 200))):
        image, target = transform(image, target)
        assert _max_offset(image, target) == 0
    assert image.shape[:2] == target.shape == (50, 64)
    big = np.zeros((480, 640, 3), np.uint8), np.arange(480 * 640).reshape(480, 640)
    cropped = T.NYUCrop()(*big)
    assert cropped[0].shape[:2] == cropped[1].shape == (427, 565) and cropped[1][0, 0] == 45 * 640 + 43


@pytest.mark.parametrize("seed", range(3))
def test_resize_and_rotate_keep_alignment_within_a_pixel(seed):
    np.random.seed(seed)
    image, target = _coordinate_pair()
    resized, resized_target = T.Resize(60, ratio_range=(0.5, 2.0))(image, target)
    assert resized.shape[:2] == resized_target.shape and min(resized.shape[:2]) in range(30, 121)
    # the resized image holds resampled coordinates; map the target's source coordinates the same way
    scale_y, scale_x = H / resized.shape[0], W / resized.shape[1]
    yy, xx = np.mgrid[0 : resized.shape[0], 0 : resized.shape[1]]
    expected_x = np.clip((xx + 0.5) * scale_x - 0.5, 0, W - 1)
    assert np.abs(resized[..., 0] - expected_x).max() <= 1.0  # bilinear, rounded to uint8
    target_y, target_x = np.divmod(resized_target, 256)
    assert np.abs(target_x - np.floor(xx * scale_x)).max() == 0 and np.abs(target_y - np.floor(yy * scale_y)).max() == 0
    assert np.abs(resized[..., 0].astype(int) - target_x).max() <= np.ceil(scale_x)

    rotated, rotated_target = T.RandomRotate(prob=1.0, degree=10, pad_val=0, target_pad_val=-1)(image, target)
    assert rotated.shape == image.shape and rotated_target.dtype == target.dtype
    inside = rotated_target != -1
    assert inside.mean() > 0.8 and not inside.all()  # rotated, with filled corners
    interior = np.zeros_like(inside)  # away from the filled corners, where bilinear samples mix in the fill
    interior[2:-2, 2:-2] = True
    for dy in (-2, -1, 0, 1, 2):
        for dx in (-2, -1, 0, 1, 2):
            interior &= np.roll(inside, (dy, dx), axis=(0, 1))
    assert interior.mean() > 0.7
    assert _max_offset(rotated[interior].reshape(-1, 1, 3), rotated_target[interior][:, None]) <= 1


def test_photometric_transforms_change_only_the_image():
    image, target = _coordinate_pair()
    image = (image // 2 + 60).astype(np.uint8)
    changed = 0
    for seed in range(6):
        np.random.seed(seed)
        for transform in (T.PhotoMetricDistortion(), T.ColorAug(prob=1.0)):
            out, out_target = transform(image.copy(), target.copy())
            assert out.shape == image.shape and np.array_equal(out_target, target)
            changed += not np.array_equal(out, image)
    assert changed >= 10
    np.random.seed(0)
    out, _ = T.ColorAug(prob=1.0, gamma_range=(1.0, 1.0), brightness_range=(2.0, 2.0), color_range=(1, 1))(
        image, target
    )
    assert out.dtype == np.float32 and np.allclose(out, np.minimum(image.astype(np.float32) * 2, 255))


def test_cat_max_ratio_prefers_mixed_crops():
    target = np.zeros((100, 100), np.int64)
    target[:, 70:] = 1  # a crop holds >= 25 % of class 1 for 1/3 of the offsets
    target[:5] = 255  # ignored pixels do not count
    image = np.zeros((100, 100, 3), np.uint8)

    def mixed_fraction(ratio):
        hits = 0
        for seed in range(40):
            np.random.seed(seed)
            _, crop = T.RandomCrop((40, 40), cat_max_ratio=ratio)(image, target)
            labels, counts = np.unique(crop[crop != 255], return_counts=True)
            hits += len(counts) > 1 and counts.max() / counts.sum() < 0.75
        return hits / 40

    assert mixed_fraction(0.75) >= 0.9 > 0.5 > mixed_fraction(1.0)


def test_pipelines_output_aligned_padded_tensors():
    image, target = _coordinate_pair()
    np.random.seed(0)
    pipeline = T.make_segmentation_train_transform(crop_size=(128, 160), short_side=60, photometric=False)
    tensor, label = pipeline(image, target % 7)
    assert tensor.shape == (3, 128, 160) and label.shape == (128, 160) and label.dtype == torch.int64
    padded = label == 255
    assert padded.any() and torch.all(tensor[:, padded] == 0)  # pad: image 0 (normalised), label 255
    np.random.seed(0)
    again = pipeline(image, target % 7)
    assert torch.equal(again[0], tensor) and torch.equal(again[1], label)  # seeded: reproducible

    depth = (target % 1000).astype(np.float32) / 100 + 0.5
    np.random.seed(1)
    tensor, metres = T.make_depth_train_transform(crop_size=(64, 64), nyu_crop=False, color_prob=0.0)(image, depth)
    assert tensor.shape == (3, 64, 64) and metres.dtype == torch.float32
    std, mean = torch.tensor(T.IMAGENET_STD)[:, None, None], torch.tensor(T.IMAGENET_MEAN)[:, None, None]
    pixels = ((tensor * std + mean) * 255).round().permute(1, 2, 0).numpy()
    code = _decode(pixels.astype(np.int64))
    valid = metres.numpy() > 0
    assert np.abs(((code % 256) + (code // 256) * 256) % 1000 / 100 + 0.5 - metres.numpy())[valid].max() < 0.011
