"""Stochastic depth (Huang et al., 2016): drop a whole residual branch per sample."""

from __future__ import annotations

from torch import Tensor, nn

from dinov2.layers.packing import Groups, per_token


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False, groups: Groups | None = None) -> Tensor:
    """Zero the branch ``x`` for a random subset of samples and scale the rest by ``1 / (1 - drop_prob)``.

    ``x`` is ``[B, ...]`` (one sample per row of dim 0), or packed tokens ``[T, D]`` when ``groups`` gives
    the packed layout (see :mod:`dinov2.layers.packing`); each image is kept or dropped as a whole.
    """
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    num_samples = x.shape[0] if groups is None else sum(b for b, _ in groups)
    keep = x.new_empty(num_samples).bernoulli_(keep_prob)  # [S] of 0/1
    if keep_prob > 0.0:
        keep.div_(keep_prob)
    if groups is not None:
        keep = per_token(keep, groups)  # [T]
    return x * keep.view(-1, *([1] * (x.ndim - 1)))


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (identity in eval mode or with ``drop_prob`` 0)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor, groups: Groups | None = None) -> Tensor:
        return drop_path(x, self.drop_prob, self.training, groups)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
