"""The one module that opens weight files: every source, file format and key layout is a table entry here.

A *source* is a URL (downloaded once into the ``torch.hub`` cache, ``<hub dir>/checkpoints/<file name>``), a local
file or folder, or an already read mapping. Every file is read with ``weights_only=True`` (never unpickled objects).

- :data:`READERS`, the file formats (the first whose ``accepts(path)`` is true opens it): a trainer checkpoint
  folder ``<output_dir>/model_<iteration:07d>`` (torch.distributed.checkpoint; its teacher, read on this process
  alone, never the optimizer state), a Hugging Face / timm model folder (``model.safetensors``, a sharded
  ``*.index.json``, ``pytorch_model.bin``), a ``.safetensors`` file, a ``torch.save`` file (memory-mapped).
- :data:`LAYOUTS`, the key layouts of what was read (the first whose ``matches(mapping)`` is true converts it; the
  pure conversions are in :mod:`dinov2.models.formats`): a whole training state (``{"model": {"student.*",
  "teacher.*"}}``: its teacher), Hugging Face ``transformers`` / timm names, a dense model / head
  (``decode_head.*``), and the catch-all DINOv2 layouts: a released hub backbone, a training export ``{"teacher":
  {"backbone.*", "dino_head.*", "ibot_head.*"}}``, with ``module.`` / ``_orig_mod.`` prefixes and flat or chunked
  (``blocks.<chunk>.<i>``) blocks.

Readers: :func:`read_checkpoint` (the mapping as stored), :func:`read_parts` (a training export's parts,
``backbone.*`` in hub layout + the heads), :func:`read_backbone_weights` (the flat hub-layout backbone),
:func:`read_shapes` (the shapes of :func:`read_parts`, from headers / metadata / memory maps: no tensor data is read)
and :func:`fingerprint` (size and CRC32 of the content: "this file changed"). :func:`load_backbone_weights` loads
strictly or raises :class:`WeightsMismatchError` with the :func:`fit_report` (:mod:`dinov2.models.weights_fit`).

A model family adds its formats and layouts from its own module: :func:`register_reader`, :func:`register_layout`
(tried before the built-in entries). :func:`_open` is the only function that opens a weights source; an opened
source is kept (a few, while their files are unchanged) until its tensors are taken, so that checking shapes and
then loading reads a file once.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import pickle
import re
import time
import urllib.error
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from dinov2.models import formats
from dinov2.models.convert import to_backbone_state_dict
from dinov2.models.convert_dinov3 import from_hf_dinov3
from dinov2.models.formats import PARTS, Layout
from dinov2.models.weights_fit import (
    CONFIG_ADVICE,
    FitReport,
    Hint,
    WeightsMismatchError,
    fit_report,
    load_strict,
    resize_pos_embed,
)
from dinov2.utils.io import file_crc32

logger = logging.getLogger("dinov2")

__all__ = [
    "CONFIG_ADVICE",
    "PARTS",
    "READERS",
    "LAYOUTS",
    "FitReport",
    "Hint",
    "Layout",
    "NotAWeightsFileError",
    "Reader",
    "Stored",
    "WeightsMismatchError",
    "download",
    "fingerprint",
    "fit_report",
    "is_model_folder",
    "is_url",
    "load_backbone_state_dict",
    "load_backbone_weights",
    "load_strict",
    "read_backbone_weights",
    "read_checkpoint",
    "read_parts",
    "read_shapes",
    "read_weights",
    "register_layout",
    "register_reader",
    "resize_pos_embed",
]

_URL_SCHEMES = ("http", "https", "ftp", "file", "s3")
_LISTED = 8  # keys listed in an error
_DCP_METADATA = ".metadata"
_DCP_MARKER = "COMPLETE"  # written last into our checkpoint folders, lists every file's size and CRC32
_FOLDER_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")  # HF / timm folders
_HF_MODEL_TYPES = ("dinov2", "dinov2_with_registers", "dinov3_vit", "dinov3_convnext")
_KEPT = 4  # opened sources kept for a later read
# A file modified this recently could change again within its timestamp's resolution: it is never kept.
_RACY_NS = 2_000_000_000
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


# ------------------------------------------------------------------------------------------------ tables
@dataclasses.dataclass(frozen=True)
class Stored:
    """An opened source: ``meta()``, its mapping with meta-device tensors (names, shapes, dtypes; no tensor data is
    read where the format has a header), and ``load()``, its mapping with CPU tensors. ``light``: it holds no
    tensor data in memory (a header, metadata or a memory map), so it may be kept for a later read."""

    meta: Callable[[], Any]
    load: Callable[[], Any]
    light: bool = True

    @classmethod
    def of(cls, content: Any, *, mapped: bool = False) -> Stored:
        """Content already read (``mapped``: memory-mapped, not in memory): its meta view costs nothing."""
        return cls(lambda: _to_meta(content), lambda: content, light=mapped)


@dataclasses.dataclass(frozen=True)
class Reader:
    """A file format: ``read(path)`` gives the mapping stored in an accepted file or folder; ``open`` (optional) a
    :class:`Stored` that gives shapes without reading tensor data (default: ``Stored.of(read(path))``)."""

    name: str
    accepts: Callable[[Path], bool]
    read: Callable[[Path], Mapping[str, Any]]
    open: Callable[[Path], Stored] | None = None


def _reader(name: str, accepts: Callable[[Path], bool], open_: Callable[[Path], Stored]) -> Reader:
    return Reader(name, accepts, lambda path: open_(path).load(), open_)


def register_reader(reader: Reader) -> Reader:
    """Add a file format (tried before the built-in ones; replaces an entry of the same name). Returns it."""
    READERS[:] = [reader, *(entry for entry in READERS if entry.name != reader.name)]
    return reader


def register_layout(layout: Layout) -> Layout:
    """Add a key layout (tried before the built-in ones; replaces an entry of the same name). Returns it."""
    LAYOUTS[:] = [layout, *(entry for entry in LAYOUTS if entry.name != layout.name)]
    return layout


# ------------------------------------------------------------------------------------------------ file formats
def _to_meta(content: Any) -> Any:
    if isinstance(content, Tensor):
        return torch.empty(content.shape, dtype=content.dtype, device="meta")
    if isinstance(content, Mapping):
        return {key: _to_meta(value) for key, value in content.items()}
    return content


def _merged(mappings: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mapping in mappings:
        out.update(mapping)
    return out


class NotAWeightsFileError(ValueError):
    """A file that cannot be read as weights: empty, truncated, not a PyTorch file, or holding Python objects that
    a ``weights_only`` load refuses. The message names the file and what it is not."""


_ZIP_MAGIC = b"PK\x03\x04"


def _torch_load(path: Path, **options) -> Any:
    """``torch.load(weights_only=True)`` whose failures name the file and what it is not (and never suggest turning
    ``weights_only`` off: nothing here unpickles arbitrary objects)."""
    if path.stat().st_size == 0:
        raise NotAWeightsFileError(f"{str(path)!r} is empty (0 bytes), not a weights file: copy or download it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, **options)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f" ({found.group(1)})" if found else ""
        raise NotAWeightsFileError(
            f"{str(path)!r} holds Python objects besides tensors and plain containers{what}: it is not a weights "
            "file that can be read safely. Save the model's state dict instead (torch.save(model.state_dict(), "
            "path)) or convert it to safetensors."
        ) from None
    except (EOFError, KeyError, RuntimeError) as error:
        if isinstance(error, RuntimeError) and "mmap" in str(error):
            raise  # an old-format file: the caller reads it without mapping
        with open(path, "rb") as f:
            head = f.read(16)
        size = path.stat().st_size
        if head.startswith(_ZIP_MAGIC):
            problem = f"is a truncated or corrupt PyTorch archive ({size} bytes): copy or download it again"
        else:
            problem = (
                f"is not a PyTorch weights file (it starts with {head!r}); expected a torch.save file, a "
                ".safetensors file, a Hugging Face / timm model folder or a trainer checkpoint folder"
            )
        raise NotAWeightsFileError(f"{str(path)!r} {problem}") from None


def _open_torch_file(path: Path) -> Stored:
    """Memory-mapped: tensor data is read when used and processes share the pages (files written with
    ``_use_new_zipfile_serialization=False`` cannot be mapped: read in full)."""
    try:
        return Stored.of(_torch_load(path, mmap=True), mapped=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return Stored.of(_torch_load(path))


def _open_safetensors(path: Path) -> Stored:
    """Shapes from the header; tensors read on ``load``."""
    from safetensors import safe_open

    handle = safe_open(str(path), framework="pt", device="cpu")

    def meta() -> dict[str, Tensor]:
        out = {}
        for key in handle.keys():
            view = handle.get_slice(key)
            if view.get_dtype() not in _SAFETENSORS_DTYPES:
                return _to_meta({key: handle.get_tensor(key) for key in handle.keys()})  # a rare dtype: read
            out[key] = torch.empty(view.get_shape(), dtype=_SAFETENSORS_DTYPES[view.get_dtype()], device="meta")
        return out

    return Stored(meta, lambda: {key: handle.get_tensor(key) for key in handle.keys()})


def _open_file(path: Path) -> Stored:
    return _open_safetensors(path) if path.suffix == ".safetensors" else _open_torch_file(path)


def _open_sharded(index_path: Path) -> Stored:
    """Every shard of a ``*.index.json`` (``{"weight_map": {name: shard file}}``)."""
    weight_map = json.loads(index_path.read_text()).get("weight_map")
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index_path} has no 'weight_map': not a sharded weights index")
    shards = [_open_file(index_path.parent / shard) for shard in sorted(set(weight_map.values()))]
    return Stored(lambda: _merged(s.meta() for s in shards), lambda: _merged(s.load() for s in shards))


def _folder_config(folder: Path) -> dict:
    """The folder's ``config.json`` (``{}`` without one); another model type is a clear error (timm folders
    name an ``architecture``, no ``model_type``)."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        return {}
    config = json.loads(config_path.read_text())
    model_type = config.get("model_type")
    if model_type is not None and model_type not in _HF_MODEL_TYPES:
        raise ValueError(
            f"{config_path} describes a {model_type!r} model, not DINOv2 (model_type {' or '.join(_HF_MODEL_TYPES)})"
        )
    return config


