"""Position-embedding interpolation for ``torch.export``: the released numbers without shape guards.

``DinoVisionTransformer.interpolate_pos_encoding`` resizes the stored ``M x M`` table with
``F.interpolate(scale_factor=(g + offset) / M)`` when ``interpolate_offset`` > 0. The scale factor is a float
argument of the resize kernel, and ``torch.export`` turns every such float into a constant guarded by an
equality on the input size: the program would only run at the resolution it was exported with. The stored-table
shortcut (``N == M * M`` and a square input) is a second shape guard.

Here the same resize is written with tensor operations whose only shape inputs are integer sizes: the bicubic
weights of PyTorch's kernel (``a = -0.75``, half-pixel source coordinates ``(d + 0.5) / s - 0.5`` computed in
float32 from the float64 scale, edge indices clamped) form ``[g, M]`` matrices, and the table becomes
``rows @ table @ cols^T``. Values equal the kernel's up to float32 summation order (about 1e-7 relative). The
shortcut becomes a resize by exactly 1 at the stored grid, which these matrices perform exactly (identity
weights). Output-size mode (``interpolate_offset`` 0, the register models) has no float argument and calls the
kernel itself: bit-identical to eager.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_CUBIC_A = -0.75  # PyTorch's bicubic (non-antialiased) kernel coefficient


def is_exporting() -> bool:
    """True while ``torch.export`` traces. PyTorch versions without ``torch.compiler.is_exporting`` say False:
    there the eager interpolation is traced, and a program is pinned to the size it was exported at."""
    check = getattr(torch.compiler, "is_exporting", None)
    return bool(check is not None and check())


def _cubic_near(x: Tensor) -> Tensor:
    """Cubic convolution weight for distances in [0, 1] (PyTorch's ``cubic_convolution1``)."""
    return ((_CUBIC_A + 2) * x - (_CUBIC_A + 3)) * x * x + 1


def _cubic_far(x: Tensor) -> Tensor:
    """Cubic convolution weight for distances in [1, 2] (PyTorch's ``cubic_convolution2``)."""
    return ((_CUBIC_A * x - 5 * _CUBIC_A) * x + 8 * _CUBIC_A) * x - 4 * _CUBIC_A


def bicubic_resize_matrix(out_size: int, in_size: int, inverse_scale: Tensor) -> Tensor:
    """``[out_size, in_size]`` weights of PyTorch's 1-D bicubic resize (align_corners=False).

    ``inverse_scale`` (float32 scalar tensor) is the source step per output pixel, ``1 / scale_factor``.
    ``out_size`` may be symbolic (a ``SymInt`` under ``torch.export``).
    """
    dst = torch.arange(out_size, dtype=torch.float32)
    src = inverse_scale * (dst + 0.5) - 0.5  # [G] source coordinates, as the kernel computes them
    base = torch.floor(src).clamp(max=in_size - 1)
    t = (src - base).clamp(0.0, 1.0)
    weights = torch.stack([_cubic_far(t + 1.0), _cubic_near(t), _cubic_near(1.0 - t), _cubic_far((1.0 - t) + 1.0)], 1)
    taps = (base.long()[:, None] + torch.arange(-1, 3)).clamp(0, in_size - 1)  # [G, 4]
    hits = taps[:, :, None] == torch.arange(in_size)  # [G, 4, M]: clamped taps add up on the edge rows
    return (hits * weights[:, :, None]).sum(1)  # [G, M]


def _inverse_scale(grid: int, offset: float, keep_offset: int, side: int) -> Tensor:
    """``float32(1 / ((grid + offset) / side))`` computed in float64 like the kernel; offset dropped when 0."""
    grid64 = torch.full((), grid, dtype=torch.float64)
    keep = torch.full((), keep_offset, dtype=torch.float64)
    return (1.0 / ((grid64 + offset * keep) / side)).float()


def exportable_pos_encoding(
    pos_embed: Tensor, x: Tensor, h: int, w: int, patch_size: int, offset: float, antialias: bool
) -> Tensor:
    """What ``interpolate_pos_encoding(x, h, w)`` returns, traceable with dynamic ``h``, ``w`` and ``N``.

    ``pos_embed`` ``[1, 1 + M * M, D]``, ``x`` tokens ``[B, 1 + N, D]``; returns ``[1, 1 + N, D]`` in ``x.dtype``.
    """
    npatch, dim = x.shape[1] - 1, x.shape[-1]
    stored = pos_embed.shape[1] - 1
    side = math.isqrt(stored)
    at_stored = (npatch == stored) & (h == w)  # a SymBool when h, w are dynamic
    if isinstance(at_stored, bool) and at_stored:
        return pos_embed
    grid_h, grid_w = h // patch_size, w // patch_size
    table = pos_embed.float()
    patch_pos = table[:, 1:].reshape(side, side, dim).permute(2, 0, 1)  # [D, M, M]
    if not offset:  # output-size mode: integer sizes only, the kernel itself (identity at the stored grid)
        resize = torch.ops.aten._upsample_bicubic2d_aa if antialias else torch.ops.aten.upsample_bicubic2d
        patch_pos = resize(patch_pos[None], [grid_h, grid_w], False)[0]  # [D, h/p, w/p]
    elif antialias:
        raise NotImplementedError(
            "torch.export of interpolate_offset > 0 with interpolate_antialias=True (no released model uses it) "
            "is not supported: set one of them to its released value (offset 0 with antialias, or 0.1 without)"
        )
    else:
        keep = 1 if isinstance(at_stored, bool) else torch.sym_ite(at_stored, 0, 1)  # scale 1 at the stored grid
        rows = bicubic_resize_matrix(grid_h, side, _inverse_scale(grid_h, offset, keep, side))  # [h/p, M]
        cols = bicubic_resize_matrix(grid_w, side, _inverse_scale(grid_w, offset, keep, side))  # [w/p, M]
        patch_pos = rows @ patch_pos @ cols.T  # [D, h/p, w/p]
    patch_pos = patch_pos.permute(1, 2, 0).reshape(1, grid_h * grid_w, dim)  # [1, N, D]
    return torch.cat((table[:, :1], patch_pos), dim=1).to(x.dtype)
