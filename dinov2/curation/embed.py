"""Embed a dataset with a backbone: L2-normalised features written as float16 ``.npy`` shards + identities.

Any backbone the evaluation scripts accept (a config + released hub weights, a training export, a URL) and any
dataset string. Images go through the evaluation transform (resize the short side to ``resize_size``, bicubic;
centre crop ``crop_size``; ImageNet normalisation; released: 256 / 224); the embedding is the L2-normalised
output of ``model(images)`` (the class token), stored in float16 (unit norm kept within ~1e-3).

Rows follow the dataset order, in shards of ``shard_size`` rows (``shard-<i>.npy`` + ``shard-<i>.txt``, the
identities: each row's sample description, e.g. its file path). All ranks extract each shard together (each
rank computes every world-th image and the features are gathered) and rank 0 writes it, so the files do not
depend on the number of processes. A finished shard is never recomputed: re-running the same command resumes.
``meta.json`` (see :mod:`dinov2.curation.arrays`) and ``embed.json`` are written last.

Unreadable images (truncated, not an image) are never replaced by other images: they get no row, so rows and
identities always correspond. Each shard lists them in ``shard-<i>.unreadable.txt`` (``<dataset index>\t<identity>``);
the finished run lists them in ``unreadable.txt``, counts them in ``embed.json`` / ``meta.json`` (``unreadable``)
and, when there are any, writes ``dataset_indices.npy`` (int64 [rows]: the dataset index of each row; without it
row ``i`` is sample ``i``). With ``strict`` the step stops at the first shard with unreadable images, naming them.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from dinov2.curation import parallel
from dinov2.curation._features import extract_normalised
from dinov2.curation.arrays import EMBEDDINGS_FORMAT
from dinov2.curation.files import begin_step, load_npy, mark_done, save_npy, write_json
from dinov2.data import make_dataset
from dinov2.data.datasets.extended import refuse_unreadable
from dinov2.data.transforms import make_classification_eval_transform
from dinov2.utils.io import atomic_write_text

logger = logging.getLogger("dinov2")

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "DATASET_INDICES",
    "UNREADABLE",
    "dataset_indices",
    "embed_dataset",
    "embed_dataset_str",
    "identity",
]

DEFAULT_SHARD_SIZE = 1 << 18  # rows per shard: 0.5 GiB in float16 at dim 1024
UNREADABLE = "unreadable.txt"  # the identities of the images left out, one a line
DATASET_INDICES = "dataset_indices.npy"  # the dataset index of each row, when images were left out
_STRICT_FIX = "remove or replace these files, or embed without strict to leave them out (listed in unreadable.txt)"


def identity(dataset, index: int) -> str:
    """One line describing sample ``index`` (its file path for folder datasets)."""
    describe = getattr(dataset, "describe_sample", None)
    text = str(describe(index)) if describe is not None else str(index)
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def dataset_indices(embeddings: str | Path, rows) -> np.ndarray:
    """The dataset index (int64) of each of ``rows`` of the embeddings at ``embeddings`` (an ``embed`` folder that
    left images out has ``dataset_indices.npy``; otherwise row ``i`` is sample ``i``)."""
    rows, path = np.asarray(rows, dtype=np.int64), Path(embeddings) / DATASET_INDICES
    return np.asarray(load_npy(path, "dataset indices")[rows], dtype=np.int64) if path.is_file() else rows


def images_in_row_order(embeddings: str | Path, dataset):
    """``dataset`` indexed by row of the embeddings at ``embeddings``: a :class:`~torch.utils.data.Subset` through
    ``dataset_indices.npy`` when ``embed`` left unreadable images out, else ``dataset`` itself."""
    path = Path(embeddings) / DATASET_INDICES
    return Subset(dataset, load_npy(path, "dataset indices", mmap=False).tolist()) if path.is_file() else dataset


def _embed_shard(model, dataset, rows: range, stem: Path, strict: bool, settings: dict) -> tuple[int, int]:
    """Collective: embed the readable ``rows`` of ``dataset`` into ``<stem>.npy`` + ``<stem>.txt`` and list the
    unreadable ones in ``<stem>.unreadable.txt`` (rank 0); returns ``(rows written, dim)``."""
    features, dropped = extract_normalised(model, Subset(dataset, rows), **settings)
    if strict:
        refuse_unreadable(Subset(dataset, rows), dropped, "embeddings", fix=_STRICT_FIX)
    left_out = {rows[int(i)] for i in dropped}
    if parallel.is_main():
        listed = "".join(f"{i}\t{identity(dataset, i)}\n" for i in sorted(left_out))
        atomic_write_text(stem.with_suffix(".unreadable.txt"), listed)
        atomic_write_text(
            stem.with_suffix(".txt"), "".join(identity(dataset, i) + "\n" for i in rows if i not in left_out)
        )
        save_npy(stem.with_suffix(".npy"), features.half().numpy())  # written last: its presence marks the shard done
    parallel.barrier()
    return int(features.shape[0]), int(features.shape[1])


def _left_out(stem: Path) -> list[tuple[int, str]]:
    """``(dataset index, identity)`` of the images a finished shard left out (none for shards of older runs)."""
    path = stem.with_suffix(".unreadable.txt")
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return [(int(index), text) for index, text in (line.split("\t", 1) for line in lines)]


def _write_report(output_dir: Path, left_out: list[tuple[int, str]], shard_rows: list[range]) -> None:
    """``unreadable.txt`` and, when images were left out, ``dataset_indices.npy`` (main process)."""
    atomic_write_text(output_dir / UNREADABLE, "".join(text + "\n" for _, text in left_out))
    (output_dir / DATASET_INDICES).unlink(missing_ok=True)
    if left_out:
        skip = {index for index, _ in left_out}
        kept = np.fromiter((i for rows in shard_rows for i in rows if i not in skip), dtype=np.int64)
        save_npy(output_dir / DATASET_INDICES, kept)
        logger.warning(
            "embed: %d unreadable image(s) left out (no row), listed in %s", len(left_out), output_dir / UNREADABLE
        )


def embed_dataset(
    model: torch.nn.Module,
    dataset,
    output_dir: str | Path,
    *,
    batch_size: int = 64,
    num_workers: int = 8,
    shard_size: int = DEFAULT_SHARD_SIZE,
    autocast_dtype: torch.dtype = torch.float32,
    progress: bool = True,
    params: dict | None = None,
    strict: bool = False,
) -> Path:
    """Collective: embed every readable sample of ``dataset`` (transformed images) into ``output_dir``; returns it.

    ``params`` (the dataset string, the model, the transform) are recorded and checked on a re-run. Unreadable
    images are left out and listed (see the module docstring), or stop the step with ``strict``.
    """
    output_dir = Path(output_dir)
    count = len(dataset)
    params = dict(params or {}, count=count, shard_size=shard_size)
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"--shard-size and --batch-size must be >= 1, got {shard_size} and {batch_size}")
    if begin_step(output_dir, "embed", params):
        return output_dir
    settings = {"batch_size": batch_size, "num_workers": num_workers, "autocast_dtype": autocast_dtype}
    settings["progress"] = progress
    n_shards = math.ceil(count / shard_size)
    shards, shard_rows, left_out, dim, start_time, computed = [], [], [], 0, time.perf_counter(), 0
    for shard in range(n_shards):
        rows = range(shard * shard_size, min(count, (shard + 1) * shard_size))
        name = f"shard-{shard:05d}"
        if (output_dir / f"{name}.npy").is_file() and (output_dir / f"{name}.txt").is_file():
            written, shard_dim = np.load(output_dir / f"{name}.npy", mmap_mode="r").shape
        else:
            tic = time.perf_counter()
            written, shard_dim = _embed_shard(model, dataset, rows, output_dir / name, strict, settings)
            computed += len(rows)
            rate = len(rows) / max(time.perf_counter() - tic, 1e-9)
            left = (count - rows.stop) * (time.perf_counter() - start_time) / computed
            logger.info(
                "embed: shard %d/%d (%d images) at %.1f images/s; about %.0f s left",
                shard + 1,
                n_shards,
                len(rows),
                rate,
                left,
            )
        dim = max(dim, shard_dim)
        if written:  # a shard without a readable image stays on disk (done) but out of meta.json
            shards.append({"file": f"{name}.npy", "identities": f"{name}.txt", "rows": int(written)})
        shard_rows.append(rows)
        left_out += _left_out(output_dir / name)
    rows_total = count - len(left_out)
    if not shards:
        raise ValueError(f"embed: none of the {count} images is readable (listed in the shards' .unreadable.txt)")
    if parallel.is_main():
        _write_report(output_dir, left_out, shard_rows)
        meta = {"format": EMBEDDINGS_FORMAT, "version": 1, "count": rows_total, "dim": int(dim), "dtype": "float16"}
        meta["unreadable"] = len(left_out)
        write_json(output_dir / "meta.json", {**meta, "shards": shards, "params": params})
        mark_done(output_dir, "embed", params, count=rows_total, dim=int(dim), unreadable=len(left_out))
    parallel.barrier()
    logger.info("embed: %d of %d images embedded, %d unreadable left out", rows_total, count, len(left_out))
    return output_dir


def embed_dataset_str(
    model: torch.nn.Module, autocast_dtype: torch.dtype, dataset_str: str, output_dir: str | Path, settings, progress
) -> Path:
    """Collective: :func:`embed_dataset` of the images named by ``dataset_str`` through the evaluation transform.

    ``settings`` (the ``embed`` step's flags or the curation config's ``embed`` section) gives the transform
    (``crop_size``, ``resize_size``), the backbone recorded with the embeddings (``config_file``,
    ``pretrained_weights``, ``opts``) and ``batch_size``, ``num_workers``, ``shard_size``.
    """
    transform = make_classification_eval_transform(resize_size=settings.resize_size, crop_size=settings.crop_size)
    dataset = make_dataset(dataset_str=dataset_str, transform=transform)
    params = {
        "dataset": dataset_str,
        "config_file": settings.config_file,
        "opts": list(settings.opts),
        "pretrained_weights": str(settings.pretrained_weights),
        "crop_size": settings.crop_size,
        "resize_size": settings.resize_size,
    }
    return embed_dataset(
        model,
        dataset,
        output_dir,
        strict=bool(getattr(settings, "strict", False)) or bool(getattr(dataset, "strict", False)),
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
        shard_size=settings.shard_size,
        autocast_dtype=autocast_dtype,
        progress=progress,
        params=params,
    )