def is_model_folder(path: Path) -> bool:
    """A Hugging Face / timm model folder: one of ``model.safetensors``, its sharded index, ``pytorch_model.bin``."""
    return path.is_dir() and any((path / name).is_file() for name in _FOLDER_FILES)


def _open_model_folder(path: Path) -> Stored:
    config = _folder_config(path)
    name = next(name for name in _FOLDER_FILES if (path / name).is_file())
    stored = _open_sharded(path / name) if name.endswith(".index.json") else _open_file(path / name)
    if config.get("model_type") != "dinov3_vit":
        return stored
    # The RoPE periods are not in a transformers DINOv3 file; they follow from the head count in config.json.
    heads = int(config["num_attention_heads"])
    return Stored(
        lambda: from_hf_dinov3(stored.meta(), num_heads=heads), lambda: from_hf_dinov3(stored.load(), num_heads=heads)
    )


def _is_dcp_folder(path: Path) -> bool:
    return path.is_dir() and (path / _DCP_METADATA).is_file()


def _open_dcp_folder(path: Path) -> Stored:
    """``{"model": {...}}`` of a trainer checkpoint folder: its ``teacher.*`` tensors (all model tensors when there
    is no teacher, so that the layouts can say what is missing), read on this process alone (no collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    model = {
        key.removeprefix("model."): meta
        for key, meta in metadata.items()
        if key.startswith("model.") and isinstance(meta, TensorStorageMetadata)
    }
    chosen = {key: meta for key, meta in model.items() if key.startswith("teacher.")} or model
    if not chosen:
        raise ValueError(f"checkpoint folder {path} holds no 'model.*' tensors (first keys: {sorted(metadata)[:8]})")

    def tensors(device: str | None = None) -> dict[str, Tensor]:
        return {k: torch.empty(tuple(m.size), dtype=m.properties.dtype, device=device) for k, m in chosen.items()}

    def load() -> dict[str, Any]:
        buffers = tensors()
        with warnings.catch_warnings():  # DCP warns that it loads "in a single process": that is the intent here
            warnings.filterwarnings("ignore", message=".*(single process|distributed is disabled|uninitialized).*")
            dcp.load({"model": buffers}, checkpoint_id=str(path), no_dist=True)
        return {"model": buffers}

    return Stored(lambda: {"model": tensors("meta")}, load)


#: File formats, tried in order (a URL is downloaded first, then read as a local file); the last one is the
#: catch-all ``torch.save`` file.
READERS: list[Reader] = [
    _reader("torch.distributed.checkpoint folder", _is_dcp_folder, _open_dcp_folder),
    _reader("Hugging Face / timm model folder", is_model_folder, _open_model_folder),
    _reader("sharded weights index", lambda path: path.is_file() and path.name.endswith(".index.json"), _open_sharded),
    _reader("safetensors file", lambda path: path.is_file() and path.suffix == ".safetensors", _open_safetensors),
    _reader("torch file", Path.is_file, _open_torch_file),
]


# ------------------------------------------------------------------------------------------------ key layouts
#: Key layouts, tried in order; the last entry accepts everything (the DINOv2 layouts).
LAYOUTS: list[Layout] = [
    Layout(
        "meta-architecture state dict",
        formats.is_training_state,
        lambda checkpoint: formats.backbone_of(formats.training_state_parts(checkpoint)),
        formats.training_state_parts,
    ),
    Layout("Hugging Face transformers / timm", formats.is_peer_layout, formats.peer_to_backbone),
    Layout(
        "dense model or head (decode_head.*)",
        formats.is_dense_model,
        lambda checkpoint: formats.backbone_of(formats.dense_parts(checkpoint)),
        formats.dense_parts,
    ),
    Layout("DINOv2 backbone / training export", lambda checkpoint: True, to_backbone_state_dict, formats.export_parts),
]


# ------------------------------------------------------------------------------------------------ sources
def is_url(path: object) -> bool:
    """True for ``http(s)://``, ``ftp://``, ``file://`` and ``s3://`` strings (the DINOv3 hub's name and argument)."""
    return isinstance(path, str) and urlparse(path).scheme in _URL_SCHEMES


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
        # A command-line flag gets a command-line hint, a keyword argument a Python one.
        hint = f"{argument} /path/to/{filename}" if argument.startswith("--") else f"{argument}='/path/to/{filename}'"
        raise RuntimeError(
            f"could not download {url} ({err}). Without network access, fetch the file on another machine "
            f"and pass its path instead: {hint}"
        ) from err
    return cached


