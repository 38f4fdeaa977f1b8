"""Decoders from stored bytes to samples (images as RGB PIL images, targets as they are)."""

from __future__ import annotations

from io import BytesIO
from typing import Any

from PIL import Image

__all__ = ["Decoder", "ImageDataDecoder", "TargetDecoder"]


class Decoder:
    def decode(self) -> Any:
        raise NotImplementedError


class ImageDataDecoder(Decoder):
    """Encoded image bytes (JPEG, PNG, ...) -> fully decoded RGB ``PIL.Image``.

    Raises on truncated or unreadable data (``OSError``/``PIL.UnidentifiedImageError``/...): the
    pixels are loaded here, not lazily later inside a transform.
    """

    def __init__(self, image_data: bytes) -> None:
        self._image_data = image_data

    def decode(self) -> Image.Image:
        with Image.open(BytesIO(self._image_data)) as image:
            return image.convert(mode="RGB")  # convert() loads all pixels (and copies when already RGB)


class TargetDecoder(Decoder):
    def __init__(self, target: Any) -> None:
        self._target = target

    def decode(self) -> Any:
        return self._target
