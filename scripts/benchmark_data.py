#!/usr/bin/env python
"""Data-pipeline throughput: per CPU core for the loader workers, and of the device path's decode + augment stage.

For each multi-crop recipe (ViT-L/16: 2x224 + 8x96; ViT-S/14: 2x224 + 8x98), on real JPEG files (the synthetic set,
500x375), in one process with one intra-op thread:

- the workers' work per image for the released pipeline (PIL + torchvision v1 transforms, ``fast=False``), the fast
  tensor path (``fast=True``) and the device path's worker side (``train.data_device=cuda``: read the file, parse its
  header, draw the random choices, collate), in CPU time of this thread (images per CPU-second = images/s per core,
  robust to other load on the machine; wall-clock figures are printed too);
- the device path's main-process stage (``gpu_augment.DeviceAugmentation``: batched JPEG decode + augmentation) on
  ``--device`` (CUDA when available, else the same code on CPU), wall clock with the device synchronised;
- how many loader workers one GPU needs: ``workers = ceil(target images/s / images/s per worker)``, with the target
  from ``--target-images-per-second`` (e.g. the training step's measured throughput).

    PYTHONPATH=. python scripts/benchmark_data.py                           # both recipes, 100 images, < 2 min
    PYTHONPATH=. python scripts/benchmark_data.py --target-images-per-second 2500 --device cuda
    PYTHONPATH=. python scripts/benchmark_data.py --recipes vitl16 --images 500 --loader-workers 4
    PYTHONPATH=. python scripts/benchmark_data.py --global-size 224 --local-size 96 --local-crops 8  # custom recipe
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import os
import platform
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import torch

from dinov2.data import DataAugmentationDINO, MaskingGenerator, SamplerType, collate_data_and_cast, make_data_loader
from dinov2.data.datasets import ImageFolder, make_synthetic_dataset
from dinov2.data.datasets.decoders import ImageDataDecoder
from dinov2.data.gpu_augment import DeviceAugmentation

RECIPES = {  # name -> (global size, local size, local crops, patch size)
    "vitl16": (224, 96, 8, 16),
    "vits14": (224, 98, 8, 14),
}
SCALES = ((0.32, 1.0), (0.05, 0.32))  # global / local crop area scales of the released recipes


def _timed(fn, items, repeats: int = 1) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per item of ``fn`` over ``items``."""
    gc.collect()  # garbage of the previous measurement is not this one's cost
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


def _augmentation(recipe, fast: bool = True) -> DataAugmentationDINO:
    global_size, local_size, local_crops, _ = recipe
    return DataAugmentationDINO(*SCALES, local_crops, global_size, local_size, fast=fast)


def _collate(recipe, dtype=torch.half):
    grid = recipe[0] // recipe[3]
    return partial(
        collate_data_and_cast, mask_ratio_tuple=(0.1, 0.5), mask_probability=0.5, dtype=dtype,
        n_tokens=grid * grid, mask_generator=MaskingGenerator((grid, grid), max_num_patches=0.5 * grid * grid),
    )  # fmt: skip


