"""The release's ``dinov2.hub.text.tokenizer``: re-exports :mod:`dinov2.text.tokenizer`."""

from dinov2.text.tokenizer import Tokenizer

__all__ = ["Tokenizer"]
