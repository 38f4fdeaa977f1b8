"""The fine-tuned model: a backbone from the backbone door and the linear probe's classifier on top of it.

The head is the linear probe's :class:`~dinov2.eval.linear.classifiers.LinearClassifier` (input: the cls tokens of
the last ``n_last_blocks`` blocks, with the mean of the last block's patch tokens appended when ``avgpool``; the
hub ``_lc`` head layout for 1 or 4 blocks with avgpool), fed by ``get_intermediate_layers`` with gradients.

What trains (:func:`set_trainable`): every backbone parameter, or only the last ``N`` blocks and what follows
them (the final norms), or none (``N = 0``: a linear probe with augmentations); the head always.

DINOv3 RoPE augmentation: a DINOv3 ViT in training mode shifts / jitters / rescales its RoPE coordinates (the
hub backbones rescale by up to 2x). While fine-tuning it is off by default (the RoPE modules stay in eval mode,
so the forward is deterministic and sees the geometry the backbone is evaluated with); ``rope_augmentation=True``
keeps it as a regulariser. Its random draws come from the module's own generator, which checkpoints do not hold:
resume is exact only with it off.
"""

from __future__ import annotations

import torch
from torch import nn

from dinov2.eval.linear.classifiers import LinearClassifier
from dinov2.layers.rope import RopePositionEmbedding
from dinov2.utils.param_groups import fuse_params_groups, get_params_groups_with_decay

__all__ = ["FineTuneClassifier", "block_units", "set_trainable", "optimizer_groups"]

# backbone children that run after the blocks: they train with the last blocks
_AFTER_BLOCKS = ("norm", "cls_norm", "fc_norm", "head")
# parameters a classification forward never uses (masked-image training, DINOv3's local-crop cls norm): frozen, so
# the optimizer state covers exactly what trains (a checkpoint holds state for every trainable parameter)
_UNUSED = ("mask_token", "local_cls_norm")


def block_units(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's blocks in order (chunked blocks flattened), or a ConvNeXt's stages; [] when it has none."""
    if hasattr(backbone, "_flat_blocks"):
        return list(backbone._flat_blocks())
    for name in ("blocks", "stages"):
        units = getattr(backbone, name, None)
        if isinstance(units, nn.ModuleList):
            return list(units)
    return []


def set_trainable(backbone: nn.Module, unfreeze_last_blocks: int | None) -> int:
    """Unfreeze the whole backbone (``None``), or its last ``N`` blocks and final norms, or nothing (0); parameters
    that a classification forward never uses (``mask_token``, ``local_cls_norm``) stay frozen.

    Returns the number of trainable backbone parameters. Raises ``ValueError`` for ``N`` larger than the depth.
    """
    if unfreeze_last_blocks is None:
        backbone.requires_grad_(True)
    else:
        units = block_units(backbone)
        if unfreeze_last_blocks < 0 or unfreeze_last_blocks > len(units):
            raise ValueError(
                f"--unfreeze-last-blocks {unfreeze_last_blocks}: the backbone has {len(units)} blocks; give 0.."
                f"{len(units)} or 'all'"
            )
        backbone.requires_grad_(False)
        if unfreeze_last_blocks > 0:
            for unit in units[len(units) - unfreeze_last_blocks :]:
                unit.requires_grad_(True)
            for name, child in backbone.named_children():
                if name in _AFTER_BLOCKS:
                    child.requires_grad_(True)
    for name, param in backbone.named_parameters():
        if name.split(".")[0] in _UNUSED:
            param.requires_grad_(False)
    return sum(p.numel() for p in backbone.parameters() if p.requires_grad)


class FineTuneClassifier(nn.Module):
    """``backbone`` + linear head: images [B, 3, H, W] -> logits [B, num_classes] (float32).

    ``embed_dim``: the backbone's token width; ``n_last_blocks`` / ``avgpool``: the head input (see the module
    docstring); ``rope_augmentation``: keep DINOv3's RoPE augmentation in training mode.
    """

    def __init__(
        self,
        backbone: nn.Module,
        embed_dim: int,
        num_classes: int,
        *,
        n_last_blocks: int = 1,
        avgpool: bool = False,
        rope_augmentation: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.n_last_blocks = n_last_blocks
        self.rope_augmentation = rope_augmentation
        out_dim = (n_last_blocks + int(avgpool)) * embed_dim
        self.head = LinearClassifier(out_dim, n_last_blocks, avgpool, num_classes)

    def features(self, images: torch.Tensor):
        """``(patch_tokens [B, N, D], cls_token [B, D])`` of the last ``n_last_blocks`` blocks, oldest first."""
        return self.backbone.get_intermediate_layers(images, n=self.n_last_blocks, return_class_token=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))

    def train(self, mode: bool = True) -> FineTuneClassifier:
        super().train(mode)
        if mode and not self.rope_augmentation:  # deterministic RoPE coordinates (see the module docstring)
            for module in self.backbone.modules():
                if isinstance(module, RopePositionEmbedding):
                    module.eval()
        return self


def optimizer_groups(model: FineTuneClassifier, layer_decay: float, patch_embed_lr_mult: float = 1.0) -> list[dict]:
    """Fused parameter groups of the trainable parameters (:mod:`dinov2.utils.param_groups`): layer-wise lr decay
    over the backbone (tokens and patch embedding ``r^(L+1)``, block i ``r^(L-i)``, final norms 1), the head at 1;
    no weight decay on biases, norms and LayerScale gammas."""
    backbone = get_params_groups_with_decay(model.backbone, layer_decay, patch_embed_lr_mult)
    head = get_params_groups_with_decay(model.head)
    return fuse_params_groups(backbone + head)
