"""Weight files of the heads put on a frozen backbone (DINOv3's depther and segmentor): what a file holds, and
strict loading of the head alone or, when the file holds the backbone too, of the whole model.

A head file may be the released layout (the head's own keys), a checkpoint of the release's evaluation code
(``{"model": ...}``, with DDP's ``module.`` prefixes), ``{"state_dict": ...}``, or a whole model's state dict.
Files are read by :mod:`dinov2.models.weights` (``weights_only=True``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from dinov2.models.convert import strip_prefix
from dinov2.models.weights import load_strict, read_checkpoint

__all__ = ["HeadSource", "holds_backbone", "load_head_state", "read_head_state", "without_module"]

HeadSource = str | os.PathLike | Mapping[str, Any]  # a file, a URL or an already read state dict


def read_head_state(source: HeadSource) -> dict[str, Tensor]:
    """The state dict in ``source``, unwrapped from ``"model"`` / ``"state_dict"``, DDP's ``module.`` dropped."""
    checkpoint = source if isinstance(source, Mapping) else read_checkpoint(source, argument="weights")
    state = next((checkpoint[key] for key in ("model", "state_dict") if isinstance(checkpoint.get(key), Mapping)), None)
    return strip_prefix(dict(checkpoint if state is None else state), "module.")


def holds_backbone(state: Mapping[str, Any], backbone_prefix: str) -> bool:
    """Whether ``state`` holds a whole model (keys under ``backbone_prefix``), not only the head."""
    return any(key.startswith(backbone_prefix) for key in state)


def without_module(model: nn.Module, path: str) -> nn.Module:
    """A view of ``model`` without its submodule at the dotted ``path`` (e.g. the backbone), sharing every other
    parameter and buffer: loading a state dict into the view loads ``model`` but that submodule."""
    name, _, rest = path.partition(".")
    if name not in model._modules:
        raise ValueError(f"{type(model).__name__} has no submodule {name!r}; it has {', '.join(model._modules)}")
    view = copy.copy(model)
    view._modules = dict(model._modules)
    if rest:
        view._modules[name] = without_module(model._modules[name], rest)
    else:
        del view._modules[name]
    return view


def load_head_state(
    model: nn.Module, head: nn.Module, source: HeadSource, *, backbone_prefix: str, what: str, advice: str
) -> None:
    """Load ``source`` strictly into ``head`` (``model`` without its backbone), or into the whole ``model`` when it
    holds the backbone too; a mismatch raises before anything is copied, listing every difference."""
    state = read_head_state(source)
    name = "the given state dict" if isinstance(source, Mapping) else source
    if holds_backbone(state, backbone_prefix):
        load_strict(model, state, name, f"{what} and the backbone", advice)
    else:
        load_strict(head, state, name, what, advice)
