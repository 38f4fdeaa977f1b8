"""Reading backbone weights from any source, and one report of how they fit a model.

Every reader of backbone weights goes through this module: the hub entry points (``weights=``), evaluation
(``--pretrained-weights``) and the trainer (``student.pretrained_weights``). A *source* is

- a URL: downloaded once into the ``torch.hub`` cache (``<hub dir>/checkpoints/<file name>``), then read as a
  local file (never unpickled: ``weights_only=True``);
- a local ``.pth`` / ``.pt`` file: a released hub backbone (``dinov2_vitl14_pretrain.pth``), a training export
  (``teacher_checkpoint.pth``: ``{"teacher": {"backbone.*", "dino_head.*"}}``), a whole meta-architecture state
  dict (``{"model": {"student.*", "teacher.*"}}``) or any backbone state dict with ``module.`` / ``backbone.`` /
  ``_orig_mod.`` prefixes and flat or chunked (``blocks.<chunk>.<index>``) block names;
- a trainer checkpoint folder ``<output_dir>/model_<iteration:07d>`` (torch.distributed.checkpoint): its teacher
  backbone, read on this process alone (no collective), without the optimizer state;
- a Hugging Face model folder or a ``.safetensors`` file, and timm or ``transformers`` key names in any file
  (:mod:`dinov2.models.formats`: the format is detected from the tensor names and converted strictly).

Reading is two table look-ups, done in :func:`read_checkpoint` and :func:`read_backbone_weights` only:
:data:`READERS` (the first whose ``accepts(path)`` is true reads the file or folder into a mapping) and
:data:`LAYOUTS` (the first whose ``matches(mapping)`` is true converts it to a flat, hub-layout backbone state
dict). To add a format, write its detector and converter (as :mod:`dinov2.models.formats` does for Hugging Face
and timm) and add one entry to a table, before the catch-all entries.

:func:`fit_report` compares a state dict with a model (missing / unexpected keys, shape mismatches) and names
the config key that most likely explains each difference (``student.arch``, ``student.num_register_tokens``,
``crops.global_crops_size`` for the position table, ...). :func:`load_backbone_weights` loads strictly or raises
:class:`WeightsMismatchError` with that report, before anything is copied.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import urllib.error
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dinov2.models import formats
from dinov2.models.convert import chunked_to_flat, flat_to_chunked, to_backbone_state_dict

logger = logging.getLogger("dinov2")

__all__ = [
    "CONFIG_ADVICE",
    "WeightsMismatchError",
    "Reader",
    "Layout",
    "READERS",
    "LAYOUTS",
    "Hint",
    "FitReport",
    "is_url",
    "download",
    "read_checkpoint",
    "read_backbone_weights",
    "fit_report",
    "resize_pos_embed",
    "load_backbone_weights",
]

_URL_SCHEMES = ("http", "https", "ftp", "file", "s3")
_LISTED = 8  # keys listed per category in a report
_DCP_METADATA = ".metadata"
_DCP_BACKBONE_PREFIX = "model.teacher."  # trainer checkpoints: {"model": meta-architecture state dict, ...}


CONFIG_ADVICE = "Use the config the weights were trained with (its student.* and crops.global_crops_size)."


class WeightsMismatchError(RuntimeError):
    """Weights do not fit the model (nothing was loaded); the message lists every difference and hints."""


# ------------------------------------------------------------------------------------------------ sources
@dataclasses.dataclass(frozen=True)
class Reader:
    """Reads one kind of local source (file or folder) into a mapping (a checkpoint or a state dict)."""

    name: str
    accepts: Callable[[Path], bool]
    read: Callable[[Path], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class Layout:
    """Turns one key layout of a read mapping into a flat, hub-layout backbone state dict."""

    name: str
    matches: Callable[[Mapping[str, Any]], bool]
    to_backbone: Callable[[Mapping[str, Any]], dict[str, Tensor]]


def _is_dcp_folder(path: Path) -> bool:
    return path.is_dir() and (path / _DCP_METADATA).is_file()


def _read_dcp_folder(path: Path) -> dict[str, Any]:
    """The teacher of a trainer checkpoint folder as ``{"teacher": {"backbone.*": ...}}`` (this process only)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    state_dict = {
        key: torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
        for key, meta in metadata.items()
        if key.startswith(_DCP_BACKBONE_PREFIX) and isinstance(meta, TensorStorageMetadata)
    }
    if not state_dict:
        keys = sorted(metadata)[:_LISTED]
        raise ValueError(f"checkpoint folder {path} holds no '{_DCP_BACKBONE_PREFIX}*' tensors (first keys: {keys})")
    with warnings.catch_warnings():  # DCP warns that it loads "in a single process": that is the intent here
        warnings.filterwarnings("ignore", message=".*(single process|distributed is disabled|uninitialized).*")
        dcp.load(state_dict, checkpoint_id=str(path), no_dist=True)
    return {"teacher": {key.removeprefix(_DCP_BACKBONE_PREFIX): value for key, value in state_dict.items()}}


