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
from dinov2.curation.files import begin_step, mark_done, save_npy, write_json
from dinov2.data import make_dataset
from dinov2.data.transforms import make_classification_eval_transform
from dinov2.utils.io import atomic_write_text

logger = logging.getLogger("dinov2")

__all__ = ["DEFAULT_SHARD_SIZE", "embed_dataset", "embed_dataset_str", "identity"]

DEFAULT_SHARD_SIZE = 1 << 18  # rows per shard: 0.5 GiB in float16 at dim 1024


def identity(dataset, index: int) -> str:
    """One line describing sample ``index`` (its file path for folder datasets)."""
    describe = getattr(dataset, "describe_sample", None)
    text = str(describe(index)) if describe is not None else str(index)
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _embed_shard(model, dataset, rows: range, stem: Path, batch_size, num_workers, autocast_dtype, progress) -> int:
    """Collective: embed ``rows`` of ``dataset`` into ``<stem>.npy`` + ``<stem>.txt`` (rank 0); returns the dim."""
    features = extract_normalised(
        model,
        Subset(dataset, rows),
        batch_size=batch_size,
        num_workers=num_workers,
        autocast_dtype=autocast_dtype,
        progress=progress,
    )
    if parallel.is_main():
        atomic_write_text(stem.with_suffix(".txt"), "".join(identity(dataset, i) + "\n" for i in rows))
        save_npy(stem.with_suffix(".npy"), features.half().numpy())  # written last: its presence marks the shard done
    parallel.barrier()
    return int(features.shape[1])


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
) -> Path:
    """Collective: embed every sample of ``dataset`` (transformed images) into ``output_dir``; returns it.

    ``params`` (the dataset string, the model, the transform) are recorded and checked on a re-run.
    """
    output_dir = Path(output_dir)
    count = len(dataset)
    params = dict(params or {}, count=count, shard_size=shard_size)
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"--shard-size and --batch-size must be >= 1, got {shard_size} and {batch_size}")
    if begin_step(output_dir, "embed", params):
        return output_dir
    n_shards = math.ceil(count / shard_size)
    shards, dim, start_time, computed = [], None, time.perf_counter(), 0
    for shard in range(n_shards):
        rows = range(shard * shard_size, min(count, (shard + 1) * shard_size))
        name = f"shard-{shard:05d}"
        shards.append({"file": f"{name}.npy", "identities": f"{name}.txt", "rows": len(rows)})
        if (output_dir / f"{name}.npy").is_file() and (output_dir / f"{name}.txt").is_file():
            dim = np.load(output_dir / f"{name}.npy", mmap_mode="r").shape[1]
            continue
        tic = time.perf_counter()
        dim = _embed_shard(model, dataset, rows, output_dir / name, batch_size, num_workers, autocast_dtype, progress)
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
    if parallel.is_main():
        meta = {"format": EMBEDDINGS_FORMAT, "version": 1, "count": count, "dim": int(dim), "dtype": "float16"}
        write_json(output_dir / "meta.json", {**meta, "shards": shards, "params": params})
        mark_done(output_dir, "embed", params, count=count, dim=int(dim))
    parallel.barrier()
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
        batch_size=settings.batch_size,
        num_workers=settings.num_workers,
        shard_size=settings.shard_size,
        autocast_dtype=autocast_dtype,
        progress=progress,
        params=params,
    )
