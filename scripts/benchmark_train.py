"""Training-step throughput, time split, peak memory and model-FLOPs utilisation (MFU), for any training config.

    PYTHONPATH=. python scripts/benchmark_train.py --config-file configs/train/demo_cpu.yaml
    PYTHONPATH=. python scripts/benchmark_train.py --config-file configs/train/vitl16_short.yaml --dtype bf16 \
        --batch-size 64 --variant eager=optim.adamw_fused=false --variant fused=optim.adamw_fused=true \
        --variant compiled=optim.adamw_fused=true,train.compile=true

One process runs full training steps of the configured meta-architecture (teacher forward, student forward and
backward, clipping, AdamW, EMA: ``dinov2.train.train.train_step``) on batches of random crops with the config's crop
sizes, local crop count and iBOT masking, so the data pipeline is out of the step time (``--data`` adds a real
loader and reports the time spent waiting for it; ``scripts/benchmark_data.py`` measures the pipeline alone).

Each ``--variant NAME=key=value,key=value`` is the same run with those config overrides on top (e.g. compile on or
off), measured in the same process one after another, so the rows compare like with like. Per variant:

- step time: median over ``--steps`` timed steps after ``--warmup`` steps (compilation happens in the warm-up);
- split: one more pass with CUDA events (or synchronised host timers on CPU) around the step parts: teacher
  targets, student forward (heads and loss terms included), backward, optimizer (unscale, clipping, step), EMA;
- FLOPs: counted by ``torch.utils.flop_counter`` on one eager step (matrix products of forward and backward, the
  usual MFU convention; see dinov2/utils/flops.py); MFU = counted FLOPs per second / the device's dense peak for
  the compute dtype (H100/H200/A100 known; ``--peak-tflops`` otherwise);
- peak memory: CUDA ``max_memory_allocated`` (CPU: the process's peak resident set size).

``--profile DIR`` records 3 steps of the last variant with ``torch.profiler`` and writes the top operators and
kernels by device time and the host-device synchronisations per step. ``--json FILE`` writes every row.

Distillation step (``--distill-teacher``): the config is the student's, the flag names the teacher's training config
(random teacher weights unless ``--distill-teacher-weights``); the split's ``teacher`` column is then the frozen
teacher's share (its forward, heads and Sinkhorn-Knopp)::

    PYTHONPATH=. python scripts/benchmark_train.py --config-file configs/train/vits14_distill_vitg14.yaml \
        --distill-teacher configs/train/vitg14.yaml --dtype bf16 --batch-size 32
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dinov2.data import MaskingGenerator, collate_data_and_cast  # noqa: E402
from dinov2.train.meta_archs import build_meta_arch  # noqa: E402
from dinov2.train.parallelize import parallelize  # noqa: E402
from dinov2.train.precision import PrecisionPolicy, compute_dtype  # noqa: E402
from dinov2.train.ssl_meta_arch import Batch  # noqa: E402
from dinov2.train.train import build_data_loader, build_optimizer, train_step  # noqa: E402
from dinov2.utils.config import apply_scaling_rules_to_cfg, load_cfg  # noqa: E402
from dinov2.utils.dtype import DTYPES  # noqa: E402
from dinov2.utils.flops import count_flops  # noqa: E402
from dinov2.utils.schedules import build_schedulers  # noqa: E402

# Dense tensor-core peaks (TFLOP/s) by device name fragment and compute dtype (vendor datasheets, SXM parts).
PEAK_TFLOPS = {
    "H200": {torch.bfloat16: 989.0, torch.float16: 989.0, torch.float32: 494.7},
    "H100": {torch.bfloat16: 989.0, torch.float16: 989.0, torch.float32: 494.7},
    "A100": {torch.bfloat16: 312.0, torch.float16: 312.0, torch.float32: 156.0},
}
PARTS = ("teacher", "student", "backward", "optimizer", "ema")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="configs/train/vitl16_short.yaml")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="compute dtype of every sub-module (default: config)")
    parser.add_argument("--batch-size", type=int, help="images per step (default: train.batch_size_per_gpu)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--peak-tflops", type=float, help="device peak for the MFU column (default: known GPUs)")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=key=value,...",
        help="a variant with extra config overrides (repeatable); default: one variant with none",
    )
    parser.add_argument("--data", metavar="DATASET", help="also time a real data loader on this dataset string")
    parser.add_argument("--workers", type=int, default=8, help="loader workers with --data")
    parser.add_argument("--profile", metavar="DIR", help="profile 3 steps of the last variant into DIR")
    parser.add_argument("--json", metavar="FILE", help="write every result row to FILE")
    parser.add_argument("--title", default="", help="a label printed above the table")
    parser.add_argument("--distill-teacher", metavar="CONFIG", help="distillation step: the teacher's training config")
    parser.add_argument("--distill-teacher-weights", default="ignore", help="teacher weights (default: random)")
    parser.add_argument("opts", nargs="*", help="config overrides key=value for every variant")
    return parser.parse_args(argv)


def parse_variants(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``NAME=key=value,key=value`` -> (NAME, [key=value, ...]); no spec gives one variant named ``default``."""
    variants = []
    for spec in specs or ["default="]:
        name, _, overrides = spec.partition("=")
        variants.append((name, [o for o in overrides.split(",") if o]))
    return variants