def _torch_load(path: Path) -> Mapping[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _meta_architecture_to_backbone(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """``{"model": {"teacher.backbone.*", "student.*", ...}}`` (or bare): the teacher backbone."""
    state_dict = checkpoint.get("model", checkpoint)
    teacher = {key.removeprefix("teacher."): value for key, value in state_dict.items() if key.startswith("teacher.")}
    return to_backbone_state_dict(teacher)


def _is_meta_architecture(checkpoint: Mapping[str, Any]) -> bool:
    state_dict = checkpoint.get("model", checkpoint)
    return isinstance(state_dict, Mapping) and any(str(k).startswith("teacher.backbone.") for k in state_dict)


def _is_peer_layout(checkpoint: Mapping[str, Any]) -> bool:
    """Hugging Face transformers or timm key names (``dinov2.models.formats.detect_format``)."""
    return formats.detect_format(to_backbone_state_dict(checkpoint)) != "dinov2"


#: Local sources, tried in order (a URL is downloaded first, then read as a local file).
READERS: list[Reader] = [
    Reader("torch.distributed.checkpoint folder", _is_dcp_folder, _read_dcp_folder),
    Reader("Hugging Face / timm model folder", formats.is_model_folder, formats.read_weights),
    Reader("safetensors file", lambda path: path.is_file() and path.suffix == ".safetensors", formats.read_weights),
    Reader("torch file", Path.is_file, _torch_load),
]

#: Key layouts, tried in order; the last entry accepts everything (the DINOv2 layouts of convert.py).
LAYOUTS: list[Layout] = [
    Layout("meta-architecture state dict", _is_meta_architecture, _meta_architecture_to_backbone),
    Layout("Hugging Face transformers / timm", _is_peer_layout, formats.load_backbone_state_dict),
    Layout("DINOv2 backbone / training export", lambda checkpoint: True, to_backbone_state_dict),
]


def is_url(source: object) -> bool:
    """True for ``http(s)://``, ``ftp://``, ``file://`` and ``s3://`` strings."""
    return isinstance(source, str) and urlparse(source).scheme in _URL_SCHEMES


def download(url: str, *, argument: str = "weights", progress: bool = True) -> Path:
    """The ``torch.hub`` cache copy of ``url`` (downloaded when absent); ``argument`` is named in errors."""
    filename = os.path.basename(urlparse(url).path) or "weights.pth"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cached), progress=progress)
    except (urllib.error.URLError, OSError) as err:
        raise RuntimeError(
            f"could not download {url} ({err}). Without network access, fetch the file on another machine "
            f"and pass its path instead: {argument}='/path/to/{filename}'"
        ) from err
    return cached


