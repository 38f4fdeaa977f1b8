"""The release's ``dinov2.hub.text.dinotxt_model``: re-exports :mod:`dinov2.text.dinotxt_model`."""

from dinov2.text.dinotxt_model import DinoTxt, DinoTxtConfig

__all__ = ["DinoTxt", "DinoTxtConfig"]
