"""What one training step consumes and produces: the collated batch, the teacher targets, the student outputs.

Also the two ways a batch's iBOT positions are re-chosen: every patch token (:func:`all_patch_batch`, distillation
with ``ibot_tokens: all``) and a batch rebuilt from gathered crops and masks (:func:`batch_from_crops`,
multi-student distillation).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

__all__ = ["N_GLOBAL_CROPS", "Batch", "StudentOutputs", "TeacherTargets", "all_patch_batch", "batch_from_crops"]

N_GLOBAL_CROPS = 2


@dataclass
class Batch:
    """A collated multi-crop batch on the training device (keys of ``collate_data_and_cast``)."""

    global_crops: torch.Tensor  # [2B, 3, H, W], crop-major
    local_crops: torch.Tensor  # [L*B, 3, h, w], crop-major (L may be 0)
    masks: torch.Tensor  # [2B, N] bool
    mask_indices: torch.Tensor  # [M] int64, flat indices into [2B * N]
    masks_weight: torch.Tensor  # [M] 1 / (#masked patches of the token's image)
    n_masked_patches: torch.Tensor  # [1] int64 (M as a tensor, for Sinkhorn-Knopp's all-reduce)
    gram_teacher_crops: torch.Tensor | None = None  # [2B, 3, H_gram, W_gram] (Gram anchoring), crop-major

    @classmethod
    def from_collated(cls, data: dict, device: torch.device | str) -> Batch:
        """Move the collated dict to ``device`` once (non-blocking from pinned memory)."""

        def move(key: str) -> torch.Tensor:
            return data[key].to(device, non_blocking=True)

        return cls(
            global_crops=move("collated_global_crops"),
            local_crops=move("collated_local_crops"),
            masks=move("collated_masks"),
            mask_indices=move("mask_indices_list"),
            masks_weight=move("masks_weight"),
            n_masked_patches=move("n_masked_patches"),
            gram_teacher_crops=move("collated_gram_teacher_crops") if "collated_gram_teacher_crops" in data else None,
        )

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device`` (optional parts stay None)."""
        moved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Batch(**{name: None if value is None else value.to(device) for name, value in moved.items()})

    @property
    def n_images(self) -> int:
        return self.global_crops.shape[0] // N_GLOBAL_CROPS

    @property
    def n_local_crops(self) -> int:
        return self.local_crops.shape[0] // self.n_images


@dataclass
class TeacherTargets:
    """Teacher probabilities the student is trained to match."""

    dino: torch.Tensor  # [2, B, K] per global crop, already swapped (row i of crop 0 is crop 1's target)
    ibot: torch.Tensor | None  # [M, K_ibot] for the masked patches, or None without iBOT
    gram: torch.Tensor | None = None  # [2B, P, D] Gram teacher patch tokens on the student's grid (Gram anchoring)


@dataclass
class StudentOutputs:
    """Student outputs entering the loss terms."""

    global_cls: torch.Tensor  # [2B, D] backbone cls tokens of the global crops (KoLeo input)
    global_cls_logits: torch.Tensor  # [2B, K] after the DINO head
    local_cls_logits: torch.Tensor | None  # [L*B, K], None without local crops
    masked_patch_logits: torch.Tensor | None  # [M, K_ibot], None without iBOT
    global_patch_tokens: torch.Tensor | None = None  # [2B, P, D] normed patch tokens (only for Gram anchoring)


def all_patch_batch(batch: Batch) -> Batch:
    """``batch`` with every patch token of the global crops as an iBOT position (``ibot_tokens: all``).

    Each image then weighs its ``N`` tokens ``1 / N``, so the iBOT term is the per-image mean over all tokens,
    averaged over the ``2B`` global crops (the masked term's normalisation with a full mask).
    """
    masks = torch.ones_like(batch.masks, dtype=torch.bool)  # [2B, N]
    n_total = masks.numel()
    return dataclasses.replace(
        batch,
        masks=masks,
        mask_indices=torch.arange(n_total, device=masks.device),
        masks_weight=torch.full((n_total,), 1.0 / masks.shape[1], device=masks.device),
        n_masked_patches=torch.tensor([n_total], device=masks.device),
    )


def batch_from_crops(global_crops: torch.Tensor, local_crops: torch.Tensor, masks: torch.Tensor) -> Batch:
    """A :class:`Batch` from crop-major crops and masks ``[2B, N]``, with the collate's mask indices and weights."""
    masks = masks.bool()
    counts = masks.sum(dim=-1, keepdim=True).clamp(min=1).float()  # [2B, 1] masked tokens per image
    indices = masks.flatten().nonzero().flatten()  # [M], row-major like collate_data_and_cast
    return Batch(
        global_crops=global_crops,
        local_crops=local_crops,
        masks=masks,
        mask_indices=indices,
        masks_weight=(1.0 / counts).expand_as(masks)[masks],
        n_masked_patches=torch.tensor([indices.numel()], device=masks.device),
    )
