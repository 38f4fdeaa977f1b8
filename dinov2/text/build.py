"""The released dino.txt configurations and a builder over any frozen token backbone."""

from __future__ import annotations

import dataclasses
import math

from torch import nn

from dinov2.text.dinotxt_model import DinoTxt, DinoTxtConfig
from dinov2.text.text_transformer import TextTransformer

__all__ = ["TEXT_1280D20H24L", "released_config", "build_dinotxt"]

# The released text encoder ("tet1280d20h24l"): CLIP vocabulary and context, 1280-d, 20 heads, 24 causal layers.
TEXT_1280D20H24L = dict(
    context_length=77,
    vocab_size=49408,
    dim=1280,
    num_heads=20,
    num_layers=24,
    ffn_ratio=4.0,
    is_causal=True,
    ls_init_value=None,
    dropout_prob=0.0,
)


def released_config(embed_dim: int = 2048, **overrides) -> DinoTxtConfig:
    """The configuration of the released models (DINOv2 and DINOv3 hubs alike): 2 head blocks over [CLS, registers,
    patches], [CLS ‖ mean patches], argmax text pooling with a linear projection; ``overrides`` change fields."""
    config = DinoTxtConfig(
        embed_dim=embed_dim,
        vision_model_freeze_backbone=True,
        vision_model_train_img_size=224,
        vision_model_use_class_token=True,
        vision_model_use_patch_tokens=True,
        vision_model_num_head_blocks=2,
        vision_model_head_blocks_drop_path=0.3,
        vision_model_use_linear_projection=False,
        vision_model_patch_tokens_pooler_type="mean",
        vision_model_patch_token_layer=1,
        text_model_freeze_backbone=False,
        text_model_num_head_blocks=0,
        text_model_head_blocks_is_causal=False,
        text_model_head_blocks_drop_prob=0.0,
        text_model_tokens_pooler_type="argmax",
        text_model_use_linear_projection=True,
        init_logit_scale=math.log(1 / 0.07),
        init_logit_bias=None,
        freeze_logit_scale=False,
    )
    return dataclasses.replace(config, **overrides)


def build_dinotxt(
    vision_backbone: nn.Module, config: DinoTxtConfig | None = None, text_kwargs: dict | None = None
) -> DinoTxt:
    """A dino.txt model over ``vision_backbone`` (frozen, eval mode) with ``config`` (default
    :func:`released_config` with ``embed_dim`` = 2 x the backbone's) and a text transformer built from
    ``text_kwargs`` (default :data:`TEXT_1280D20H24L`), initialised for training (:meth:`DinoTxt.init_weights`)."""
    config = config or released_config(2 * int(vision_backbone.embed_dim))
    text_backbone = TextTransformer(**(text_kwargs or TEXT_1280D20H24L))
    model = DinoTxt(config, vision_backbone, text_backbone)
    model.init_weights()
    return model
