"""Training-step throughput, peak memory and model-FLOPs utilisation (MFU) for any training config.

    PYTHONPATH=. python scripts/benchmark_train.py --config-file configs/train/demo_cpu.yaml
    PYTHONPATH=. python scripts/benchmark_train.py --config-file configs/train/vitl16_short.yaml --device cuda \
        --dtype bf16 --batch-size 64

One process runs full training steps of ``SSLMetaArch`` (teacher forward, student forward/backward, clipping,
AdamW, EMA: ``dinov2.train.train.train_step``) on batches of random crops with the config's crop sizes, local crop
count and iBOT masking, so the data pipeline is out of the measurement (``scripts/benchmark_data.py`` measures it).
FLOPs are those the step executes, counted by ``torch.utils.flop_counter`` (matrix products in forward and
backward; see dinov2/utils/flops.py). MFU = counted FLOPs per second / the device's dense peak for the compute
dtype (known for A100/H100/H200; ``--peak-tflops`` otherwise, e.g. for CPUs). Peak memory: CUDA
``max_memory_allocated``; on CPU the process's peak resident set size.

Distillation step (``--distill-teacher``): the config is the student's, the flag names the teacher's training
config (random teacher weights unless ``--distill-teacher-weights``); the table adds the frozen teacher's share of
the step time (teacher forward, heads and Sinkhorn-Knopp, timed with device syncs around it)::

    PYTHONPATH=. python scripts/benchmark_train.py --config-file configs/train/vits14_distill_vitg14.yaml \
        --distill-teacher configs/train/vitg14.yaml --device cuda --dtype bf16 --batch-size 32
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dinov2.data import MaskingGenerator, collate_data_and_cast  # noqa: E402
from dinov2.train.meta_archs import build_meta_arch  # noqa: E402
from dinov2.train.precision import compute_dtype, make_grad_scaler  # noqa: E402
from dinov2.train.ssl_meta_arch import Batch  # noqa: E402
from dinov2.train.train import build_optimizer, train_step  # noqa: E402
from dinov2.utils.config import apply_scaling_rules_to_cfg, load_cfg  # noqa: E402
from dinov2.utils.flops import count_flops  # noqa: E402
from dinov2.utils.schedules import build_schedulers  # noqa: E402

# Dense tensor-core peaks (TFLOP/s) by device name fragment and compute dtype.
PEAK_TFLOPS = {
    "H200": {torch.bfloat16: 989.0, torch.float16: 989.0, torch.float32: 494.7},
    "H100": {torch.bfloat16: 989.0, torch.float16: 989.0, torch.float32: 494.7},
    "A100": {torch.bfloat16: 312.0, torch.float16: 312.0, torch.float32: 156.0},
}
DTYPE_NAMES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="configs/train/vitl16_short.yaml")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPE_NAMES), help="compute dtype of every sub-module (default: config)"
    )
    parser.add_argument("--batch-size", type=int, help="images per step (default: train.batch_size_per_gpu)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--peak-tflops", type=float, help="device peak for the MFU column (default: known GPUs)")
    parser.add_argument("--distill-teacher", metavar="CONFIG", help="distillation step: the teacher's training config")
    parser.add_argument("--distill-teacher-weights", default="ignore", help="teacher weights (default: random)")
    parser.add_argument("opts", nargs="*", help="config overrides key=value")
    return parser.parse_args(argv)


def distillation_opts(args: argparse.Namespace) -> list[str]:
    """Overrides that make the step a distillation step (``--distill-teacher``); none otherwise."""
    if not args.distill_teacher:
        return []
    return [
        "distillation.enabled=true",
        f"distillation.full_cfg_path={args.distill_teacher}",
        f"distillation.checkpoint_path={args.distill_teacher_weights}",
    ]


def time_teacher(model, device: torch.device) -> list[float]:
    """Record the duration (s, device-synced) of every ``model.teacher_targets`` call into the returned list."""
    durations: list[float] = []
    targets = model.teacher_targets

    def timed(*args, **kwargs):
        _sync(device)
        start = time.perf_counter()
        out = targets(*args, **kwargs)
        _sync(device)
        durations.append(time.perf_counter() - start)
        return out

    model.teacher_targets = timed
    return durations


def build_cfg(args: argparse.Namespace):
    opts = distillation_opts(args) + list(args.opts)
    if args.batch_size:
        opts.append(f"train.batch_size_per_gpu={args.batch_size}")
    if args.dtype:
        for role in ("student", "teacher"):
            for module in ("backbone", "dino_head", "ibot_head"):
                opts.append(f"compute_precision.{role}.{module}.mixed_precision.param_dtype={args.dtype}")
        opts.append(f"compute_precision.grad_scaler={args.dtype == 'fp16'}")
    cfg = load_cfg(args.config_file, opts=opts, output_dir="/tmp/dinov2_benchmark_train")
    return apply_scaling_rules_to_cfg(cfg, world_size=1)


def random_batch(cfg, device: torch.device, seed: int) -> Batch:
    """A collated batch of random crops with the config's sizes and masking."""
    g = torch.Generator().manual_seed(seed)
    size, local, patch = cfg.crops.global_crops_size, cfg.crops.local_crops_size, cfg.student.patch_size
    n_local = cfg.crops.local_crops_number
    samples = [
        (
            {
                "global_crops": [torch.randn(3, size, size, generator=g) for _ in range(2)],
                "local_crops": [torch.randn(3, local, local, generator=g) for _ in range(n_local)],
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


def peak_tflops(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, peaks in PEAK_TFLOPS.items():
            if fragment in name:
                return peaks[dtype]
    return None


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the released trainer
        torch.backends.cudnn.allow_tf32 = True
    cfg = build_cfg(args)
    torch.manual_seed(0)
    model = build_meta_arch(cfg)  # SSLMetaArch, or DistillationMetaArch with --distill-teacher
    model.prepare_for_distributed_training(device)
    model.fp16_scaler = make_grad_scaler(cfg, device)
    model.train()
    optimizer = build_optimizer(cfg, model.get_params_groups())
    schedules = build_schedulers(cfg)
    iteration = cfg.optim.freeze_last_layer_epochs * cfg.train.OFFICIAL_EPOCH_LENGTH  # every parameter trains
    batches = [random_batch(cfg, device, seed) for seed in range(2)]

    flops, _ = count_flops(train_step, cfg, model, optimizer, batches[0], schedules, iteration)
    times = []
    teacher_times = time_teacher(model, device) if args.distill_teacher else []
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            teacher_times.clear()
        if step == args.warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        train_step(cfg, model, optimizer, batches[step % 2], schedules, iteration)
        _sync(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)

    step_s = statistics.median(times)
    batch = cfg.train.batch_size_per_gpu
    dtype = compute_dtype(cfg)
    if device.type == "cuda":
        memory = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB allocated"
        name = torch.cuda.get_device_name(device)
    else:
        memory = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB peak RSS"
        name = f"CPU ({torch.get_num_threads()} threads)"
    achieved = flops / step_s / 1e12
    peak = peak_tflops(args, device, dtype)
    mfu = f"{100 * achieved / peak:.1f} %" if peak else "n/a (pass --peak-tflops)"
    rows = [
        ("config", f"{args.config_file} {' '.join(args.opts)}".strip()),
        ("model", f"{cfg.student.arch}/{cfg.student.patch_size}, {cfg.crops.local_crops_number} local crops"),
        (
            "crops",
            f"2 x {cfg.crops.global_crops_size} px + {cfg.crops.local_crops_number} x {cfg.crops.local_crops_size} px",
        ),
        ("device", name),
        ("compute dtype", str(dtype).removeprefix("torch.")),
        ("batch (images)", str(batch)),
        ("step time (median)", f"{1000 * step_s:.1f} ms over {len(times)} steps"),
        ("images/s", f"{batch / step_s:.1f}"),
        ("FLOPs per step", f"{flops / 1e12:.3f} TFLOP (counted)"),
        ("achieved", f"{achieved:.2f} TFLOP/s"),
        ("MFU", mfu),
        ("peak memory", memory),
    ]
    if args.distill_teacher:
        teacher_s = statistics.median(teacher_times)
        rows.insert(2, ("teacher", f"{model.teacher_plan.teacher_cfg.student.arch} ({args.distill_teacher}), frozen"))
        rows.append(("teacher share", f"{100 * teacher_s / step_s:.1f} % of the step ({1000 * teacher_s:.1f} ms)"))
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))


if __name__ == "__main__":
    main()
