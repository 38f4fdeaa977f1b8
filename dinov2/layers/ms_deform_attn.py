"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021), as released in DINOv3's segmentation code
(``dinov3.eval.segmentation.models.utils.ms_deform_attn``): same constructor arguments, state-dict keys,
initialisation and numbers, in plain PyTorch (bilinear sampling by ``F.grid_sample``).

Each query attends to ``n_points`` sampled locations per head and level around its reference point, with offsets and
weights (softmax over levels x points) predicted from the query; the values are bilinearly sampled from each level.

Deliberate difference from the release: its autograd ``Function`` computes the forward with this same pure-PyTorch
core, but its backward needs the compiled CUDA extension ``MultiScaleDeformableAttention`` (an error without it).
Here the core is ordinary autograd through ``F.grid_sample``, so a head with deformable attention trains on CPU or
GPU without a compiled extension (same gradients up to rounding, more memory than the fused kernel). As released,
under CUDA autocast the core runs in float32 (the release's ``custom_fwd(cast_inputs=torch.float32)``). The
release's warning about head widths that are not powers of 2 (a speed note on its CUDA kernel) is not given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MSDeformAttn", "get_reference_points", "level_start_index", "ms_deform_attn_core_pytorch"]

SpatialShapes = Tensor | Sequence[Sequence[int]]  # [L, 2]: (H_l, W_l) of each level


def _pairs(spatial_shapes: SpatialShapes) -> list[tuple[int, int]]:
    rows = spatial_shapes.tolist() if isinstance(spatial_shapes, Tensor) else spatial_shapes
    return [(int(h), int(w)) for h, w in rows]


def level_start_index(spatial_shapes: Tensor) -> Tensor:
    """Where each level starts in the flattened sequence of all levels: ``[L]`` (0, H_0 W_0, ...)."""
    return torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))


def get_reference_points(
    spatial_shapes: SpatialShapes, device: torch.device | str | None, valid_ratios: Tensor | None = None
) -> Tensor:
    """Normalised ``(x, y)`` centres of the cells of each level's ``H_l x W_l`` grid, levels one after the other:
    ``[1, sum H_l W_l, 1, 2]`` in ``[0, 1]``; with ``valid_ratios`` ``[B, L, 2]`` (the unpadded fraction of each
    level, Deformable DETR's encoder) the points of every level in each level's frame: ``[B, sum H_l W_l, L, 2]``."""
    points = []
    for lvl, (h, w) in enumerate(_pairs(spatial_shapes)):
        ref_y, ref_x = torch.meshgrid(
            torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
            torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
            indexing="ij",
        )
        if valid_ratios is None:
            ref_y, ref_x = ref_y.reshape(-1)[None] / h, ref_x.reshape(-1)[None] / w
        else:
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
        points.append(torch.stack((ref_x, ref_y), -1))
    reference_points = torch.cat(points, 1)[:, :, None]
    return reference_points if valid_ratios is None else reference_points * valid_ratios[:, None]


def ms_deform_attn_core_pytorch(
    value: Tensor, value_spatial_shapes: SpatialShapes, sampling_locations: Tensor, attention_weights: Tensor
) -> Tensor:
    """Deformable attention over ``L`` levels: ``value`` ``[N, S, M, D]`` (``M`` heads, the levels' ``H_l x W_l``
    maps flattened one after the other), ``sampling_locations`` ``[N, Lq, M, L, P, 2]`` (``(x, y)`` in ``[0, 1]``;
    outside is zero padding), ``attention_weights`` ``[N, Lq, M, L, P]`` -> ``[N, Lq, M * D]``."""
    n, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    shapes = _pairs(value_spatial_shapes)
    value_list = value.split([h * w for h, w in shapes], dim=1)
    sampling_grids = 2 * sampling_locations - 1  # grid_sample's [-1, 1]
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        value_l = value_list[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)  # [N M, D, H_l, W_l]
        grid_l = sampling_grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # [N M, Lq, P, 2]
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, n_levels * n_points)  # [N M, 1, Lq, L P]
    output = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(n, m * d, lq)
    return output.transpose(1, 2).contiguous()


