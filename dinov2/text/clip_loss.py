"""The CLIP loss of dino.txt training: symmetric InfoNCE over the global batch with a learnable temperature.

With ``s_ij = tau * <x_i, y_j>`` (features L2-normalised, fp32; ``tau = exp(logit_scale)``), per local sample ``i``:
``1/2 [(logsumexp_j s_ij - s_ii) + (logsumexp_j s_ji - s_ii)]``, averaged over the local samples; ``j`` runs over
the samples of every process (gathered with their gradient, so averaging the gradients of the processes gives the
gradient of the global mean). With one process it is the ordinary CLIP loss. The released trainer computes the
same value without materialising the global matrix (a ring of processes); this gathers, which costs
``[B_local, B_global]`` memory per process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dinov2 import distributed

__all__ = ["clip_loss", "gather_with_grad"]


def gather_with_grad(tensor: Tensor) -> Tensor:
    """``tensor`` of every process concatenated along dim 0, differentiable (the input itself on one process)."""
    return distributed.all_gather_with_grad(tensor)


def clip_loss(image_features: Tensor, text_features: Tensor, logit_scale: Tensor) -> Tensor:
    """Loss of normalised ``image_features`` / ``text_features`` ``[B, D]`` (pairs on the same row) and the
    temperature ``logit_scale`` (already exponentiated, as :meth:`DinoTxt.forward` returns it)."""
    image_features, text_features = image_features.float(), text_features.float()
    all_image, all_text = gather_with_grad(image_features), gather_with_grad(text_features)
    batch = image_features.shape[0]
    labels = torch.arange(batch, device=image_features.device) + distributed.get_global_rank() * batch
    scale = logit_scale.float()
    image_logits = scale * image_features @ all_text.T  # [B, B_global]
    text_logits = scale * text_features @ all_image.T  # [B, B_global]
    return 0.5 * (F.cross_entropy(image_logits, labels) + F.cross_entropy(text_logits, labels))