def _existing(source: str | os.PathLike, argument: str) -> Path:
    """The local path of a source (a URL is downloaded), which must exist."""
    if source is None or str(source) == "":
        raise ValueError(
            f"{argument} is required: pass a training export (<output_dir>/eval/<iter>/teacher_checkpoint.pth), "
            "a hub backbone file (e.g. dinov2_vits14_pretrain.pth), a checkpoint folder or a URL"
        )
    path = download(str(source), argument=argument) if is_url(str(source)) else Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"{argument} {str(source)!r} does not exist (looked in {os.getcwd()} for a relative path); pass a "
            "teacher_checkpoint.pth, a hub backbone .pth, a checkpoint folder <output_dir>/model_<iteration> or a URL"
        )
    return path


def _local(source: str | os.PathLike, argument: str) -> Path:
    """The local path of a source that one of :data:`READERS` accepts."""
    path = _existing(source, argument)
    if not any(reader.accepts(path) for reader in READERS):
        raise ValueError(
            f"{argument} {str(source)!r} is neither a weights file nor a checkpoint folder (no {_DCP_METADATA} file "
            "inside); pass a .pth file, a checkpoint folder <output_dir>/model_<iteration> or a URL"
        )
    return path


def _open(path: Path) -> Stored:
    """Open a local source with the first reader that accepts it: the one place where weights are opened."""
    reader = next(reader for reader in READERS if reader.accepts(path))
    return reader.open(path) if reader.open is not None else Stored.of(reader.read(path))


