"""Benchmark of the evaluation protocols' cores: k-NN search, logistic regression fits, feature extraction.

    PYTHONPATH=. python scripts/benchmark_eval.py                       # moderate defaults (shared CPU)
    PYTHONPATH=. python scripts/benchmark_eval.py --n-train 100000 --dim 768 --n-queries 10000 \
        --devices cpu cuda --dtypes fp32 fp16 --chunk-sizes 1024 4096   # the issue-#7 target size

k-NN rows time :meth:`dinov2.features.KnnIndex.search` (exact top-k with (-sim, index) tie-breaking)
and, for reference, a plain ``matmul + topk`` over the same chunks (what the released code does,
without deterministic ties), then the softmax voting for k in {10, 20, 100, 200}. Features are random
unit vectors; times are medians over ``--repeats`` runs after one warm-up.

``--extract`` times the real backbone (``--arch``, ``--resolution``, ``--extract-batch``, ``--dtypes``;
randomly initialised, hub layout) as the protocols run it: the k-NN forward (normalised cls token), the
linear forward (4 last blocks) and the whole ``extract_features`` loop, in images/s::

    PYTHONPATH=. python scripts/benchmark_eval.py --skip-knn --extract --arch vit_base --extract-batch 64 \
        --devices cpu cuda --dtypes fp32 fp16 bf16
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch

from dinov2.eval.knn import DEFAULT_NB_KNN, knn_class_scores
from dinov2.eval.log_regression import LogisticRegression
from dinov2.eval.results import format_table
from dinov2.features import KnnIndex
from dinov2.utils.dtype import DTYPES  # noqa: E402


def _timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of fn() in seconds, after one warm-up call (synchronising CUDA)."""
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i > 0:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _plain_search(train: torch.Tensor, queries: torch.Tensor, k: int, chunk: int):
    for start in range(0, len(queries), chunk):
        (queries[start : start + chunk] @ train.T).topk(k, dim=1)


