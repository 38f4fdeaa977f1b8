"""Benchmark the curation primitives against scikit-learn and faiss: k-means iteration time, k-NN throughput.

    PYTHONPATH=. python scripts/benchmark_curation.py --threads 1  # N = 1e4, 1e5, 1e6: about 2 minutes on 2 cores
    PYTHONPATH=. python scripts/benchmark_curation.py --sizes 100000 --dim 768 --clusters 10000 --device cuda

For each N, the same random unit vectors (float32, ``--dim``) go to every implementation:

- k-means: seconds per Lloyd iteration with ``--clusters`` centroids from the same initial centroids, over
  ``--iters`` iterations: ours (``dinov2.curation.kmeans.lloyd``, float64 sums), scikit-learn ``KMeans``
  (lloyd, ``tol=0``; its time includes one more assignment pass after the last iteration, so more iterations
  amortise it), faiss ``Kmeans`` (no subsampling: ``max_points_per_centroid`` raised);
- k-NN: queries per second of an exact inner-product top-``--k`` search of ``--queries`` rows against the N rows:
  ours (``dinov2.curation.knn``, torch, deterministic ties), scikit-learn ``NearestNeighbors`` (brute force,
  cosine), faiss ``IndexFlatIP``, and faiss ``IVF<sqrt N>,Flat`` (``nprobe`` 16, approximate; recall shown).

Missing libraries are skipped. Prints a table (and ``--json`` writes the numbers).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time

import numpy as np
import torch

from dinov2.curation._features import exact_knn
from dinov2.curation.kmeans import lloyd


def _units(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _timed(fn, repeats: int = 1) -> tuple[float, object]:
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    return (time.perf_counter() - start) / repeats, result


def _limit_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    if importlib.util.find_spec("faiss"):
        import faiss

        faiss.omp_set_num_threads(threads)
    if importlib.util.find_spec("threadpoolctl"):  # scikit-learn's OpenMP and BLAS pools
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)


def _has(module: str, baselines: bool) -> bool:
    return baselines and importlib.util.find_spec(module) is not None


def kmeans_times(x: np.ndarray, k: int, iters: int, device: str, baselines: bool = True) -> dict[str, float]:
    """Seconds per Lloyd iteration of each implementation, from the same initial centroids."""
    init = x[np.random.default_rng(1).choice(len(x), k, replace=False)]
    data = torch.from_numpy(x).to(device)
    times = {"ours": _timed(lambda: lloyd(data, torch.from_numpy(init), iters))[0] / iters}
    if _has("sklearn", baselines):
        from sklearn.cluster import KMeans

        model = KMeans(k, init=init, n_init=1, max_iter=iters, tol=0, algorithm="lloyd")
        times["scikit-learn"] = _timed(lambda: model.fit(x))[0] / iters
    if _has("faiss", baselines):
        import faiss

        model = faiss.Kmeans(x.shape[1], k, niter=iters, max_points_per_centroid=len(x), seed=1)
        times["faiss"] = _timed(lambda: model.train(x, init_centroids=init))[0] / iters
    return times


def knn_rates(x: np.ndarray, queries: np.ndarray, k: int, device: str, baselines: bool = True) -> dict:
    """(queries per second, recall@k against the exact result) of each implementation."""
    database, q = torch.from_numpy(x).to(device), torch.from_numpy(queries).to(device)
    seconds, exact = _timed(lambda: exact_knn(database, q, k)[1].cpu())  # what knn_search runs once rows are loaded
    exact = exact.numpy()
    rates = {"ours (torch exact)": (len(queries) / seconds, 1.0)}

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)]))

    if _has("sklearn", baselines):
        from sklearn.neighbors import NearestNeighbors

        index = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine").fit(x)
        seconds, (_, found) = _timed(lambda: index.kneighbors(queries))
        rates["scikit-learn (brute)"] = (len(queries) / seconds, recall(found))
    if _has("faiss", baselines):
        import faiss

        flat = faiss.IndexFlatIP(x.shape[1])
        flat.add(x)
        seconds, (_, found) = _timed(lambda: flat.search(queries, k))
        rates["faiss Flat"] = (len(queries) / seconds, recall(found))
        nlist = max(1, int(math.sqrt(len(x))))
        ivf = faiss.index_factory(x.shape[1], f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        ivf.train(x[np.random.default_rng(2).choice(len(x), min(len(x), 64 * nlist), replace=False)])
        ivf.add(x)
        ivf.nprobe = 16
        seconds, (_, found) = _timed(lambda: ivf.search(queries, k))
        rates["faiss IVF(sqrt N),Flat"] = (len(queries) / seconds, recall(found))
    return rates


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--iters", type=int, default=2, help="Lloyd iterations timed")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of every library (default: torch's)")
    parser.add_argument("--baselines-up-to", type=int, default=None, help="skip scikit-learn and faiss above this N")
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if args.threads:
        _limit_threads(args.threads)

    results = {"settings": vars(args), "torch_threads": torch.get_num_threads(), "kmeans": {}, "knn": {}}
    queries = _units(args.queries, args.dim, seed=0)
    for n in args.sizes:
        x = _units(n, args.dim, seed=n)
        baselines = args.baselines_up_to is None or n <= args.baselines_up_to
        results["kmeans"][n] = kmeans_times(x, min(args.clusters, n), args.iters, args.device, baselines)
        results["knn"][n] = knn_rates(x, queries, args.k, args.device, baselines)
    _print(results, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


def _print(results: dict, args) -> None:
    print(f"\nk-means, seconds per Lloyd iteration (dim {args.dim}, {args.clusters} clusters, {args.device}):\n")
    names = sorted({name for row in results["kmeans"].values() for name in row})
    print("| N | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for n, row in results["kmeans"].items():
        print(f"| {n:,} | " + " | ".join(f"{row[m]:.3f}" if m in row else "-" for m in names) + " |")
    print(f"\nk-NN, queries per second (top-{args.k} of {args.queries} queries; recall@{args.k} vs exact):\n")
    names = list(dict.fromkeys(name for row in results["knn"].values() for name in row))
    print("| N | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for n, row in results["knn"].items():
        cells = [f"{row[m][0]:,.0f} ({row[m][1]:.2f})" if m in row else "-" for m in names]
        print(f"| {n:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