def _worker_rates(recipe, root: str, blobs: list[bytes], batch_size: int) -> dict[str, float]:
    """Print the per-core table of one recipe; returns images/s per worker (CPU time) of each path."""
    print("| stage | path | images/s/core | CPU ms/image | wall ms/image | speed-up |")
    print("|---|---|---|---|---|---|")
    decode_cpu, decode_wall = _timed(lambda blob: ImageDataDecoder(blob).decode(), blobs)
    print(_row("decode (PIL)", "both", decode_cpu, decode_wall, None))
    collate, baseline, rates = _collate(recipe), {}, {}
    for fast in (False, True):
        path = "fast (tensor)" if fast else "released (PIL)"
        augmentation = _augmentation(recipe, fast)
        decode_and_augment = partial(_decode_and_augment, augmentation)
        torch.manual_seed(0)
        _timed(decode_and_augment, blobs[:3])  # warm-up
        cpu, wall = _timed(decode_and_augment, blobs)
        print(_row("decode + augment", path, cpu, wall, baseline.get("augment")))
        baseline.setdefault("augment", cpu)
        samples = [(augmentation(ImageDataDecoder(blob).decode()), ()) for blob in blobs[:batch_size]]
        batch_cpu, batch_wall = _timed(collate, [samples], repeats=2)
        print(_row("collate", path, batch_cpu / len(samples), batch_wall / len(samples), None))
        total = cpu + batch_cpu / len(samples)
        print(_row("decode + augment + collate", path, total, wall + batch_wall / len(samples), baseline.get("all")))
        baseline.setdefault("all", total)
        rates[path] = 1 / total
    stage = DeviceAugmentation(_augmentation(recipe), "cpu", torch.half)  # only its worker-side pieces run here
    dataset, encoded_collate = stage.encoded_dataset(ImageFolder(root=root)), stage.encoded_collate(collate)
    chunks = _batches(list(range(len(blobs))), batch_size)  # blobs are the first files of the folder
    torch.manual_seed(0)
    encoded_collate([dataset[i] for i in range(3)])  # warm-up
    cpu, wall = _timed(lambda chunk: encoded_collate([dataset[i] for i in chunk]), chunks)
    cpu, wall = cpu * len(chunks) / len(blobs), wall * len(chunks) / len(blobs)
    print(_row("read + header + draw + collate", "device path, workers", cpu, wall, baseline["all"]))
    rates["device path (workers)"] = 1 / cpu
    return rates


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_stage(recipe, root: str, device: torch.device, batch_size: int, n_batches: int) -> float:
    """Print decode / augment times of the device stage per batch; returns its images/s (wall clock)."""
    collate = _collate(recipe, torch.bfloat16)
    stage = DeviceAugmentation(_augmentation(recipe), device, torch.bfloat16)
    dataset, encoded_collate = stage.encoded_dataset(ImageFolder(root=root)), stage.encoded_collate(collate)
    torch.manual_seed(0)
    batches = [encoded_collate([dataset[b * batch_size + i] for i in range(batch_size)]) for b in range(n_batches + 1)]
    if device.type == "cuda":  # the DataLoader pins the workers' batches
        for batch in batches:
            batch["images"] = [image.pin_memory() for image in batch["images"]]
    stage(batches[0])  # warm-up (nvJPEG handles, kernels)
    decode = augment = cpu = 0.0
    for batch in batches[1:]:
        _synchronize(device)
        start, start_cpu = time.perf_counter(), time.thread_time()
        images = stage.decode(batch)
        _synchronize(device)
        middle = time.perf_counter()
        stage.augment(images, batch)
        cpu += time.thread_time() - start_cpu
        _synchronize(device)
        decode, augment = decode + middle - start, augment + time.perf_counter() - middle
    total = decode + augment
    ms = 1e3 / n_batches
    print(
        f"| {device} | {batch_size} | {n_batches * batch_size / total:8.1f} | {decode * ms:8.1f} | {augment * ms:8.1f} "
        f"| {cpu * ms:8.1f} |"
    )
    if device.type == "cuda":
        _decode_difference(stage, batches[1])
    return n_batches * batch_size / total


def _decode_difference(stage: DeviceAugmentation, batch) -> None:
    on_cpu = DeviceAugmentation(stage.augmentation, "cpu", stage.dtype)
    diffs = [(a.float() - b.cpu().float()).abs() for a, b in zip(on_cpu.decode(batch), stage.decode(batch))]
    mean = sum(d.sum() for d in diffs) / sum(d.numel() for d in diffs)
    largest = max(d.max() for d in diffs)
    print(f"\nnvJPEG vs libjpeg-turbo (the CPU path's decoder): mean |diff| {mean:.3f}, max {largest:.0f} levels")