_OPENED: collections.OrderedDict[tuple, Stored] = collections.OrderedDict()


def _identity(path: Path) -> tuple | None:
    """(file, size, mtime, inode) of every file of ``path``; None when one changed too recently to tell."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [(str(file.resolve()), file.stat()) for file in files]
    if any(time.time_ns() - stat.st_mtime_ns < _RACY_NS for _, stat in stats):
        return None
    return tuple((name, stat.st_size, stat.st_mtime_ns, stat.st_ino) for name, stat in stats)


def _stored(path: Path, *, keep: bool) -> Stored:
    """The opened source at ``path``: kept for a later read (``keep``) or handed over (taken out of the cache)."""
    key = _identity(path)
    stored = _OPENED.pop(key, None) if key is not None else None
    stored = stored if stored is not None else _open(path)
    if keep and key is not None and stored.light:
        _OPENED[key] = stored
        while len(_OPENED) > _KEPT:
            _OPENED.popitem(last=False)
    return stored


def _as_mapping(content: Any, source: object, argument: str) -> Mapping[str, Any]:
    if not isinstance(content, Mapping):
        raise ValueError(f"{argument} {str(source)!r} holds a {type(content).__name__}, not a state dict")
    return content


# ------------------------------------------------------------------------------------------------ readers
def read_checkpoint(source: str | os.PathLike, *, argument: str = "weights") -> Mapping[str, Any]:
    """The mapping stored at ``source`` (URL, file or folder; see the module docstring), CPU tensors.

    ``argument`` (``weights``, ``--pretrained-weights``, ``student.pretrained_weights``) names the source in errors.
    """
    return _as_mapping(_stored(_local(source, argument), keep=False).load(), source, argument)


def _layout(checkpoint: Mapping[str, Any]) -> Layout:
    return next(layout for layout in LAYOUTS if layout.matches(checkpoint))


def _with_tensors(state_dict: dict[str, Any], checkpoint: Mapping[str, Any], source: object, argument: str) -> dict:
    """``state_dict``, unless it holds no tensor (then a ValueError naming the source and its keys)."""
    if any(isinstance(value, Tensor) for value in state_dict.values()):
        return state_dict
    name = "the given state dict" if isinstance(source, Mapping) else repr(str(source))
    raise ValueError(
        f"{argument} {name} holds no tensors at the top level or under 'teacher' / 'model' / 'state_dict' "
        f"(keys: {sorted(map(str, checkpoint))[:_LISTED]}); is it a backbone checkpoint?"
    )


def _parts(checkpoint: Mapping[str, Any], source: object, argument: str) -> dict[str, Tensor]:
    layout = _layout(checkpoint)
    if layout.to_parts is not None:
        parts = layout.to_parts(checkpoint)
    else:
        parts = {f"backbone.{key}": value for key, value in layout.to_backbone(checkpoint).items()}
    return _with_tensors(parts, checkpoint, source, argument)


def read_parts(source: str | os.PathLike | Mapping[str, Any], *, argument: str = "weights") -> dict[str, Tensor]:
    """A training export's parts from any source: ``backbone.*`` (hub layout, flat blocks) and the heads the source
    holds (``dino_head.*``, ``ibot_head.*``; none for a hub backbone or the peers' formats). Loss centres are never
    part of it."""
    checkpoint = source if isinstance(source, Mapping) else read_checkpoint(source, argument=argument)
    return _parts(checkpoint, source, argument)


def read_backbone_weights(
    source: str | os.PathLike | Mapping[str, Any], *, argument: str = "weights"
) -> dict[str, Tensor]:
    """A flat, hub-layout backbone state dict from a source (or an already read mapping)."""
    checkpoint = source if isinstance(source, Mapping) else read_checkpoint(source, argument=argument)
    return _with_tensors(_layout(checkpoint).to_backbone(checkpoint), checkpoint, source, argument)


def read_shapes(
    source: str | os.PathLike | Mapping[str, Any], *, argument: str = "weights"
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of :func:`read_parts` (``backbone.*``, heads), without reading tensor data: from the header of
    a safetensors file, the metadata of a checkpoint folder, the memory map of a ``.pth`` file. The source stays
    open for the read that usually follows (see the module docstring)."""
    if isinstance(source, Mapping):
        checkpoint = _to_meta(source)
    else:
        checkpoint = _as_mapping(_stored(_local(source, argument), keep=True).meta(), source, argument)
    parts = _parts(checkpoint, source, argument)  # the layouts convert meta tensors: names and shapes only
    return {key: tuple(value.shape) for key, value in parts.items() if isinstance(value, Tensor)}


def fingerprint(source: str | os.PathLike, *, argument: str = "weights") -> dict[str, object]:
    """``{"path", "size", "crc32"}`` of a source's content (a moved copy has the same size and CRC32).

    A file: its size and CRC32. One of our checkpoint folders: its completion marker, which lists the size and
    CRC32 of every file of the checkpoint. Another folder: the sizes and CRC32s of all its files.
    """
    path = _existing(source, argument)
    if path.is_file():
        files = [path]
    elif (path / _DCP_MARKER).is_file():
        files = [path / _DCP_MARKER]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file())
    crc = 0
    for file in files:
        crc = zlib.crc32(f"{file.relative_to(path) if file != path else ''}:{file_crc32(file)}".encode(), crc)
    return {"path": str(path.resolve()), "size": sum(f.stat().st_size for f in files), "crc32": crc}


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