def _core_as_released(value: Tensor, shapes: Tensor, locations: Tensor, weights: Tensor) -> Tensor:
    """The core in the precision the release runs it: under CUDA autocast, CUDA inputs cast to float32 and autocast
    off (its ``custom_fwd(device_type="cuda", cast_inputs=torch.float32)``); otherwise as given."""
    if not torch.is_autocast_enabled("cuda"):
        return ms_deform_attn_core_pytorch(value, shapes, locations, weights)
    value, locations, weights = [
        t.float() if t.is_cuda and t.dtype != torch.float64 else t for t in (value, locations, weights)
    ]
    with torch.autocast("cuda", enabled=False):
        return ms_deform_attn_core_pytorch(value, shapes, locations, weights)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention: ``d_model`` wide queries, ``n_heads`` heads, ``n_points`` samples per head
    and level over ``n_levels`` levels; values projected to ``int(d_model * ratio)`` channels (the DINOv3 adapter
    uses 0.5). Keys: ``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj`` (all ``Linear``)."""

    def __init__(
        self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, ratio: float = 1.0
    ) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model must be divisible by n_heads, but got {d_model} and {n_heads}")
        if int(d_model * ratio) % n_heads != 0:
            raise ValueError(f"int(d_model * ratio) = {int(d_model * ratio)} must be divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.ratio = ratio
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, int(d_model * ratio))
        self.output_proj = nn.Linear(int(d_model * ratio), d_model)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The released initialisation: zero offset weights with biases pointing each head in its own direction
        (``i + 1`` steps for point ``i``), uniform attention, Xavier-uniform projections."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid_init = torch.stack([thetas.cos(), thetas.sin()], -1)  # [M, 2]
        grid_init = grid_init / grid_init.abs().max(-1, keepdim=True)[0]
        grid_init = grid_init.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid_init[:, :, i, :] *= i + 1
        self.sampling_offsets.bias.copy_(grid_init.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: Tensor,
        reference_points: Tensor,
        input_flatten: Tensor,
        input_spatial_shapes: Tensor,
        input_level_start_index: Tensor,
        input_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """``query`` ``[N, Lq, C]`` attends to ``input_flatten`` ``[N, sum H_l W_l, C]`` (levels of
        ``input_spatial_shapes`` ``[L, 2]`` flattened one after the other; ``input_level_start_index`` ``[L]``, kept
        for the released call) around ``reference_points``: ``[N, Lq, L, 2]`` ``(x, y)`` in ``[0, 1]`` or
        ``[N, Lq, L, 4]`` boxes ``(x, y, w, h)``; ``input_padding_mask`` ``[N, sum H_l W_l]``, True where padded.
        Returns ``[N, Lq, C]``."""
        n, len_q, _ = query.shape
        _, len_in, _ = input_flatten.shape
        if int((input_spatial_shapes[:, 0] * input_spatial_shapes[:, 1]).sum()) != len_in:
            raise ValueError(f"input_spatial_shapes {input_spatial_shapes.tolist()} do not add up to {len_in} inputs")
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], float(0))
        value = value.view(n, len_in, self.n_heads, int(self.ratio * self.d_model) // self.n_heads)
        offsets = self.sampling_offsets(query).view(n, len_q, self.n_heads, self.n_levels, self.n_points, 2)
        weights = self.attention_weights(query).view(n, len_q, self.n_heads, self.n_levels * self.n_points)
        weights = F.softmax(weights, -1).view(n, len_q, self.n_heads, self.n_levels, self.n_points)
        if reference_points.shape[-1] == 2:
            normalizer = torch.stack([input_spatial_shapes[..., 1], input_spatial_shapes[..., 0]], -1)  # (W, H)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            boxes = reference_points[:, :, None, :, None, 2:]
            locations = reference_points[:, :, None, :, None, :2] + offsets / self.n_points * boxes * 0.5
        else:
            raise ValueError(f"the last dim of reference_points must be 2 or 4, got {reference_points.shape[-1]}")
        output = _core_as_released(value, input_spatial_shapes, locations, weights)
        return self.output_proj(output)
