"""2-D rotary position embedding of the DINOv3 ViTs: per-patch ``(sin, cos)`` tables from patch-centre coordinates."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

NORMALIZE_COORDS = ("min", "max", "separate")


class RopePositionEmbedding(nn.Module):
    """``module(H=h, W=w) -> (sin, cos)``, each ``[h * w, D_head]`` (``D_head = embed_dim // num_heads``).

    Periods come either from ``base`` (``base ** (2i / (D_head / 2))``) or from a geometric ``min_period`` to
    ``max_period`` range; the persistent buffer ``periods`` ``[D_head / 4]`` is in ``dtype``. Patch-centre coordinates
    in ``[-1, 1]`` (per axis for ``normalize_coords='separate'``, by the longer / shorter side for ``'max'`` /
    ``'min'``) are, in training mode only, shifted, jittered per axis and rescaled (one factor for both axes), each
    draw shared by the whole call. ``generator`` seeds those draws (the release uses the global generator).
    """

    def __init__(
        self,
        embed_dim: int,
        *,
        num_heads: int,
        base: float | None = 100.0,
        min_period: float | None = None,
        max_period: float | None = None,
        normalize_coords: str = "separate",
        shift_coords: float | None = None,
        jitter_coords: float | None = None,
        rescale_coords: float | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if embed_dim % (4 * num_heads):
            raise ValueError(
                f"RopePositionEmbedding: embed_dim={embed_dim} must be divisible by 4 * num_heads={4 * num_heads}; "
                "choose a head dimension that is a multiple of 4"
            )
        both_periods = min_period is not None and max_period is not None
        if (base is None) == (not both_periods):
            raise ValueError(
                f"RopePositionEmbedding: give either base (got {base!r}) or both min_period and max_period "
                f"(got {min_period!r}, {max_period!r}), not both and not neither"
            )
        if normalize_coords not in NORMALIZE_COORDS:
            raise ValueError(
                f"RopePositionEmbedding: normalize_coords={normalize_coords!r} is not one of {NORMALIZE_COORDS}"
            )
        self.base = base
        self.min_period = min_period
        self.max_period = max_period
        self.D_head = embed_dim // num_heads
        self.normalize_coords = normalize_coords
        self.shift_coords = shift_coords
        self.jitter_coords = jitter_coords
        self.rescale_coords = rescale_coords
        self.dtype = dtype
        self.generator = generator
        # Persistent: the trainer copies student -> teacher through the state dict, and released files carry it.
        self.register_buffer("periods", torch.empty(self.D_head // 4, device=device, dtype=dtype), persistent=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Recompute ``periods`` from ``base`` or ``min_period`` / ``max_period``."""
        dd = {"device": self.periods.device, "dtype": self.dtype}
        if self.base is not None:
            exponents = 2 * torch.arange(self.D_head // 4, **dd) / (self.D_head // 2)  # [D_head / 4]
            periods = self.base**exponents
        else:
            ratio = self.max_period / self.min_period
            periods = ratio ** torch.linspace(0, 1, self.D_head // 4, **dd) / ratio * self.max_period
        self.periods.data = periods

    @property
    def draws_augmentations(self) -> bool:
        """Whether :meth:`forward` draws random coordinate augmentations (training mode with shift, jitter or
        rescale set); otherwise its table depends on ``(H, W)`` and ``periods`` only."""
        augmentations = (self.shift_coords, self.jitter_coords, self.rescale_coords)
        return self.training and any(a is not None for a in augmentations)

    def _coords(self, H: int, W: int) -> Tensor:
        dd = {"device": self.periods.device, "dtype": self.dtype}
        if self.normalize_coords == "max":
            denom_h = denom_w = max(H, W)
        elif self.normalize_coords == "min":
            denom_h = denom_w = min(H, W)
        else:
            denom_h, denom_w = H, W
        coords_h = torch.arange(0.5, H, **dd) / denom_h  # [H]
        coords_w = torch.arange(0.5, W, **dd) / denom_w  # [W]
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)  # [HW, 2] (y, x)
        return 2.0 * coords - 1.0

    def _augment(self, coords: Tensor) -> Tensor:
        """Training-time box augmentations, in the release's order: shift, per-axis jitter, global rescale."""
        dd = {"device": coords.device, "dtype": coords.dtype}
        if self.shift_coords is not None:
            shift = torch.empty(2, **dd).uniform_(-self.shift_coords, self.shift_coords, generator=self.generator)
            coords = coords + shift[None, :]
        if self.jitter_coords is not None:
            log_j = math.log(self.jitter_coords)
            jitter = torch.empty(2, **dd).uniform_(-log_j, log_j, generator=self.generator).exp()
            coords = coords * jitter[None, :]
        if self.rescale_coords is not None:
            log_r = math.log(self.rescale_coords)
            rescale = torch.empty(1, **dd).uniform_(-log_r, log_r, generator=self.generator).exp()
            coords = coords * rescale
        return coords

    def forward(self, *, H: int, W: int) -> tuple[Tensor, Tensor]:
        coords = self._coords(H, W)  # [HW, 2]
        if self.training:
            coords = self._augment(coords)
        angles = 2 * math.pi * coords[:, :, None] / self.periods[None, None, :]  # [HW, 2, D_head / 4]
        angles = angles.flatten(1, 2).tile(2)  # [HW, D_head]: y angles, x angles, repeated for the two halves
        return torch.sin(angles), torch.cos(angles)
