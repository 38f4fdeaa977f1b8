"""Batched crop + resize of the device data path: torch's antialiased weights, and bit-exact equality with the CPU
path's uint8 kernel (whatever the matmul precision)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

from dinov2.data import fast_augment as ops
from dinov2.data.batched_resize import _product_dtype, fixed_point_weights, resize_weights, resized_crops

GROUPS = [(2, 40), (3, 16)]  # two "global" crops of 40 px, three "local" crops of 16 px


def _image(generator: torch.Generator, height: int, width: int) -> torch.Tensor:
    """A uint8 [3, H, W] image with gradients, edges and noise (bicubic overshoot gets clipped somewhere)."""
    y, x = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    smooth = torch.stack([x * 3, y * 2, (x + y) * 5 // 3])
    noise = torch.randint(0, 90, (3, height, width), generator=generator)
    return ((smooth + noise) % 256).to(torch.uint8)


def _random_boxes(generator: torch.Generator, sizes: list[tuple[int, int]], n_crops: int) -> torch.Tensor:
    boxes = []
    for height, width in sizes:
        crops = []
        for _ in range(n_crops):
            h = int(torch.randint(1, height + 1, (1,), generator=generator))
            w = int(torch.randint(1, width + 1, (1,), generator=generator))
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            crops.append((top, left, h, w))
        boxes.append(crops)
    return torch.tensor(boxes)


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(0)
    sizes = [tuple(torch.randint(20, 150, (2,), generator=generator).tolist()) for _ in range(6)]
    images = [_image(generator, h, w) for h, w in sizes]
    return images, _random_boxes(generator, sizes, sum(n for n, _ in GROUPS))


def test_weights_are_torchs_antialiased_bicubic():
    """Without rounding, the two products equal F.interpolate(bicubic, antialias) of the box (float64)."""
    generator = torch.Generator().manual_seed(1)
    image = torch.rand((3, 37, 53), generator=generator, dtype=torch.float64) * 255
    for top, left, h, w, size in [(3, 5, 30, 41, 12), (0, 0, 37, 53, 64), (10, 2, 7, 9, 20), (1, 1, 33, 50, 33)]:
        wy = resize_weights(torch.tensor([top]), torch.tensor([h]), size, 37)[0]  # [S, 37]
        wx = resize_weights(torch.tensor([left]), torch.tensor([w]), size, 53)[0]  # [S, 53]
        ours = wy @ image @ wx.T
        box = image[None, :, top : top + h, left : left + w]
        reference = nnf.interpolate(box, size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0]
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-9)
        assert torch.all(wy.sum(-1).sub(1).abs() < 1e-12) and torch.all(wx[:, :left] == 0)


def _cpu_path_crops(images, boxes, groups):
    """``fast_augment.resized_crop`` (torch's uint8 kernel, the CPU path) crop by crop, as resized_crops lays out."""
    outputs, first = [], 0
    for n, size in groups:
        crops = [[ops.resized_crop(image, *boxes[b, first + c].tolist(), size) for b, image in enumerate(images)]
                 for c in range(n)]  # fmt: skip
        outputs.append(torch.stack([torch.stack(row) for row in crops]).float())
        first += n
    return outputs


def test_equals_the_cpu_paths_uint8_resize_bit_for_bit(batch):
    images, boxes = batch
    for got, expected in zip(resized_crops(images, boxes, GROUPS), _cpu_path_crops(images, boxes, GROUPS)):
        assert torch.equal(got, expected)


def test_exact_under_reduced_precision_matmuls(batch):
    """The byte-split products only hold values that bf16 / TF32 represent exactly: same result in any mode."""
    images, boxes = batch
    weights, _ = fixed_point_weights(resize_weights(boxes[:, 0, 1], boxes[:, 0, 3], 40, 150))
    high = torch.floor(weights / 256)
    for part in (high, weights - 256 * high):
        assert torch.equal(part.float(), part.float().bfloat16().float())
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        reduced = resized_crops(images, boxes, GROUPS)
    finally:
        torch.set_float32_matmul_precision(previous)
    for got, expected in zip(reduced, _cpu_path_crops(images, boxes, GROUPS)):
        assert torch.equal(got, expected)


def test_extreme_boxes_stay_exact():
    """1-pixel boxes blown up, and boxes 150x larger than their output (float64 products), still match."""
    generator = torch.Generator().manual_seed(3)
    image = _image(generator, 40, 320)
    boxes = torch.tensor([[[5, 7, 1, 1], [0, 0, 2, 3], [3, 10, 30, 300]]])
    groups = [(2, 24), (1, 2)]
    assert _product_dtype(boxes, groups) == torch.float64 and _product_dtype(boxes[:, :2], groups[:1]) == torch.float32
    for got, expected in zip(resized_crops([image], boxes, groups), _cpu_path_crops([image], boxes, groups)):
        assert torch.equal(got, expected)
    _, precision = fixed_point_weights(resize_weights(torch.tensor([0, 0, 0]), torch.tensor([1, 2, 300]), 24, 320))
    assert precision.min() >= 13  # what the byte split's integer bound relies on


def test_identity_box_is_exact(batch):
    """A box of the output size is copied untouched (both passes are exact identities)."""
    images, _ = batch
    image = images[0]
    boxes = torch.tensor([[[2, 3, 16, 16]]])
    (out,) = resized_crops([image], boxes, [(1, 16)])
    assert torch.equal(out[0, 0], image[:, 2:18, 3:19].float())


def test_chunking_does_not_change_the_result(batch):
    images, boxes = batch
    whole = resized_crops(images, boxes, GROUPS)
    chunked = resized_crops(images, boxes, GROUPS, max_chunk_elements=1)  # one image per chunk
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)


def test_bad_boxes_are_named(batch):
    images, boxes = batch
    with pytest.raises(ValueError, match="boxes must be"):
        resized_crops(images, boxes[:, :3], GROUPS)