def read_checkpoint(source: str | os.PathLike, *, argument: str = "weights") -> Mapping[str, Any]:
    """The mapping stored at ``source`` (URL, file or checkpoint folder; see the module docstring).

    ``argument`` (``weights``, ``--pretrained-weights``, ``student.pretrained_weights``) names the source in errors.
    """
    if source is None or str(source) == "":
        raise ValueError(
            f"{argument} is required: pass a training export (<output_dir>/eval/<iter>/teacher_checkpoint.pth), "
            "a hub backbone file (e.g. dinov2_vits14_pretrain.pth), a checkpoint folder or a URL"
        )
    path = download(str(source), argument=argument) if is_url(str(source)) else Path(source).expanduser()
    reader = next((reader for reader in READERS if reader.accepts(path)), None)
    if reader is None and path.exists():
        raise ValueError(
            f"{argument} {str(source)!r} is neither a weights file nor a checkpoint folder (no {_DCP_METADATA} file "
            "inside); pass a .pth file, a checkpoint folder <output_dir>/model_<iteration> or a URL"
        )
    if reader is None:
        raise FileNotFoundError(
            f"{argument} {str(source)!r} does not exist (looked in {os.getcwd()} for a relative path); pass a "
            "teacher_checkpoint.pth, a hub backbone .pth, a checkpoint folder <output_dir>/model_<iteration> or a URL"
        )
    checkpoint = reader.read(path)
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{argument} {str(source)!r} holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint


def read_backbone_weights(
    source: str | os.PathLike | Mapping[str, Any], *, argument: str = "weights"
) -> dict[str, Tensor]:
    """A flat, hub-layout backbone state dict from a source (or an already read mapping)."""
    checkpoint = source if isinstance(source, Mapping) else read_checkpoint(source, argument=argument)
    layout = next(layout for layout in LAYOUTS if layout.matches(checkpoint))
    state_dict = layout.to_backbone(checkpoint)
    if not any(isinstance(value, Tensor) for value in state_dict.values()):
        name = "the given state dict" if isinstance(source, Mapping) else repr(str(source))
        raise ValueError(
            f"{argument} {name} holds no tensors at the top level or under 'teacher' / 'model' / 'state_dict' "
            f"(keys: {sorted(checkpoint)[:_LISTED]}); is it a backbone checkpoint?"
        )
    return state_dict


# ------------------------------------------------------------------------------------------------ fit report
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

    def raise_if_mismatched(
        self,
        source: object,
        what: str = "the backbone built from the config",
        setter: str | None = None,
        advice: str = CONFIG_ADVICE,
    ) -> None:
        """Raise :class:`WeightsMismatchError` with :meth:`message` unless the weights fit."""
        if not self.ok:
            raise WeightsMismatchError(self.message(source, what, setter, advice))


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


def load_backbone_weights(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Any],
    *,
    argument: str = "weights",
    what: str = "the backbone built from the config",
    setter: str | None = None,
    resize_position_table: bool = False,
) -> FitReport:
    """Read ``source`` and load it into ``model`` strictly, or raise :class:`WeightsMismatchError` (nothing copied).

    ``resize_position_table``: resize a position table of another size (:func:`resize_pos_embed`) instead of
    reporting it. Returns the (clean) report.
    """
    state_dict = read_backbone_weights(source, argument=argument)
    expected = model.state_dict().get("pos_embed")
    pos = state_dict.get("pos_embed")
    if resize_position_table and pos is not None and expected is not None and pos.shape != expected.shape:
        logger.info("resizing pretrained pos_embed from %s to %s", tuple(pos.shape), tuple(expected.shape))
        state_dict["pos_embed"] = resize_pos_embed(pos, expected.shape[1])
    report = fit_report(model, state_dict)
    name = "the given state dict" if isinstance(source, Mapping) else source
    report.raise_if_mismatched(name, what, setter)
    model.load_state_dict(report.state_dict, strict=True)
    logger.info("Loaded %d backbone tensors from %s", len(report.state_dict), name)
    return report