def _loader_throughput(root: str, args, recipe, path: str, device: torch.device) -> float:
    """Wall-clock images/s of a DataLoader with ``args.loader_workers`` workers (+ the device stage)."""
    augmentation = _augmentation(recipe, fast=path != "released")
    dataset, collate = ImageFolder(root=root, transform=augmentation, target_transform=lambda _: ()), _collate(recipe)
    stage = DeviceAugmentation(augmentation, device, torch.bfloat16) if path == "device" else None
    if stage is not None:
        dataset, collate = stage.encoded_dataset(dataset), stage.encoded_collate(_collate(recipe, torch.bfloat16))
    loader = make_data_loader(
        dataset=dataset, batch_size=args.batch_size, num_workers=args.loader_workers, seed=0,
        sampler_type=SamplerType.SHARDED_INFINITE, collate_fn=collate, persistent_workers=True,
    )  # fmt: skip
    iterator = iter(loader if stage is None else stage.batches(loader))
    next(iterator)  # start-up
    _synchronize(device)
    start = time.perf_counter()
    batches = max(2, args.images // args.batch_size)
    for _ in itertools.islice(iterator, batches):
        pass
    _synchronize(device)
    return batches * args.batch_size / (time.perf_counter() - start)


def _workers_needed(rates: dict[str, dict[str, float]], device_rates: dict, target: float | None) -> None:
    print("\n## Loader workers per GPU: workers = ceil(target images/s / images/s per worker)")
    if target is None:
        print("(pass --target-images-per-second, e.g. the training step's images/s, to fill the last column)")
    header = f"workers for {target:g} images/s" if target else "workers"
    print(f"\n| recipe | path | images/s per worker | {header} |\n|---|---|---|---|")
    for name, per_path in rates.items():
        for path, rate in per_path.items():
            workers = f"ceil({target:g} / {rate:.1f}) = {math.ceil(target / rate)}" if target else "-"
            print(f"| {name} | {path} | {rate:8.1f} | {workers} |")
    if target:
        for name, (device, rate) in device_rates.items():
            verdict = "enough" if rate >= target else "NOT enough"
            print(f"- {name}: the device stage on {device} runs at {rate:.0f} images/s, {verdict} for {target:g}")
        if any(device.type == "cpu" for device, _ in device_rates.values()):
            print("  (on CPU the device stage runs its dense GPU products on one core: meant for tests, not speed)")


def _recipes(args) -> dict[str, tuple[int, int, int, int]]:
    custom = (args.global_size, args.local_size, args.local_crops, args.patch_size)
    if any(v is not None for v in custom):
        defaults = RECIPES["vitl16"]
        return {"custom": tuple(d if v is None else v for v, d in zip(custom, defaults))}
    return {name: RECIPES[name] for name in args.recipes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=os.path.join(tempfile.gettempdir(), "dinov2_benchmark_synthetic"))
    parser.add_argument("--images", type=int, default=100, help="images timed per measurement (<= 1000)")
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    parser.add_argument("--global-size", type=int, help="custom recipe (replaces --recipes)")
    parser.add_argument("--local-size", type=int, help="custom recipe (replaces --recipes)")
    parser.add_argument("--local-crops", type=int, help="custom recipe (replaces --recipes)")
    parser.add_argument("--patch-size", type=int, help="custom recipe (replaces --recipes)")
    parser.add_argument("--batch-size", type=int, default=64, help="collate / loader batch size")
    parser.add_argument("--loader-workers", type=int, default=0, help="also time DataLoaders with N workers")
    parser.add_argument("--target-images-per-second", type=float, help="images/s one GPU trains (workers needed)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device stage")
    parser.add_argument("--device-batch-size", type=int, help="device stage batch (default 64 on CUDA, 8 on CPU)")
    parser.add_argument("--device-batches", type=int, help="device stage batches timed (default 10 CUDA, 1 CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    device_batch = args.device_batch_size or (64 if on_cuda else 8)
    device_batches = args.device_batches or (10 if on_cuda else 1)
    warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)  # torchvision 0.29 (a script)

    torch.set_num_threads(1)  # per-core figures; data-loader workers also run one thread each
    # 1000 JPEG files of 500x375, generated once (a few seconds) and reused
    root = make_synthetic_dataset(args.root, num_classes=10, images_per_class=100, val_images_per_class=0)
    train = str(Path(root) / "train")
    files = [path for path, _ in ImageFolder(root=train).samples][: args.images]
    blobs = [Path(f).read_bytes() for f in files]
    print(f"# data pipeline, {len(files)} JPEG files {Path(files[0]).parent.parent}")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, 1 thread, CPU time per core")
    if on_cuda:
        print(f"# device stage on {torch.cuda.get_device_name(device)}")
    rates, device_rates = {}, {}
    for name, recipe in _recipes(args).items():
        global_size, local_size, local_crops, patch = recipe
        print(f"\n## {name}: multi-crop 2x{global_size} + {local_crops}x{local_size}, patch {patch}, "
              f"collate batch {args.batch_size}\n")  # fmt: skip
        rates[name] = _worker_rates(recipe, train, blobs, args.batch_size)
        print("\nDevice stage (main process): batched decode_jpeg + augmentation, wall clock\n")
        print("| device | batch | images/s | decode ms/batch | augment ms/batch | main-thread CPU ms/batch |")
        print("|---|---|---|---|---|---|")
        device_rates[name] = device, _device_stage(recipe, train, device, device_batch, device_batches)
        if args.loader_workers > 0:
            print(f"\nDataLoader with {args.loader_workers} workers (wall clock, shared machine: indicative only):")
            for path in ("released", "fast", "device"):
                rate = _loader_throughput(train, args, recipe, path, device)
                print(f"- {path}: {rate:.1f} images/s ({rate / args.loader_workers:.1f} per worker)")
    _workers_needed(rates, device_rates, args.target_images_per_second)


if __name__ == "__main__":
    main()
