"""Time and peak memory of DINO / iBOT loss forward+backward: memory-lean vs plain cross-entropy.

Usage (defaults are moderate for a shared 2-core / 24 GiB machine; raise them with the flags):

    PYTHONPATH=. python scripts/benchmark_losses.py
    PYTHONPATH=. python scripts/benchmark_losses.py --prototypes 131072 --dino-rows 64 --ibot-tokens 4096 --device cuda

Cases (K prototypes):
- ``dino``: ``DINOLoss`` with ``--dino-crops`` student crops of [rows, K] against 2 teacher crops of [rows, K]
  (2 x 64 class tokens per GPU in the released ViT-g run).
- ``ibot``: ``iBOTPatchLoss.forward_masked`` on [tokens, K] masked patch tokens.

For each case, dtype (student logits float32 or bfloat16; teacher targets float32, as softmax/Sinkhorn
produce them under autocast) and path (``lean``: chunked autograd function; ``plain``: ``log_softmax``
formulation) the script prints the best forward+backward wall time over ``--repeats`` runs and the peak
memory allocated on top of the inputs during one forward+backward (the student gradient included).

Peak memory method: on CUDA ``torch.cuda.max_memory_allocated()`` minus the allocation before the call.
On CPU, a ``torch.profiler`` run with ``profile_memory=True`` records every tensor allocation and free
(``[memory]`` events with byte counts); the running sum of those events in time order gives the live
bytes allocated since the start of the call, and its maximum is the peak. This counts tensor storage
only (no allocator caching or fragmentation), like ``max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import torch

from dinov2.loss import DINOLoss, iBOTPatchLoss

MIB = 1 << 20


@contextlib.contextmanager
def _quiet_native_stderr():
    """Some torch builds' profiler back-end prints start/stop (and GPU-probe) lines from C++ straight to
    file descriptor 2; they say nothing about the measurement, so they are dropped while it runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        live += event.nbytes()
        peak = max(peak, live)
    return peak


def _cuda_peak_bytes(fn, device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _make_inputs(case, args, dtype, device):
    g = torch.Generator(device="cpu").manual_seed(0)
    k = args.prototypes

    def logits(rows):
        return torch.randn(rows, k, generator=g).to(device=device, dtype=dtype)

    def probs(rows):
        return torch.softmax(torch.randn(rows, k, generator=g) / 0.05, dim=-1).to(device)

    if case == "dino":
        students = [logits(args.dino_rows).requires_grad_() for _ in range(args.dino_crops)]
        teachers = [probs(args.dino_rows) for _ in range(2)]
        return students, teachers
    student = logits(args.ibot_tokens).requires_grad_()
    teacher = probs(args.ibot_tokens)
    n_images = max(1, args.ibot_tokens // 64)
    masks = torch.zeros(n_images, args.ibot_tokens, dtype=torch.bool, device=device)
    masks[torch.arange(args.ibot_tokens) % n_images, torch.arange(args.ibot_tokens)] = True
    return [student], (teacher, masks)


def _step_fn(case, lean, args, inputs):
    students, rest = inputs
    if case == "dino":
        loss_fn = DINOLoss(args.prototypes, lean_cross_entropy=lean)

        def step():
            loss = loss_fn(students, rest)
            loss.backward()
            return loss
    else:
        loss_fn = iBOTPatchLoss(args.prototypes, lean_cross_entropy=lean)
        teacher, masks = rest

        def step():
            loss = loss_fn.forward_masked(students[0], teacher, masks)
            loss.backward()
            return loss

    def run():
        for s in students:
            s.grad = None
        return step()

    return run


def _time_once(run, device) -> float:
    _sync(device)
    start = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - start


def _measure_pair(case, dtype, args, device):
    """Plain and lean on the same inputs; timings interleaved so that load changes hit both alike."""
    inputs = _make_inputs(case, args, dtype, device)
    runs = {lean: _step_fn(case, lean, args, inputs) for lean in (False, True)}
    results = {}
    for lean, run in runs.items():
        run()  # warm-up
        for student in inputs[0]:
            student.grad = None  # freed outside the measured window (a free of older memory would skew the CPU sum)
        peak = _cuda_peak_bytes(run, device) if device.type == "cuda" else _cpu_peak_bytes(run)
        loss = run().detach().float().cpu()
        grads = [s.grad.detach().float().cpu() for s in inputs[0]]
        results[lean] = {"times": [], "peak": peak, "loss": loss, "grads": grads}
    for _ in range(args.repeats):
        for lean, run in runs.items():
            results[lean]["times"].append(_time_once(run, device))
    rows = sum(s.shape[0] for s in inputs[0])
    for r in results.values():
        r["time"], r["rows"] = min(r["times"]), rows
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prototypes", type=int, default=131072, help="K (65536 or 131072 in released configs)")
    parser.add_argument("--dino-rows", type=int, default=64, help="class tokens per crop (batch per GPU)")
    parser.add_argument("--dino-crops", type=int, default=2, help="student crops in the DINO case")
    parser.add_argument("--ibot-tokens", type=int, default=512, help="masked patch tokens in the iBOT case")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="student-logit dtypes, comma-separated")
    parser.add_argument("--cases", default="dino,ibot")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False

    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, K = {args.prototypes}")
    header = "| case | dtype | rows x K | path | fwd+bwd ms | peak MiB | peak / (rows*K*4 B) | max |diff| loss, grad |"
    print(header)
    print("|" + "---|" * 8)
    for case in args.cases.split(","):
        for dtype_name in args.dtypes.split(","):
            dtype = getattr(torch, dtype_name)
            results = _measure_pair(case, dtype, args, device)
            plain = results[False]
            for lean, name in ((False, "plain"), (True, "lean")):
                r = results[lean]
                loss_diff = (r["loss"] - plain["loss"]).abs().item()
                grad_diff = max((a - b).abs().max().item() for a, b in zip(r["grads"], plain["grads"]))
                row_bytes = r["rows"] * args.prototypes * 4
                print(
                    f"| {case} | {dtype_name} | {r['rows']} x {args.prototypes} | {name} | {1000 * r['time']:.1f} "
                    f"| {r['peak'] / MIB:.0f} | {r['peak'] / row_bytes:.2f} | {loss_diff:.1e}, {grad_diff:.1e} |"
                )


if __name__ == "__main__":
    main()