def distillation_opts(args: argparse.Namespace) -> list[str]:
    """Overrides that make the step a distillation step (``--distill-teacher``); none otherwise."""
    if not args.distill_teacher:
        return []
    return [
        "distillation.enabled=true",
        f"distillation.full_cfg_path={args.distill_teacher}",
        f"distillation.checkpoint_path={args.distill_teacher_weights}",
    ]


def build_cfg(args: argparse.Namespace, extra: list[str]):
    opts = distillation_opts(args) + list(args.opts) + list(extra)
    if args.batch_size:
        opts.append(f"train.batch_size_per_gpu={args.batch_size}")
    if args.dtype:
        for role in ("student", "teacher"):
            for module in ("backbone", "dino_head", "ibot_head"):
                opts.append(f"compute_precision.{role}.{module}.mixed_precision.param_dtype={args.dtype}")
        opts.append(f"compute_precision.grad_scaler={args.dtype == 'fp16'}")
    if args.data:
        opts.append(f"train.dataset_path={args.data}")
        opts.append(f"train.num_workers={args.workers}")
    cfg = load_cfg(args.config_file, opts=opts, output_dir="/tmp/dinov2_benchmark_train")
    return apply_scaling_rules_to_cfg(cfg, world_size=1)


def random_batch(cfg, device: torch.device, seed: int) -> Batch:
    """A collated batch of random crops with the config's sizes and masking."""
    g = torch.Generator().manual_seed(seed)
    size, local, patch = cfg.crops.global_crops_size, cfg.crops.local_crops_size, cfg.student.patch_size
    n_local = cfg.crops.local_crops_number
    gram = cfg.crops.gram_teacher_crops_size if cfg.gram.use_loss and not cfg.gram.ema_teacher else None
    samples = [
        (
            {
                "global_crops": [torch.randn(3, size, size, generator=g) for _ in range(2)],
                "local_crops": [torch.randn(3, local, local, generator=g) for _ in range(n_local)],
                **({"gram_teacher_crops": [torch.randn(3, gram, gram, generator=g) for _ in range(2)]} if gram else {}),
            },
            (),
        )
        for _ in range(cfg.train.batch_size_per_gpu)
    ]
    grid = size // patch
    collated = collate_data_and_cast(
        samples,
        mask_ratio_tuple=tuple(cfg.ibot.mask_ratio_min_max),
        mask_probability=cfg.ibot.mask_sample_probability,
        dtype=compute_dtype(cfg),
        n_tokens=grid * grid,
        mask_generator=MaskingGenerator(input_size=(grid, grid), max_num_patches=0.5 * grid * grid),
        local_crops_size=local,
    )
    return Batch.from_collated(collated, device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PartTimer:
    """Device time of named regions of one step: CUDA events (no sync inside the step), else synced host time."""

    def __init__(self, device: torch.device):
        self.device = device
        self.marks: list[tuple[str, object, object]] = []

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                result = fn(*args, **kwargs)
                end.record()
            else:
                start = time.perf_counter()
                result = fn(*args, **kwargs)
                end = time.perf_counter()
            self.marks.append((name, start, end))
            return result

        return timed

    def collect(self) -> dict[str, float]:
        """Milliseconds per region name (summed), after the step; clears the marks."""
        _sync(self.device)
        totals: dict[str, float] = defaultdict(float)
        for name, start, end in self.marks:
            totals[name] += start.elapsed_time(end) if self.device.type == "cuda" else 1000 * (end - start)
        self.marks.clear()
        return dict(totals)


def split_step(cfg, model, optimizer, batch, schedules, iteration, device) -> dict[str, float]:
    """One training step with its parts timed (ms): the step is ``train_step``, with timers around the methods."""
    timer = PartTimer(device)
    patched = {
        "teacher_targets": "teacher",
        "student_outputs": "student",
        "loss_terms": "student",
        "backprop_loss": "backward",
        "after_optimizer_step": "ema",
    }
    originals = {name: getattr(model, name) for name in patched}
    step = optimizer.step
    for name, part in patched.items():
        setattr(model, name, timer.wrap(part, originals[name]))
    optimizer.step = timer.wrap("optimizer", step)
    try:
        _sync(device)
        wall = time.perf_counter()
        train_step(cfg, model, optimizer, batch, schedules, iteration)
        _sync(device)
        wall = 1000 * (time.perf_counter() - wall)
    finally:
        for name in patched:
            delattr(model, name)  # back to the class methods
        optimizer.step = step
    parts = timer.collect()
    parts["other"] = max(wall - sum(parts.values()), 0.0)  # clipping, schedules, loss reduction, launch gaps
    return parts


def data_wait(cfg, device: torch.device, steps: int) -> float:
    """Median ms spent waiting for the next batch of a real loader (and moving it to the device)."""
    loader = iter(build_data_loader(cfg, 0))
    waits = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        Batch.from_collated(next(loader), device)
        _sync(device)
        waits.append(1000 * (time.perf_counter() - start))
    return statistics.median(waits[2:])


def peak_tflops(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, peaks in PEAK_TFLOPS.items():
            if fragment in name:
                return peaks[dtype]
    return None


def profile_steps(run, directory: Path) -> None:
    """Profile 3 steps of ``run()``: top operators by device (or CPU) time, and synchronisations per step."""
    from torch.profiler import ProfilerActivity, profile

    directory.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            run()
    averages = prof.key_averages()
    sort = "cuda_time_total" if torch.cuda.is_available() else "cpu_time_total"
    (directory / "top_ops.txt").write_text(averages.table(sort_by=sort, row_limit=40))
    syncs = {
        e.key: e.count // 3
        for e in averages
        if "Synchronize" in e.key or "item" in e.key or "Memcpy DtoH" in e.key or "local_scalar_dense" in e.key
    }
    (directory / "syncs_per_step.json").write_text(json.dumps(syncs, indent=2) + "\n")
    print(f"profile: {directory}/top_ops.txt, host-device syncs per step {syncs}")


def run_variant(args, name: str, overrides: list[str], device: torch.device, last: bool) -> dict:
    cfg = build_cfg(args, overrides)
    torch.manual_seed(0)
    model = build_meta_arch(cfg)
    model.precision = PrecisionPolicy.from_config(cfg, device, sharded=parallelize(model, cfg, device))
    model.train()
    optimizer = build_optimizer(cfg, model.get_params_groups())
    schedules = build_schedulers(cfg)
    iteration = cfg.optim.freeze_last_layer_epochs * cfg.train.OFFICIAL_EPOCH_LENGTH  # every parameter trains
    batches = [random_batch(cfg, device, seed) for seed in range(2)]

    def step(i: int) -> None:
        train_step(cfg, model, optimizer, batches[i % 2], schedules, iteration)

    if cfg.train.compile:
        flops = None  # counted on the eager variant; the compiled graph executes the same products
    else:
        flops, _ = count_flops(step, 0)
    times = []
    for i in range(args.warmup + args.steps):
        if i == args.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        step(i)
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    split = split_step(cfg, model, optimizer, batches[0], schedules, iteration, device)
    if device.type == "cuda":
        memory_gib = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        memory_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    row = {
        "variant": name,
        "overrides": overrides,
        "batch": cfg.train.batch_size_per_gpu,
        "step_ms": 1000 * statistics.median(times),
        "step_ms_min": 1000 * min(times),
        "split_ms": split,
        "flops": flops,
        "peak_memory_gib": memory_gib,
        "data_wait_ms": data_wait(cfg, device, 5) if args.data else None,
    }
    if last and args.profile:
        profile_steps(lambda: step(0), Path(args.profile))
    return row  # the model, optimizer and batches are freed with this frame


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the released trainer
        torch.backends.cudnn.allow_tf32 = True
    variants = parse_variants(args.variant)
    cfg = build_cfg(args, variants[0][1])
    dtype = compute_dtype(cfg)
    peak = peak_tflops(args, device, dtype)
    rows, eager_flops = [], None
    for i, (name, overrides) in enumerate(variants):
        try:
            row = run_variant(args, name, overrides, device, last=i == len(variants) - 1)
        except torch.cuda.OutOfMemoryError as err:
            row = {"variant": name, "overrides": overrides, "error": f"out of memory: {str(err).splitlines()[0]}"}
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        eager_flops = row.get("flops") or eager_flops
        if "error" not in row:
            row["flops"] = row["flops"] or eager_flops
            row["images_per_s"] = row["batch"] / row["step_ms"] * 1000
            if row["flops"]:
                row["tflops_per_s"] = row["flops"] / row["step_ms"] * 1000 / 1e12
                row["mfu"] = row["tflops_per_s"] / peak if peak else None
        rows.append(row)
        print_row(row)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()})"
    header = (
        f"{args.title} {args.config_file} {' '.join(args.opts)} | {cfg.student.arch}/{cfg.student.patch_size} "
        f"2x{cfg.crops.global_crops_size}+{cfg.crops.local_crops_number}x{cfg.crops.local_crops_size} px | "
        f"{str(dtype).removeprefix('torch.')} | {device_name} | torch {torch.__version__}"
    )
    print_table(header, rows)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows}, indent=2) + "\n")
    return rows


