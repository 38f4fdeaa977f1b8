"""dino.txt ("DINOv2 meets text"): a frozen vision backbone with a trained head, a text transformer, a joint space.

Model: :class:`DinoTxt` (:mod:`dinov2.text.dinotxt_model`), built by :func:`build_dinotxt`; tokenizer:
:func:`get_tokenizer`; zero-shot classifiers and dense similarity maps: :mod:`dinov2.text.zeroshot`. The released
hub model is :func:`dinov2.hub.dinotxt.dinov2_vitl14_reg4_dinotxt_tet1280d20h24l`.
"""

from dinov2.text.build import TEXT_1280D20H24L, build_dinotxt, released_config
from dinov2.text.dinotxt_model import DinoTxt, DinoTxtConfig
from dinov2.text.text_tower import TextHead, TextTower
from dinov2.text.text_transformer import TextTransformer
from dinov2.text.tokenizer import Tokenizer, get_tokenizer
from dinov2.text.vision_tower import VisionHead, VisionTower

__all__ = [
    "DinoTxt",
    "DinoTxtConfig",
    "TEXT_1280D20H24L",
    "TextHead",
    "TextTower",
    "TextTransformer",
    "Tokenizer",
    "VisionHead",
    "VisionTower",
    "build_dinotxt",
    "get_tokenizer",
    "released_config",
]
