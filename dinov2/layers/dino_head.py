"""DINO projection head: MLP -> L2 normalisation -> weight-normalised prototype layer (SPEC.md §2)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOHead", "WeightNormLinear"]


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation along the output dimension.

    The effective weight is ``weight_g * weight_v / ||weight_v||_row`` (row norm over the input
    dimension), as ``torch.nn.utils.weight_norm(nn.Linear(..., bias=False), dim=0)`` computes it. The
    parameters keep that function's names, ``weight_g`` [out, 1] and ``weight_v`` [out, in], so released
    checkpoints load unchanged, without the deprecated hook or the renamed keys of
    ``torch.nn.utils.parametrizations.weight_norm``. As in torch, the row norm has no epsilon.

    Args:
        in_features: input size (the head's bottleneck dimension).
        out_features: output size (the number of prototypes K).
    """

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.weight_g = nn.Parameter(torch.empty(out_features, 1, **factory))  # [K, 1]
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features, **factory))  # [K, in]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``weight_v`` gets ``nn.Linear``'s default init (what the release wraps); ``weight_g`` starts at 1."""
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        nn.init.ones_(self.weight_g)

    @property
    def weight(self) -> torch.Tensor:
        """Effective weight [K, in] = ``g * v / ||v||_row``."""
        v_norm = torch.linalg.vector_norm(self.weight_v, ord=2, dim=1, keepdim=True)  # [K, 1]
        return self.weight_v * (self.weight_g / v_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., in] -> [..., K]."""
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def _build_mlp(nlayers: int, in_dim: int, bottleneck_dim: int, hidden_dim: int, use_bn: bool, bias: bool) -> nn.Module:
    """``nlayers`` linears in -> hidden (-> hidden)* -> bottleneck with GELU (and BatchNorm) between.

    One layer is a bare ``nn.Linear`` (state-dict keys ``mlp.weight``/``mlp.bias``); more layers form an
    ``nn.Sequential`` whose linears sit at indices 0, 2, 4, ... (3 with BatchNorm), as in the release.
    """
    if nlayers == 1:
        return nn.Linear(in_dim, bottleneck_dim, bias=bias)
    layers: list[nn.Module] = []
    dims = [in_dim] + [hidden_dim] * (nlayers - 1)
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers.append(nn.Linear(d_in, d_out, bias=bias))
        if use_bn:
            layers.append(nn.BatchNorm1d(d_out))
        layers.append(nn.GELU())
    layers.append(nn.Linear(hidden_dim, bottleneck_dim, bias=bias))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """DINO / iBOT projection head.

    ``x [..., in_dim] -> mlp -> [..., bottleneck_dim] -> L2-normalise -> last_layer -> [..., out_dim]``.
    The L2 normalisation uses eps 1e-6 for float16 activations (1e-12 would underflow) and 1e-12
    otherwise. ``last_layer`` is a :class:`WeightNormLinear` without bias whose magnitude ``weight_g``
    starts at 1 and is trainable.

    Args:
        in_dim: backbone embedding size D.
        out_dim: number of prototypes K (65,536 or 131,072 in the released configs).
        use_bn: BatchNorm1d after each hidden linear.
        nlayers: number of MLP linears (values below 1 are treated as 1, as in the release).
        hidden_dim: MLP hidden size.
        bottleneck_dim: size before the prototype layer.
        mlp_bias: biases in the MLP linears.
        weight_norm_last_layer: DINOv2's :class:`WeightNormLinear` prototypes (default); False: DINOv3's plain
            bias-free ``nn.Linear`` (key ``last_layer.weight``), initialised like the MLP (truncated normal 0.02).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        use_bn: bool = False,
        nlayers: int = 3,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        mlp_bias: bool = True,
        weight_norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        nlayers = max(nlayers, 1)
        self.mlp = _build_mlp(nlayers, in_dim, bottleneck_dim, hidden_dim, use_bn=use_bn, bias=mlp_bias)
        self.mlp.apply(self._init_weights)
        if weight_norm_last_layer:
            self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        else:
            self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
            self._init_weights(self.last_layer)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[..., in_dim] -> prototype logits [..., out_dim]."""
        x = self.mlp(x)  # [..., bottleneck]
        eps = 1e-6 if x.dtype == torch.float16 else 1e-12
        x = F.normalize(x, p=2, dim=-1, eps=eps)
        return self.last_layer(x)  # [..., K]
