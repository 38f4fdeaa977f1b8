"""The release's ``dinov2.hub.text.text_tower``: re-exports :mod:`dinov2.text.text_tower`."""

from dinov2.text.text_tower import TextHead, TextTower

__all__ = ["TextHead", "TextTower"]