def bench_knn(args) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    train = torch.nn.functional.normalize(torch.randn(args.n_train, args.dim, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(args.n_queries, args.dim, generator=g), dim=1)
    labels = torch.randint(0, args.num_classes, (args.n_train,), generator=g)
    k = max(args.nb_knn)
    for device_name in args.devices:
        if device_name == "cuda" and not torch.cuda.is_available():
            print("cuda: not available, skipped")
            continue
        device = torch.device(device_name)
        for dtype_name in args.dtypes:
            dtype = DTYPES[dtype_name]
            train_d, queries_d = train.to(device, dtype), queries.to(device, dtype)
            for chunk in args.chunk_sizes:
                index = KnnIndex(train_d, labels, device=device, normalize=False, chunk_size=chunk)
                ours = _timed(partial(index.search, queries_d, k), device, args.repeats)
                plain = _timed(partial(_plain_search, train_d, queries_d, k, chunk), device, args.repeats)
                sims, _, neighbour_labels = index.search(queries_d, k)
                vote_fn = partial(knn_class_scores, sims, neighbour_labels, args.nb_knn, 0.07, args.num_classes)
                vote = _timed(vote_fn, device, args.repeats)
                rows.append(
                    {
                        "device": device_name,
                        "dtype": dtype_name,
                        "N x D": f"{args.n_train} x {args.dim}",
                        "queries": args.n_queries,
                        "k": k,
                        "chunk": chunk,
                        "search s": ours,
                        "queries/s": args.n_queries / ours,
                        "plain topk s": plain,
                        "vote s": vote,
                    }
                )
    return rows


def bench_logreg(args) -> list[dict]:
    rows = []
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(args.logreg_classes, args.logreg_dim, generator=g)
    labels = torch.randint(0, args.logreg_classes, (args.logreg_n,), generator=g)
    features = centers[labels] + 2.0 * torch.randn(args.logreg_n, args.logreg_dim, generator=g)
    for device_name in args.devices:
        if device_name == "cuda" and not torch.cuda.is_available():
            continue
        device = torch.device(device_name)
        x, y = features.to(device), labels.to(device)
        LogisticRegression(1.0, max_iter=5).fit(x, y)  # warm-up (lazy imports, kernels)
        previous = None
        for C in args.logreg_c:
            start = time.perf_counter()
            model = LogisticRegression(C).fit(x, y, init=previous)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - start
            previous = model
            shape = f"{args.logreg_n} x {args.logreg_dim}, {args.logreg_classes} classes"
            rows.append(
                {"device": device_name, "problem": shape, "C": C, "iterations": model.n_iter_, "fit s": elapsed}
            )
    return rows


class _ImageTensors(torch.utils.data.Dataset):
    """``n`` random preprocessed images ``[3, R, R]`` with labels: the loader side costs nothing."""

    def __init__(self, n: int, resolution: int):
        self.images = torch.randn(n, 3, resolution, resolution, generator=torch.Generator().manual_seed(0))

    def __getitem__(self, index):
        return self.images[index], index % 10

    def __len__(self):
        return len(self.images)


def _extraction_model(arch: str, device: torch.device):
    """A randomly initialised hub-layout backbone (patch 14, 518 px position table as the eval configs build it)."""
    from dinov2.models.vision_transformer import ARCHS

    ffn = {"ffn_layer": "swiglufused"} if arch == "vit_giant2" else {}
    model = ARCHS[arch](patch_size=14, img_size=518, init_values=1.0, block_chunks=0, **ffn)
    return model.eval().requires_grad_(False).to(device)


def bench_extraction(args) -> list[dict]:
    """Images/s of the real backbone as the protocols run it: k-NN features (normalised cls token, the
    cls-only last block), linear features (4 last blocks with cls tokens), and the whole
    :func:`dinov2.features.extract_features` loop (batching, gathering, storing) on in-memory images."""
    from dinov2.eval.setup import autocast_context
    from dinov2.eval.utils import ModelWithIntermediateLayers, ModelWithNormalize, extract_features

    rows = []
    for device_name in args.devices:
        if device_name == "cuda" and not torch.cuda.is_available():
            continue
        device = torch.device(device_name)
        model = _extraction_model(args.arch, device)
        images = torch.randn(args.extract_batch, 3, args.resolution, args.resolution, device=device)
        dataset = _ImageTensors(args.extract_batch * args.extract_batches, args.resolution)
        for dtype_name in args.dtypes:
            if device.type == "cpu" and dtype_name != "fp32":
                continue  # autocast runs on CUDA only (as released): the CPU path is float32
            autocast = autocast_context(DTYPES[dtype_name], device)
            knn_model = ModelWithNormalize(model)
            linear_model = ModelWithIntermediateLayers(model, 4, autocast)
            modes = {
                "k-NN forward": partial(_under, autocast, knn_model, images),
                "linear forward (4 blocks)": partial(linear_model, images),
                "extract_features": partial(
                    _under, autocast, extract_features, knn_model, dataset, args.extract_batch, 0, progress=False
                ),
            }
            for mode, fn in modes.items():
                count = len(dataset) if mode == "extract_features" else args.extract_batch
                with torch.inference_mode():
                    seconds = _timed(fn, device, args.repeats)
                rows.append(
                    {
                        "device": device_name, "arch": args.arch, "dtype": dtype_name, "mode": mode,
                        "resolution": args.resolution, "batch": args.extract_batch, "images/s": count / seconds,
                    }
                )  # fmt: skip
    return rows


def _under(autocast, fn, *args, **kwargs):
    with autocast():
        return fn(*args, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--n-queries", type=int, default=2_000)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--nb-knn", type=int, nargs="+", default=list(DEFAULT_NB_KNN))
    parser.add_argument("--devices", nargs="+", default=["cpu"], choices=["cpu", "cuda"])
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=sorted(DTYPES))
    parser.add_argument("--chunk-sizes", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--skip-knn", action="store_true")
    parser.add_argument("--logreg", action="store_true", help="also time logistic-regression fits")
    parser.add_argument("--logreg-n", type=int, default=5_000)
    parser.add_argument("--logreg-dim", type=int, default=384)
    parser.add_argument("--logreg-classes", type=int, default=100)
    parser.add_argument("--logreg-c", type=float, nargs="+", default=[1e-2, 1e-1, 1.0])
    parser.add_argument("--extract", action="store_true", help="also time backbone feature extraction")
    parser.add_argument("--arch", default="vit_small", choices=["vit_small", "vit_base", "vit_large", "vit_giant2"])
    parser.add_argument("--resolution", type=int, default=224, help="image side for feature extraction (px)")
    parser.add_argument("--extract-batch", type=int, default=16, help="images per batch for feature extraction")
    parser.add_argument("--extract-batches", type=int, default=4, help="batches in the extract_features timing")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, cuda: {torch.cuda.is_available()}")
    if not args.skip_knn:
        print(format_table(bench_knn(args), float_format=".3f", title="\nk-NN search (median seconds)"))
    if args.logreg:
        print(format_table(bench_logreg(args), float_format=".3f", title="\nLogistic regression fits (warm-started)"))
    if args.extract:
        rows = bench_extraction(args)
        if rows:
            print(format_table(rows, float_format=".1f", title="\nFeature extraction"))


if __name__ == "__main__":
    main()
