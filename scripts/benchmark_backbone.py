"""Backbone inference benchmark: images/s and peak memory of our DINOv2 / DINOv3 ViTs next to timm and transformers.

All implementations run the same weights (ours, converted with ``dinov2.models.convert`` / ``convert_dinov3``:
timm ``vit_*_patch14[_reg4]_dinov2`` / ``vit_*_patch16_dinov3[_qkvb]``, transformers ``Dinov2Model`` /
``Dinov2WithRegistersModel`` / ``DINOv3ViTModel``), the same input,
the same thread count, under ``torch.inference_mode``. Timed repeats are interleaved round-robin across
implementations, in forward then reverse order on alternate rounds, so load changes on a shared machine and
position in the round hit all of them alike; the table gives the median and the minimum.
Each row produces the normalised cls token: ours through ``model(x)`` (in eval mode its last block computes
the cls token only) and through ``forward_features`` (every token, as the release and the peers do).
"CPU ms/batch" is process CPU time (all threads): less sensitive than wall time to other jobs on a shared
machine, most telling with ``--threads 1``. "peak MiB" is the most memory the tensors allocated by one forward
hold at once (``scripts/benchmark_losses.py``'s method): on CUDA ``max_memory_allocated`` above the resting
allocation, on CPU the running sum of the profiler's allocation events (deterministic, like the CUDA figure).
"peak RSS MiB" (CPU, Linux) is the peak resident memory (VmHWM) above the resting RSS during one forward, after
returning freed heap memory to the OS; it depends on the C allocator's heap state left by whatever ran before,
so it is the median of ``RSS_ROUNDS`` forwards per implementation in alternating order. The last columns
compare each implementation's cls token with ours at the benchmark resolution and at 518 px (the stored position
grid: no interpolation; DINOv3, which has no position table: 256 px). DINOv3 rows: ``--arch dinov3_vits16
dinov3_vitb16`` (a hub name); ours has no cls-only last block, so its one row computes every token, like the
peers. ``--quick``: a smoke run (batch 2, 112 px, 1 warm-up, 3 repeats, one check resolution).

    PYTHONPATH=. python scripts/benchmark_backbone.py --arch vit_small vit_base --batch-size 8 --resolution 224
    PYTHONPATH=. python scripts/benchmark_backbone.py --arch dinov3_vits16 dinov3_vitb16 --threads 1
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import importlib.util
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from dinov2.hub import backbones, dinov3_backbones
from dinov2.models.convert import to_hf_state_dict, to_timm_state_dict
from dinov2.models.convert_dinov3 import to_hf_dinov3, to_timm_dinov3
from dinov2.models.peers_dinov3 import hf_dinov3_config, timm_dinov3_args
from dinov2.utils.dtype import DTYPES  # noqa: E402

try:
    from scripts.benchmark_losses import _cpu_peak_bytes, _cuda_peak_bytes
except ModuleNotFoundError:  # run as a file without the repository root on the path: scripts/ is sys.path[0]
    from benchmark_losses import _cpu_peak_bytes, _cuda_peak_bytes

SIZES = {"vit_small": "small", "vit_base": "base", "vit_large": "large", "vit_giant2": "giant"}
DINOV3 = ("dinov3_vits16", "dinov3_vits16plus", "dinov3_vitb16", "dinov3_vitl16")  # hub names (ViT, no 7B)
NATIVE = 518  # hub backbones' stored position grid (37 x 37 patches of 14)
NATIVE_V3 = 256  # DINOv3 has no position grid; its recommended input size
QUICK = dict(batch_size=2, resolution=112, warmup=1, repeats=3)
RSS_ROUNDS = 3


@dataclass
class Runner:
    """One implementation: ``fn(images [B, 3, H, W]) -> normed cls token [B, D]``."""

    name: str
    fn: Callable[[Tensor], Tensor] | None
    times: list[float] = field(default_factory=list)  # wall-clock seconds per batch
    cpu_times: list[float] = field(default_factory=list)  # process CPU seconds per batch (all threads)
    peak_mib: float | None = None  # tensors allocated by one forward
    rss_mib: list[float] = field(default_factory=list)  # CPU: resident memory, one entry per round
    diffs: dict[int, float] = field(default_factory=dict)


def build_ours(arch: str, registers: bool) -> nn.Module:
    torch.manual_seed(0)
    name = f"dinov2_vit{SIZES[arch][0]}14" + ("_reg" if registers else "")
    return getattr(backbones, name)(pretrained=False).eval()


def build_timm(ours: nn.Module, arch: str, registers: bool) -> tuple[nn.Module, Runner]:
    import timm

    name = f"vit_{SIZES[arch]}_patch14{'_reg4' if registers else ''}_dinov2"
    model = timm.create_model(name, pretrained=False, img_size=NATIVE, dynamic_img_size=True).eval()
    model.load_state_dict(to_timm_state_dict(ours.state_dict()), strict=True)
    return model, Runner(f"timm {timm.__version__}", lambda x: model.forward_features(x)[:, 0])


def build_hf(ours: nn.Module, registers: bool) -> tuple[nn.Module, Runner]:
    import transformers

    kwargs = dict(
        hidden_size=ours.embed_dim,
        num_hidden_layers=ours.n_blocks,
        num_attention_heads=ours.num_heads,
        image_size=NATIVE,
        patch_size=ours.patch_size,
        layer_norm_eps=1e-6,
        layerscale_value=1.0,
        use_swiglu_ffn=hasattr(ours.blocks[0].mlp, "w12"),
    )
    if registers:
        config = transformers.Dinov2WithRegistersConfig(num_register_tokens=ours.num_register_tokens, **kwargs)
        model = transformers.Dinov2WithRegistersModel(config)
    else:
        model = transformers.Dinov2Model(transformers.Dinov2Config(**kwargs))
    model.eval().load_state_dict(to_hf_state_dict(ours.state_dict()), strict=True)
    name = f"transformers {transformers.__version__} ({model.config._attn_implementation})"  # sdpa by default
    return model, Runner(name, lambda x: model(pixel_values=x).last_hidden_state[:, 0])


def build_timm_v3(ours: nn.Module) -> tuple[nn.Module, Runner]:
    import timm

    name, kwargs = timm_dinov3_args(ours)
    qkv_bias = ours.blocks[0].attn.qkv.bias is not None  # like for like: ours adds its (here zero) q/v biases
    name = name.removesuffix("_qkvb") + ("_qkvb" if qkv_bias else "")
    model = timm.create_model(name, pretrained=False, **{**kwargs, "qkv_bias": qkv_bias}).eval()
    model.load_state_dict(to_timm_dinov3(ours.state_dict(), qkv_bias=qkv_bias), strict=True)
    return model, Runner(f"timm {timm.__version__} ({name})", lambda x: model.forward_features(x)[:, 0])


def build_hf_v3(ours: nn.Module) -> tuple[nn.Module, Runner]:
    import transformers

    config = {k: v for k, v in hf_dinov3_config(ours).items() if k not in ("architectures", "model_type", "dtype")}
    model = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(**config)).eval()
    model.load_state_dict(to_hf_dinov3(ours.state_dict()), strict=True)
    name = f"transformers {transformers.__version__} ({model.config._attn_implementation})"
    return model, Runner(name, lambda x: model(pixel_values=x).last_hidden_state[:, 0])


def _ours_and_peers(arch: str, registers: bool) -> tuple[nn.Module, list[Runner], dict]:
    """Our model, its runners and the peer builders (``impl -> () -> (model, runner)``)."""
    if arch in DINOV3:
        torch.manual_seed(0)
        ours = getattr(dinov3_backbones, arch)(pretrained=False).eval()
        runners = [Runner("ours (dinov3)", lambda x: ours(x))]  # every token, as the release and the peers
        return ours, runners, {"timm": lambda: build_timm_v3(ours), "hf": lambda: build_hf_v3(ours)}
    ours = build_ours(arch, registers)
    runners = [
        Runner("ours (dinov2)", lambda x: ours(x)),  # eval forward: the last block computes the cls token only
        Runner("ours, all tokens", lambda x: ours.forward_features(x)["x_norm_clstoken"]),  # the release's work
    ]
    return ours, runners, {"timm": lambda: build_timm(ours, arch, registers), "hf": lambda: build_hf(ours, registers)}


def build_runners(arch: str, registers: bool, impls: list[str], device, dtype) -> tuple[list[Runner], list]:
    ours, runners, builders = _ours_and_peers(arch, registers)
    models = [ours]
    for impl in impls:
        module = {"timm": "timm", "hf": "transformers"}[impl]
        if importlib.util.find_spec(module) is None:
            print(f"# {module} is not installed: skipping it (pip install {module})")
            continue
        model, runner = builders[impl]()
        models.append(model)
        runners.append(runner)
    for model in models:
        model.to(device=device, dtype=dtype)
    return runners, models


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(runners: list[Runner], x: Tensor, warmup: int, repeats: int) -> None:
    for runner in runners:
        for _ in range(warmup):
            runner.fn(x)
    _sync(x.device)
    for i in range(repeats):
        for runner in runners if i % 2 == 0 else runners[::-1]:
            start, cpu_start = time.perf_counter(), time.process_time()
            runner.fn(x)
            _sync(x.device)
            runner.times.append(time.perf_counter() - start)
            runner.cpu_times.append(time.process_time() - cpu_start)


def _proc_status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def peak_memory_mib(runner: Runner, x: Tensor) -> float:
    """Most memory the tensors allocated by one forward hold at once (MiB), above what was allocated before."""
    if x.device.type == "cuda":
        torch.cuda.empty_cache()
        return _cuda_peak_bytes(lambda: runner.fn(x), x.device) / 2**20
    return _cpu_peak_bytes(lambda: runner.fn(x)) / 2**20


def peak_rss_mib(runner: Runner, x: Tensor) -> float | None:
    """Resident memory one CPU forward adds to what is resident before it (MiB; Linux only)."""
    if x.device.type != "cpu" or platform.system() != "Linux":
        return None
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed heap pages, so the next forward must map its own
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _proc_status_kib("VmRSS")
    runner.fn(x)
    return (_proc_status_kib("VmHWM") - base) / 1024


def measure_memory(runners: list[Runner], x: Tensor) -> None:
    """Tensor peak once per runner; RSS peak over ``RSS_ROUNDS`` rounds in alternating order (heap-state noise)."""
    for runner in runners:
        runner.peak_mib = peak_memory_mib(runner, x)
    for i in range(RSS_ROUNDS):
        for runner in runners if i % 2 == 0 else runners[::-1]:
            rss = peak_rss_mib(runner, x)
            if rss is not None:
                runner.rss_mib.append(rss)


def check_outputs(runners: list[Runner], resolutions: list[int], device, dtype) -> None:
    """Max |cls token difference| to ours per resolution: same weights must give the same features."""
    generator = torch.Generator().manual_seed(0)
    for resolution in resolutions:
        x = torch.randn(2, 3, resolution, resolution, generator=generator).to(device=device, dtype=dtype)
        reference = runners[0].fn(x).float()
        for runner in runners:
            runner.diffs[resolution] = (runner.fn(x).float() - reference).abs().max().item()


def print_table(rows: list[tuple[str, Runner]], args: argparse.Namespace, resolutions: list[int]) -> None:
    diff_cols = "".join(f" max abs diff @{r} |" for r in resolutions)
    header = "| arch | implementation | img/s | ms/batch (median) | ms/batch (min) | CPU ms/batch (median) | peak MiB |"
    print(header + " peak RSS MiB (median) |" + diff_cols)
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(resolutions))
    for arch, runner in rows:
        median = statistics.median(runner.times)
        peak = f"{runner.peak_mib:.1f}"
        rss = f"{statistics.median(runner.rss_mib):.0f}" if runner.rss_mib else "n/a"
        diffs = "".join(f" {runner.diffs[r]:.1e} |" if r in runner.diffs else " - |" for r in resolutions)
        cpu = statistics.median(runner.cpu_times)
        row = [arch, runner.name, f"{args.batch_size / median:.1f}", f"{median * 1e3:.0f}"]
        row += [f"{min(runner.times) * 1e3:.0f}", f"{cpu * 1e3:.0f}", peak, rss]
        print("| " + " | ".join(row) + " |" + diffs)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["vit_small", "vit_base"], choices=sorted(SIZES) + list(DINOV3))
    parser.add_argument("--registers", action="store_true", help="the _reg (4 registers) variants")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=224, help="square input side in pixels")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--impls", nargs="*", default=["timm", "hf"], choices=["timm", "hf"], help="peers to run")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op CPU threads")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-check", action="store_true", help="skip the output comparison")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items())
    )
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cuda":  # compare like with like: no TF32 in fp32 matmuls
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, device {device}, "
        f"threads {torch.get_num_threads()}, batch {args.batch_size}, {args.resolution}px, {args.dtype}, "
        f"warm-up {args.warmup}, repeats {args.repeats} (interleaved), torch.inference_mode"
    )
    rows, all_resolutions = [], set()
    for arch in args.arch:
        native = NATIVE_V3 if arch in DINOV3 else NATIVE
        resolutions = [] if args.no_check else sorted({args.resolution} | (set() if args.quick else {native}))
        all_resolutions.update(resolutions)
        runners, models = build_runners(arch, args.registers, args.impls, device, dtype)
        x = torch.randn(args.batch_size, 3, args.resolution, args.resolution, device=device, dtype=dtype)
        with torch.inference_mode():
            check_outputs(runners, resolutions, device, dtype)
            time_interleaved(runners, x, args.warmup, args.repeats)
            measure_memory(runners, x)
        rows.extend((arch, dataclasses.replace(runner, fn=None)) for runner in runners)  # let models go
        del models, runners
    print_table(rows, args, sorted(all_resolutions))


if __name__ == "__main__":
    main()
