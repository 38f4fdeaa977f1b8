"""The one JPEG decoder of the device data path: torchvision's batched decode_jpeg while torchvision has it (its
deprecation notice not shown), PIL on the CPU otherwise; both give PIL's pixels on CPU."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from dinov2.data import gpu_augment
from dinov2.data.datasets import CorruptImageError


def _jpeg(seed: int, size=(23, 17), mode="RGB") -> torch.Tensor:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(buffer, "JPEG", quality=90)
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


def _pil(data: torch.Tensor) -> torch.Tensor:
    with Image.open(io.BytesIO(data.numpy().tobytes())) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


FILES = [_jpeg(0), _jpeg(1, (8, 31)), _jpeg(2, mode="L")]


@pytest.fixture(params=["torchvision", "PIL fallback"])
def decoder(request, monkeypatch):
    if request.param == "PIL fallback":  # as with a torchvision that no longer ships its image decoders
        monkeypatch.setattr(gpu_augment, "_torchvision_decode_jpeg", lambda: None)
    elif gpu_augment._torchvision_decode_jpeg() is None:
        pytest.skip("this torchvision has no decode_jpeg")
    return request.param


def test_both_decoders_give_pils_pixels_without_a_deprecation_notice(decoder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning, the torchvision deprecation included, fails the test
        decoded = gpu_augment.decode_jpegs(FILES, torch.device("cpu"))
    for data, image in zip(FILES, decoded):
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        torch.testing.assert_close(image, _pil(data), rtol=0, atol=0)


def test_a_corrupt_jpeg_is_named_by_either_decoder(decoder):
    broken = FILES[0][: len(FILES[0]) // 3]
    encoded = [True, True]
    with pytest.raises(CorruptImageError, match="cannot decode JPEG bad.jpg"):
        gpu_augment.decode_images([FILES[1], broken], encoded, ["good.jpg", "bad.jpg"], torch.device("cpu"))
