"""How a backbone state dict fits a model: missing / unexpected keys, shape mismatches, and the config key that
most likely explains each difference (``student.arch``, ``student.num_register_tokens``, ``crops.global_crops_size``
for the position table, ...). Pure: nothing here opens a file (:mod:`dinov2.models.weights` reads the weights and
re-exports these names, which is where callers import them from).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.models.convert import chunked_to_flat, flat_to_chunked

__all__ = ["CONFIG_ADVICE", "WeightsMismatchError", "Hint", "FitReport", "fit_report", "load_strict"]
__all__ += ["resize_pos_embed"]

logger = logging.getLogger("dinov2")

_LISTED = 8  # keys listed per category in a report

CONFIG_ADVICE = "Use the config the weights were trained with (its student.* and crops.global_crops_size)."


class WeightsMismatchError(RuntimeError):
    """Weights do not fit the model (nothing was loaded); the message lists every difference and hints."""


@dataclasses.dataclass(frozen=True)
class Hint:
    """A likely cause of a mismatch: the config key to change and, when known, the value that fits."""

    key: str
    reason: str
    value: Any = None

    def format(self, setter: str | None) -> str:
        if setter is not None and self.value is not None:
            return f"{self.reason}: pass {setter.format(key=self.key, value=self.value)}"
        return f"{self.reason}: check {self.key}"


@dataclasses.dataclass
class FitReport:
    """How a state dict fits a model. ``state_dict`` is renamed for the model (chunked block names)."""

    state_dict: dict[str, Tensor]
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (key, weights shape, model shape)
    hints: list[Hint]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def message(
        self,
        source: object,
        what: str = "the backbone built from the config",
        setter: str | None = None,
        advice: str = CONFIG_ADVICE,
    ) -> str:
        """The report as text; ``setter`` (e.g. ``"--opts {key}={value}"``) spells how a user changes a key."""
        lines = [f"weights {str(source)!r} do not fit {what} (nothing was loaded):"]
        for name, keys in (("missing key(s)", self.missing), ("unexpected key(s)", self.unexpected)):
            if keys:
                lines.append(f"  {len(keys)} {name}: {keys[:_LISTED]}{' ...' if len(keys) > _LISTED else ''}")
        if self.mismatched:
            shown = [f"{k}: weights {list(got)} vs model {list(want)}" for k, got, want in self.mismatched[:_LISTED]]
            lines.append(f"  {len(self.mismatched)} shape mismatch(es): " + "; ".join(shown))
        lines += [f"  hint: {hint.format(setter)}" for hint in self.hints]
        lines.append(f"  {advice}")
        return "\n".join(lines)

    def raise_if_mismatched(self, source: object, *args, **kwargs) -> None:
        """Raise :class:`WeightsMismatchError` with :meth:`message` (same arguments) unless the weights fit."""
        if not self.ok:
            raise WeightsMismatchError(self.message(source, *args, **kwargs))


def _arch_shapes() -> dict[str, tuple[int, int]]:
    """{arch name: (embed dim, depth)} of the registered architectures (built on the meta device, on errors only)."""
    from dinov2.models.vision_transformer import ARCHS

    with torch.device("meta"):
        models = {name: build(patch_size=14, img_size=28, num_register_tokens=0) for name, build in ARCHS.items()}
    return {name: (model.embed_dim, model.n_blocks) for name, model in models.items()}


def _weights_arch(state_dict: Mapping[str, Tensor]) -> str | None:
    dim = state_dict["cls_token"].shape[-1] if "cls_token" in state_dict else None
    blocks = {int(key.split(".")[1]) for key in state_dict if key.startswith("blocks.") and key.split(".")[1].isdigit()}
    depth = max(blocks) + 1 if blocks else None
    return next((name for name, shape in _arch_shapes().items() if shape == (dim, depth)), None)


def _hints(model: nn.Module, flat: Mapping[str, Tensor], missing, unexpected, mismatched) -> list[Hint]:
    """Likely causes of a mismatch, in terms of config keys (``flat``: the weights with flat block names)."""
    hints, shapes = [], {key: (got, want) for key, got, want in mismatched}
    changed = [*missing, *unexpected]
    if "cls_token" in shapes:
        got, want = shapes["cls_token"]
        reason = f"the weights have embed dim {got[-1]}, the config builds {want[-1]}"
        hints.append(Hint("student.arch", reason, _weights_arch(flat)))
    elif "pos_embed" in shapes:
        got, _ = shapes["pos_embed"]
        side = math.isqrt(got[1] - 1)
        if side * side == got[1] - 1:
            size, patch = side * model.patch_size, model.patch_size
            reason = f"the weights store a {side} x {side} position grid (images of {size} px at patch {patch})"
            hints.append(Hint("crops.global_crops_size", reason, size))
    if "patch_embed.proj.weight" in shapes and "cls_token" not in shapes:
        got, _ = shapes["patch_embed.proj.weight"]
        hints.append(Hint("student.patch_size", f"the weights use patch size {got[-1]}", got[-1]))
    if any("register_tokens" in key for key in changed) or "register_tokens" in shapes:
        count = flat["register_tokens"].shape[1] if "register_tokens" in flat else 0
        reason = f"the number of register tokens differs (weights: {count})"
        hints.append(Hint("student.num_register_tokens", reason, count))
    if any(".mlp.w12." in key or ".mlp.fc1." in key for key in unexpected):
        ffn = "swiglufused" if any(".mlp.w12." in key for key in unexpected) else "mlp"
        hints.append(Hint("student.ffn_layer", "the FFN type differs (swiglufused for ViT-g)", ffn))
    if any(".ls1.gamma" in key for key in changed):
        hints.append(Hint("student.layerscale", "layer-scale is present in only one of weights and model"))
    if any(key.startswith("blocks.") for key in changed) and not hints:
        hints.append(Hint("student.arch", "the number of blocks differs", _weights_arch(flat)))
    return hints


def fit_report(model: nn.Module, state_dict: Mapping[str, Tensor]) -> FitReport:
    """Compare a backbone ``state_dict`` (flat or chunked block names) with ``model`` (chunked or not, possibly on
    the meta device)."""
    flat = chunked_to_flat(state_dict)
    if getattr(model, "chunked_blocks", False):
        state_dict = flat_to_chunked(flat, model.n_blocks, len(model.blocks))
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        (key, tuple(value.shape), tuple(expected[key].shape))
        for key, value in state_dict.items()
        if key in expected and tuple(value.shape) != tuple(expected[key].shape)
    ]
    hints = _hints(model, flat, missing, unexpected, mismatched) if missing or unexpected or mismatched else []
    return FitReport(dict(state_dict), missing, unexpected, mismatched, hints)


def load_strict(module: nn.Module, state_dict: Mapping[str, Tensor], source: object, what: str, advice: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)``, or :class:`WeightsMismatchError` listing every
    difference (then ending with ``advice``), raised before anything is copied."""
    report = fit_report(module, state_dict)
    report.raise_if_mismatched(source, what, advice=advice)
    module.load_state_dict(report.state_dict, strict=True)
    logger.info("loaded %s weights from %s", what, source)


def resize_pos_embed(pos_embed: Tensor, num_positions: int) -> Tensor:
    """Resize a ``[1, 1 + M*M, D]`` position table to ``[1, num_positions, D]`` (square grids, cls kept).

    Bicubic in float32 on the patch grid, cast back (what the trainer does to start at 224 px from 518 px weights).
    """
    old_grid, new_grid = math.isqrt(pos_embed.shape[1] - 1), math.isqrt(num_positions - 1)
    if old_grid**2 != pos_embed.shape[1] - 1 or new_grid**2 != num_positions - 1:
        raise ValueError(f"cannot resize pos_embed of {pos_embed.shape[1]} positions to {num_positions}: not square")
    cls_pos, patch_pos = pos_embed[:, :1], pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    grid = patch_pos.float().reshape(1, old_grid, old_grid, dim).permute(0, 3, 1, 2)  # [1, D, M, M]
    grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    patch_pos = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, dim).to(pos_embed.dtype)
    return torch.cat((cls_pos, patch_pos), dim=1)
