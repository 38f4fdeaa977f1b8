"""Dense inference benchmark: images/s and peak memory of the hub segmentors and depthers, per arch.

Cases (random weights, ``pretrained=False``; batch of 1 image of ``--image-size``):

- ``seg-linear``: the released linear test pipeline (short side 512, sliding windows 512 / stride 341);
- ``seg-ms``: the released +ms pipeline (short side 640 x ``--ms-ratios``, each also flipped, windows 640 /
  stride 320; the release uses 5 ratios, its notebook 3);
- ``depth-ld4`` / ``depth-dd``: ``whole_inference`` of the 4-layer linear and the DPT depthers.

Each (arch, case) runs in a fresh process, so the peak memory is its own: on CUDA ``max_memory_allocated``
above the resting allocation; on CPU the peak resident memory (VmHWM, reset before the timed runs) above the
resting RSS (Linux). Images/s is the median over ``--repeats`` timed runs after one warm-up.

    PYTHONPATH=. python scripts/benchmark_dense.py --archs vit_small --cases seg-linear depth-ld4 --threads 1
    PYTHONPATH=. python scripts/benchmark_dense.py --device cuda --archs vit_small vit_base vit_large vit_giant2
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from pathlib import Path

import torch

from dinov2.heads.segmentation.inference import keep_ratio_size
from dinov2.heads.sliding_window import window_boxes
from dinov2.hub import depthers, segmentors
from dinov2.utils.dtype import DTYPES  # noqa: E402

LETTER = {"vit_small": "s", "vit_base": "b", "vit_large": "l", "vit_giant2": "g"}
CASES = ("seg-linear", "seg-ms", "depth-ld4", "depth-dd")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def build(arch: str, case: str, ms_ratios):
    name = f"dinov2_vit{LETTER[arch]}14"
    if case == "seg-linear":
        return getattr(segmentors, f"{name}_ade20k_linear")(pretrained=False), {}
    if case == "seg-ms":
        return getattr(segmentors, f"{name}_ade20k_ms")(pretrained=False), {"ratios": tuple(ms_ratios)}
    if case == "depth-ld4":
        return getattr(depthers, f"{name}_ld")(layers=4, pretrained=False).eval(), None
    return getattr(depthers, f"{name}_dd")(pretrained=False).eval(), None


def windows_per_image(model, size, options) -> int:
    """Backbone passes per image (sliding windows x scales x flips) of a segmentor's test pipeline."""
    cfg = model.test_cfg
    ratios = options.get("ratios", cfg.ratios)
    total = 0
    for ratio in ratios:
        h, w = keep_ratio_size(*size, int(cfg.short_side * ratio))
        total += len(list(window_boxes(h, w, cfg.crop_size, cfg.stride))) * (2 if cfg.flip else 1)
    return total


def run_case(arch, case, size, device_name, dtype_name, repeats, threads, ms_ratios, queue) -> None:
    torch.set_num_threads(threads)
    device, dtype = torch.device(device_name), DTYPES[dtype_name]
    torch.manual_seed(0)
    with device:  # parameters created (and randomly initialised) on the device
        model, options = build(arch, case, ms_ratios)
    image = torch.randn(1, 3, *size, device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def forward():
        with torch.inference_mode(), autocast:
            out = model.predict(image, **options) if options is not None else model.whole_inference(image)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out

    forward()  # warm-up (kernels, allocator)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        base = _status_kib("VmRSS") * 1024
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _status_kib("VmHWM") * 1024
    passes = windows_per_image(model, size, options) if options is not None else 1
    seconds = statistics.median(times)
    queue.put({"arch": arch, "case": case, "s/image": seconds, "images/s": 1.0 / seconds,
               "backbone passes": passes, "peak MiB": round((peak - base) / 2**20)})  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["vit_small"], choices=sorted(LETTER))
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--image-size", default="512x683", help="HxW of the input image (default: ADE20K-like)")
    parser.add_argument("--ms-ratios", nargs="+", type=float, default=[1.0, 1.32, 1.73, 2.28, 3.0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="autocast dtype (fp32: none)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.image_size.lower().split("x"))
    context = multiprocessing.get_context("spawn")
    rows = []
    for arch in args.archs:
        for case in args.cases:
            queue = context.Queue()
            worker = context.Process(
                target=run_case,
                args=(arch, case, size, args.device, args.dtype, args.repeats, args.threads, args.ms_ratios, queue),
            )
            worker.start()
            worker.join()
            if worker.exitcode != 0:
                raise RuntimeError(f"{arch} {case} failed (exit code {worker.exitcode})")
            rows.append(queue.get())
            print(f"done: {rows[-1]}", flush=True)
    from dinov2.eval.results import format_table

    title = (f"dense inference, {size[0]}x{size[1]} image, device {args.device}, {args.dtype}, "
             f"{args.threads} thread(s), ms ratios {args.ms_ratios}")  # fmt: skip
    print(format_table(rows, float_format=".3g", title=title))


if __name__ == "__main__":
    main()
