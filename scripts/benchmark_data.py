#!/usr/bin/env python
"""Data-pipeline throughput per CPU core: decode, decode + multi-crop augmentation, collate.

Runs the released pipeline (PIL + torchvision v1 transforms, ``fast=False``) and the fast tensor
path (``fast=True``) side by side on real JPEG files (the synthetic set, 500x375 by default), in one
process with one intra-op thread, and prints a markdown table. Throughput is measured in CPU time of
this thread (images per CPU-second = images/s per core), which is robust to other load on the
machine; wall-clock figures are printed too.

    PYTHONPATH=. python scripts/benchmark_data.py                   # 2x224 + 8x96 crops, 200 images
    PYTHONPATH=. python scripts/benchmark_data.py --images 500 --loader-workers 4
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from dinov2.data import DataAugmentationDINO, MaskingGenerator, SamplerType, collate_data_and_cast, make_data_loader
from dinov2.data.datasets import ImageFolder, make_synthetic_dataset
from dinov2.data.datasets.decoders import ImageDataDecoder


def _timed(fn, items, repeats: int = 1) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per item of ``fn`` over ``items``."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(repeats):
        for item in items:
            fn(item)
    count = repeats * len(items)
    return (time.thread_time() - cpu) / count, (time.perf_counter() - wall) / count


def _decode_and_augment(augmentation, blob: bytes):
    return augmentation(ImageDataDecoder(blob).decode())


def _row(stage: str, path: str, cpu: float, wall: float, baseline_cpu: float | None) -> str:
    speedup = f"{baseline_cpu / cpu:.2f}x" if baseline_cpu else ""
    return f"| {stage} | {path} | {1 / cpu:8.1f} | {cpu * 1e3:8.2f} | {wall * 1e3:8.2f} | {speedup} |"


def _loader_throughput(root: str, args, fast: bool, collate) -> float:
    """Wall-clock images/s of a DataLoader with ``args.loader_workers`` workers."""
    augmentation = DataAugmentationDINO(
        (0.32, 1.0), (0.05, 0.32), args.local_crops, args.global_size, args.local_size, fast=fast
    )
    dataset = ImageFolder(root=root, transform=augmentation, target_transform=lambda _: ())
    loader = make_data_loader(
        dataset=dataset, batch_size=args.batch_size, num_workers=args.loader_workers, seed=0,
        sampler_type=SamplerType.SHARDED_INFINITE, collate_fn=collate, persistent_workers=True,
    )  # fmt: skip
    iterator = iter(loader)
    next(iterator)  # start-up
    start = time.perf_counter()
    batches = max(2, args.images // args.batch_size)
    for _ in itertools.islice(iterator, batches):
        pass
    return batches * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "dinov2_benchmark_synthetic"))
    parser.add_argument("--images", type=int, default=200, help="images timed per measurement (<= 1000)")
    parser.add_argument("--global-size", type=int, default=224)
    parser.add_argument("--local-size", type=int, default=96)
    parser.add_argument("--local-crops", type=int, default=8)
    parser.add_argument("--patch-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64, help="collate batch size")
    parser.add_argument("--loader-workers", type=int, default=0, help="also time a DataLoader with N workers")
    args = parser.parse_args()

    torch.set_num_threads(1)  # per-core figures; data-loader workers also run one thread each
    # 1000 JPEG files of 500x375, generated once (a few seconds) and reused
    root = make_synthetic_dataset(args.root, num_classes=10, images_per_class=100, val_images_per_class=0)
    train = str(Path(root) / "train")
    files = [path for path, _ in ImageFolder(root=train).samples][: args.images]
    blobs = [Path(f).read_bytes() for f in files]

    print(f"# data pipeline, {len(files)} JPEG files {Path(files[0]).parent.parent}")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, CPU time per core")
    crops = f"2x{args.global_size} + {args.local_crops}x{args.local_size}"
    print(f"# multi-crop {crops}, collate batch {args.batch_size}, patch {args.patch_size}\n")
    print("| stage | path | images/s/core | CPU ms/image | wall ms/image | speed-up |")
    print("|---|---|---|---|---|---|")

    decode_cpu, decode_wall = _timed(lambda blob: ImageDataDecoder(blob).decode(), blobs)
    print(_row("decode (PIL)", "both", decode_cpu, decode_wall, None))

    grid = args.global_size // args.patch_size
    collate = partial(
        collate_data_and_cast, mask_ratio_tuple=(0.1, 0.5), mask_probability=0.5, dtype=torch.half,
        n_tokens=grid * grid, mask_generator=MaskingGenerator((grid, grid), max_num_patches=0.5 * grid * grid),
    )  # fmt: skip
    baseline = {}
    for fast in (False, True):
        path = "fast (tensor)" if fast else "released (PIL)"
        augmentation = DataAugmentationDINO(
            (0.32, 1.0), (0.05, 0.32), args.local_crops, args.global_size, args.local_size, fast=fast
        )
        decode_and_augment = partial(_decode_and_augment, augmentation)
        torch.manual_seed(0)
        _timed(decode_and_augment, blobs[:5])  # warm-up
        cpu, wall = _timed(decode_and_augment, blobs)
        print(_row("decode + augment", path, cpu, wall, baseline.get("augment")))
        baseline.setdefault("augment", cpu)
        samples = [(augmentation(ImageDataDecoder(blob).decode()), ()) for blob in blobs[: args.batch_size]]
        batch_cpu, batch_wall = _timed(collate, [samples], repeats=3)
        print(_row("collate", path, batch_cpu / len(samples), batch_wall / len(samples), None))
        total = cpu + batch_cpu / len(samples)
        print(_row("decode + augment + collate", path, total, wall + batch_wall / len(samples), baseline.get("all")))
        baseline.setdefault("all", total)

    if args.loader_workers > 0:
        print(f"\nDataLoader with {args.loader_workers} workers (wall clock, shared machine: indicative only):")
        for fast in (False, True):
            rate = _loader_throughput(train, args, fast, collate)
            name = "fast" if fast else "released"
            print(f"- {name}: {rate:.1f} images/s ({rate / args.loader_workers:.1f} per worker)")


if __name__ == "__main__":
    main()
