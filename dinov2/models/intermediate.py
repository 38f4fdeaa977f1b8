"""What the backbones' released ``get_intermediate_layers`` share: the blocks (or stages) the ``n`` argument names,
and the assembly of the outputs (patch tokens, as maps with ``reshape``, zipped with the class / extra tokens).

:class:`IntermediateLayersMixin` carries the released signature of the DINOv2 ViT and the DINOv3 ConvNeXt; the DINOv3
ViT, whose released signature is keyword-only after ``x`` and adds ``return_extra_tokens``, uses
:func:`last_or_listed` and :func:`pack_outputs` directly. Tools that serve every family pass ``n=`` by keyword.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["IntermediateLayersMixin", "last_or_listed", "pack_outputs"]


def last_or_listed(n: int | Sequence[int], depth: int) -> list[int]:
    """The indices the released ``n`` names: the last ``n`` of ``depth`` (an int), or the listed ones as given."""
    return list(range(depth - n, depth)) if isinstance(n, int) else list(n)


def pack_outputs(patches: Sequence[Tensor], grids: Sequence[tuple[int, int]] | None, *extras: Sequence[Tensor]):
    """Patch tokens ``[B, h * w, D]`` per output (as maps ``[B, D, h, w]`` on ``grids`` when given), zipped with each
    list of ``extras`` (class tokens ``[B, D]``, extra tokens ``[B, n, D]``) when there are any."""
    if grids is not None:
        patches = [
            p.reshape(p.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous() for p, (h, w) in zip(patches, grids)
        ]
    return tuple(zip(patches, *extras)) if extras else tuple(patches)


class IntermediateLayersMixin:
    """The released ``get_intermediate_layers(x, n, reshape, return_class_token, norm)`` of a backbone whose
    ``_intermediate_outputs(x, n, norm)`` gives ``(patches [B, hw, D], class tokens [B, D], grids (h, w))`` lists."""

    def _intermediate_outputs(
        self, x: Tensor, n: int | Sequence[int], norm: bool
    ) -> tuple[list[Tensor], list[Tensor], list[tuple[int, int]]]:
        raise NotImplementedError

    def get_intermediate_layers(
        self,
        x: Tensor,
        n: int | Sequence[int] = 1,
        reshape: bool = False,
        return_class_token: bool = False,
        norm: bool = True,
    ) -> tuple:
        """Patch tokens of the last ``n`` blocks (ViT) / stages (ConvNeXt) (an int) or of those listed in ``n``.

        Each output is ``[B, hw, D]`` (``[B, D, h, w]`` with ``reshape``), normalised by the backbone's final norm(s)
        when ``norm``; with ``return_class_token`` each item is a ``(patch_tokens, class_token [B, D])`` pair.
        """
        patches, class_tokens, grids = self._intermediate_outputs(x, n, norm)
        return pack_outputs(patches, grids if reshape else None, *([class_tokens] if return_class_token else []))