# ------------------------------------------------------------------------------------------------ formats' old names
def read_weights(path: str | os.PathLike) -> Any:
    """The raw contents of a weights file or model folder (no key conversion; a transformers DINOv3 ViT folder
    comes in the release's keys, since its RoPE periods need the folder's config), loaded on the CPU."""
    path = Path(path).expanduser()
    if path.is_dir() and not _is_dcp_folder(path):
        _folder_config(path)
        if not is_model_folder(path):
            raise FileNotFoundError(
                f"weights folder {path} holds none of {', '.join(_FOLDER_FILES)}: pass a Hugging Face or timm model "
                "folder, or the weights file itself"
            )
    elif not path.exists():
        raise FileNotFoundError(f"weights {path} do not exist: pass a weights file or a model folder")
    return _stored(_local(path, "weights"), keep=False).load()


def load_backbone_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> dict[str, Tensor]:
    """Our backbone state dict (hub layout: flat ``blocks.<i>``) from weights in any supported format.

    ``source``: a model folder, a weights file or a loaded state dict / checkpoint. Raises ``FileNotFoundError``
    for a missing file or an empty folder and ``ValueError`` for keys that belong to no DINOv2 backbone of the
    detected format.
    """
    checkpoint = read_weights(source) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"weights {source!r} hold a {type(checkpoint).__name__}, not a state dict")
    return read_backbone_weights(checkpoint, argument="weights")