def print_row(row: dict) -> None:
    if "error" in row:
        print(f"[{row['variant']}] {row['error']}", flush=True)
        return
    mfu = f"{100 * row['mfu']:.1f} %" if row.get("mfu") else "n/a"
    print(f"[{row['variant']}] {row['step_ms']:.1f} ms/step, {row['images_per_s']:.1f} img/s, MFU {mfu}", flush=True)


def print_table(header: str, rows: list[dict]) -> None:
    """A markdown table: one row per variant, with the time split."""
    print(f"\n{header}\n")
    columns = ["variant", "batch", "ms/step", "img/s", "TFLOP/s", "MFU", "peak GiB", *PARTS, "other", "data wait"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        if "error" in row:
            print(f"| {row['variant']} | {row['error']} |")
            continue
        split = row["split_ms"]
        cells = [
            row["variant"],
            str(row["batch"]),
            f"{row['step_ms']:.1f}",
            f"{row['images_per_s']:.1f}",
            f"{row.get('tflops_per_s', 0):.1f}",
            f"{100 * row['mfu']:.1f} %" if row.get("mfu") else "n/a",
            f"{row['peak_memory_gib']:.1f}",
            *(f"{split.get(p, 0.0):.1f}" for p in PARTS),
            f"{split.get('other', 0.0):.1f}",
            f"{row['data_wait_ms']:.1f}" if row.get("data_wait_ms") is not None else "-",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
