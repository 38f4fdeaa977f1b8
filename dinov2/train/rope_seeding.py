"""RoPE training augmentations (DINOv3's ``student.pos_embed_rope_{shift,jitter,rescale}_coords``), seeded.

The release draws the coordinate shift, jitter and rescale from the global torch generator, so they depend on
everything drawn before and cannot be replayed on resume. Here every :class:`~dinov2.layers.rope.RopePositionEmbedding`
of the student gets, at the start of each iteration, its own generator seeded from ``(train.seed, rank, iteration)``:
the draws are the same for the same seed, rank and step (resumes replay them), differ between ranks (each rank sees
other coordinates, as with the release's per-rank generators) and between steps. Modules in eval mode (the teacher,
the Gram teacher, evaluation) draw nothing: the augmentations are training-only.
"""

from __future__ import annotations

import torch
from torch import nn

from dinov2.data.seeding import mix_seed
from dinov2.layers.rope import RopePositionEmbedding

__all__ = ["seed_rope_augmentations"]

_ROPE_STREAM = 0x209E  # keeps this stream apart from the data loader's seeds built from the same values


def seed_rope_augmentations(module: nn.Module, seed: int, rank: int, iteration: int) -> int:
    """Give every augmenting RoPE table in ``module`` a generator seeded from ``(seed, rank, iteration)``; returns
    how many tables were seeded (0 for a model without RoPE or without augmentations)."""
    count = 0
    for rope in module.modules():
        if not isinstance(rope, RopePositionEmbedding):
            continue
        if rope.shift_coords is None and rope.jitter_coords is None and rope.rescale_coords is None:
            continue
        generator = torch.Generator(device=rope.periods.device)
        generator.manual_seed(mix_seed(_ROPE_STREAM, seed, rank, iteration, count))
        rope.generator = generator
        count += 1
    return count
