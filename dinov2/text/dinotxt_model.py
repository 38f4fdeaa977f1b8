"""The dino.txt model: a vision tower and a text tower mapping to one joint space, CLIP-style logits.

Released module structure and names: ``visual_model`` (:class:`~dinov2.text.vision_tower.VisionTower`),
``text_model`` (:class:`~dinov2.text.text_tower.TextTower`), ``logit_scale`` (a 1-element parameter, the log of the
logit temperature, ``ln(1/0.07)`` at initialisation; not stored in the released DINOv2 files).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.text.text_tower import TextTower
from dinov2.text.vision_tower import VisionTower

__all__ = ["DinoTxtConfig", "DinoTxt"]


@dataclasses.dataclass
class DinoTxtConfig:
    """The released model configuration (defaults as released; the hub model sets its own values)."""

    embed_dim: int
    vision_model_freeze_backbone: bool = True
    vision_model_train_img_size: int = 224
    vision_model_use_class_token: bool = True
    vision_model_use_patch_tokens: bool = False
    vision_model_num_head_blocks: int = 0
    vision_model_head_blocks_drop_path: float = 0.3
    vision_model_use_linear_projection: bool = False
    vision_model_patch_tokens_pooler_type: str = "mean"
    vision_model_patch_token_layer: int = 1  # 1: the last block, 2: the one before, ...
    text_model_freeze_backbone: bool = False
    text_model_num_head_blocks: int = 0
    text_model_head_blocks_is_causal: bool = False
    text_model_head_blocks_drop_prob: float = 0.0
    text_model_tokens_pooler_type: str = "first"
    text_model_use_linear_projection: bool = False
    init_logit_scale: float = math.log(1 / 0.07)
    init_logit_bias: float | None = None
    freeze_logit_scale: bool = False


class DinoTxt(nn.Module):
    """Image and text encoders into a ``embed_dim`` joint space (first half: global, second half: local)."""

    def __init__(self, model_config: DinoTxtConfig, vision_backbone: nn.Module, text_backbone: nn.Module) -> None:
        super().__init__()
        if model_config.init_logit_bias is not None:
            raise ValueError(f"init_logit_bias={model_config.init_logit_bias}: a logit bias is not supported; use None")
        cfg = model_config
        self.model_config = cfg
        self.visual_model = VisionTower(
            vision_backbone,
            cfg.vision_model_freeze_backbone,
            cfg.embed_dim,
            cfg.vision_model_num_head_blocks,
            cfg.vision_model_head_blocks_drop_path,
            cfg.vision_model_use_class_token,
            cfg.vision_model_use_patch_tokens,
            cfg.vision_model_patch_token_layer,
            cfg.vision_model_patch_tokens_pooler_type,
            cfg.vision_model_use_linear_projection,
        )
        self.text_model = TextTower(
            text_backbone,
            cfg.text_model_freeze_backbone,
            cfg.embed_dim,
            cfg.text_model_num_head_blocks,
            cfg.text_model_head_blocks_is_causal,
            cfg.text_model_head_blocks_drop_prob,
            cfg.text_model_tokens_pooler_type,
            cfg.text_model_use_linear_projection,
        )
        self.logit_scale = nn.Parameter(torch.full((1,), float(cfg.init_logit_scale)))
        self.logit_scale.requires_grad_(not cfg.freeze_logit_scale)

    def init_weights(self) -> None:
        """Initialise the trainable parts (vision head, text tower) for training from scratch."""
        self.visual_model.init_weights()
        self.text_model.init_weights()
        with torch.no_grad():
            self.logit_scale.fill_(float(self.model_config.init_logit_scale))

    def get_visual_class_and_patch_tokens(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Vision-head outputs ``(cls [B, D], patches [B, HW, D])`` for dense use."""
        return self.visual_model.get_class_and_patch_tokens(image)

    def encode_image(self, image: Tensor, normalize: bool = False) -> Tensor:
        """Images ``[B, 3, H, W]`` (ImageNet-normalised) -> ``[B, embed_dim]``: first half the head's class token,
        second half its pooled patch tokens; L2-normalised when ``normalize`` (always, before comparing to text)."""
        features = self.visual_model(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: Tensor, normalize: bool = False) -> Tensor:
        """Token ids ``[B, N]`` (:func:`dinov2.text.tokenizer.get_tokenizer`) -> ``[B, embed_dim]``, whose halves
        align with the image halves (global, local); L2-normalised when ``normalize``."""
        features = self.text_model(text)
        return F.normalize(features, dim=-1) if normalize else features

    def get_logits(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """``(image_logits [B_img, B_txt], text_logits = image_logits.T)``: exp(logit_scale) x cosine similarity."""
        text_features = self.encode_text(text, normalize=True)
        image_features = self.encode_image(image, normalize=True)
        image_logits = self.logit_scale.exp() * image_features @ text_features.T
        return image_logits, image_logits.T

    def forward(self, image: Tensor, text: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(normalised image features, normalised text features, exp(logit_scale))``: the training loss inputs."""
        text_features = self.encode_text(text, normalize=True)
        image_features = self.encode_image(image, normalize=True)
        return image_features, text_features, self.logit_scale.exp()
