"""DINOv2 objectives: DINO (class token), iBOT (masked patches) and KoLeo, plus the shared teacher maths; DINOv3's Gram
anchoring loss."""

from dinov2.loss.dino_clstoken_loss import DINOLoss
from dinov2.loss.gram_loss import GramLoss
from dinov2.loss.ibot_patch_loss import iBOTPatchLoss
from dinov2.loss.koleo_loss import KoLeoLoss, KoLeoLossDistributed

__all__ = ["DINOLoss", "iBOTPatchLoss", "KoLeoLoss", "KoLeoLossDistributed", "GramLoss"]
