"""The release's ``dinov2.hub.text.text_transformer``: re-exports :mod:`dinov2.text.text_transformer`."""

from dinov2.text.text_transformer import TextTransformer

__all__ = ["TextTransformer"]
