"""The release's ``dinov2.hub.text.vision_tower``: re-exports :mod:`dinov2.text.vision_tower`."""

from dinov2.models.vision_transformer import named_apply
from dinov2.text.vision_tower import VisionHead, VisionTower, init_weights_vit_timm

__all__ = ["VisionHead", "VisionTower", "init_weights_vit_timm", "named_apply"]
