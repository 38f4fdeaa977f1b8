"""Smoothed training metrics, periodic log lines (ETA, time, throughput, memory) and JSON-lines metric files."""

from __future__ import annotations

import datetime
import json
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from numbers import Real
from typing import Any

import torch
import torch.distributed as dist

import dinov2.distributed as distributed

logger = logging.getLogger("dinov2")

__all__ = ["MetricLogger", "SmoothedValue"]

_MB = 1024.0 * 1024.0
_STATS = ("median", "avg", "global_avg", "max", "value")


def _collective_device() -> torch.device:
    """Device for metric all-reduces: the current CUDA device under NCCL, else the CPU (gloo)."""
    if distributed.is_enabled() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class SmoothedValue:
    """A series of values with statistics over the last ``window_size`` values and over the whole series.

    ``median`` is the lower middle value of the window (as ``torch.median``), ``avg`` the window mean, ``global_avg``
    the weighted mean of every update. Statistics are computed in float64 (the release used float32 for the
    window), so logged values are exact. Empty statistics are NaN.
    """

    def __init__(self, window_size: int = 20, fmt: str | None = None):
        self.deque: deque = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self.fmt = "{median:.4f} ({global_avg:.4f})" if fmt is None else fmt

    def update(self, value: float, num: int = 1) -> None:
        """Add ``value`` to the window, and ``num`` times to the global statistics."""
        self.deque.append(value)
        self.count += num
        self.total += value * num

    def synchronize_between_processes(self) -> None:
        """Sum ``count`` and ``total`` over processes (not the window); a no-op on one process."""
        if distributed.get_global_size() == 1:
            return
        counts = torch.tensor([self.count, self.total], dtype=torch.float64, device=_collective_device())
        distributed.all_reduce(counts)
        self.count, self.total = int(counts[0].item()), counts[1].item()

    @property
    def median(self) -> float:
        values = sorted(self.deque)
        return float(values[(len(values) - 1) // 2]) if values else math.nan

    @property
    def avg(self) -> float:
        return math.fsum(self.deque) / len(self.deque) if self.deque else math.nan

    @property
    def global_avg(self) -> float:
        return self.total / self.count if self.count else math.nan

    @property
    def max(self) -> float:
        return max(self.deque) if self.deque else math.nan

    @property
    def value(self) -> float:
        return self.deque[-1] if self.deque else math.nan

    def __str__(self) -> str:
        return self.fmt.format(**{stat: getattr(self, stat) for stat in _STATS})


class MetricLogger:
    """Named :class:`SmoothedValue` meters, logged every few iterations by :meth:`log_every`.

    ``output_file``: when set, the main process appends one JSON object per logged iteration:
    ``{"iteration", "iter_time", "data_time", <meter>: <stat>, ...}`` with ``stat = json_stat`` of each meter
    (the release wrote the window median; ``"global_avg"`` gives averages since the start), plus
    ``images_per_sec`` when :meth:`log_every` is given a ``batch_size``; :meth:`record` adds occasional measurements
    as records of their own. ``sinks``: callables that also receive every record (main process), e.g. TensorBoard.
    """

    def __init__(
        self,
        delimiter: str = "\t",
        output_file: str | None = None,
        json_stat: str = "median",
        sinks: Iterable[Callable[[dict], None]] = (),
    ):
        if json_stat not in _STATS:
            raise ValueError(f"json_stat must be one of {_STATS}, got {json_stat!r}")
        self.meters: defaultdict[str, SmoothedValue] = defaultdict(SmoothedValue)
        self.delimiter = delimiter
        self.output_file = output_file
        self.json_stat = json_stat
        self.sinks = list(sinks)

    def record(self, iteration: int, **values: float) -> None:
        """Write ``{"iteration": iteration, **values}`` now (not smoothed): an occasional measurement such as the
        k-NN accuracy of the monitor, in the same file and sinks as the periodic records (main process only)."""
        self._write({"iteration": int(iteration), **{name: float(value) for name, value in values.items()}})

    def _write(self, record: dict) -> None:
        if not distributed.is_main_process():
            return
        if self.output_file is not None:
            with open(self.output_file, "a") as f:
                f.write(json.dumps(record) + "\n")
        for sink in self.sinks:
            sink(record)

    def update(self, **kwargs: float | torch.Tensor) -> None:
        """Add one value per meter; 1-element tensors are read with ``.item()``."""
        for name, value in kwargs.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            if not isinstance(value, Real) or isinstance(value, bool):
                raise TypeError(f"MetricLogger.update: {name}={value!r} is not a number (or 1-element tensor)")
            self.meters[name].update(value)

    def __getattr__(self, attr: str) -> Any:
        meters = self.__dict__.get("meters", {})
        if attr in meters:
            return meters[attr]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{attr}'")

    def __str__(self) -> str:
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())

    def add_meter(self, name: str, meter: SmoothedValue) -> None:
        self.meters[name] = meter

    def synchronize_between_processes(self) -> None:
        """Sum every meter's ``count``/``total`` over processes in one all-reduce (same meter names on all ranks)."""
        if distributed.get_global_size() == 1 or not self.meters:
            return
        names = sorted(self.meters)
        stats = [[self.meters[n].count, self.meters[n].total] for n in names]
        counts = torch.tensor(stats, dtype=torch.float64, device=_collective_device())  # [M, 2]
        distributed.all_reduce(counts)
        for name, (count, total) in zip(names, counts.tolist()):
            self.meters[name].count, self.meters[name].total = int(count), total

    def dump_in_output_file(self, iteration: int, iter_time: float, data_time: float, **extra: float) -> None:
        """Append one JSON line (with an ``output_file``) and hand the record to the sinks (main process only)."""
        if not distributed.is_main_process() or (self.output_file is None and not self.sinks):
            return
        record = dict(iteration=iteration, iter_time=iter_time, data_time=data_time, **extra)
        record.update({name: getattr(meter, self.json_stat) for name, meter in self.meters.items()})
        self._write(record)

    def log_every(
        self,
        iterable: Iterable,
        print_freq: int,
        header: str | None = None,
        n_iterations: int | None = None,
        start_iteration: int = 0,
        batch_size: int | None = None,
    ) -> Iterator:
        """Yield from ``iterable`` (up to iteration ``n_iterations``), logging every ``print_freq`` iterations.

        A log line holds the iteration, ETA, every meter, iteration and data-loading time (seconds, averaged over the
        last 20 iterations), ``img/s`` when ``batch_size`` (images per iteration per process) is given
        (counted over all processes), and the peak CUDA memory in MB when CUDA is in use.
        """
        if print_freq < 1:
            raise ValueError(f"log_every: print_freq must be >= 1, got {print_freq}")
        if n_iterations is None:
            n_iterations = len(iterable)
        header = header or ""
        iter_time = SmoothedValue(fmt="{avg:.6f}")
        data_time = SmoothedValue(fmt="{avg:.6f}")
        width = len(str(n_iterations))
        i = start_iteration
        start_time = end = time.time()
        for obj in iterable:
            data_time.update(time.time() - end)
            yield obj
            iter_time.update(time.time() - end)
            if i % print_freq == 0 or i == n_iterations - 1:
                self._log_line(header, i, n_iterations, width, iter_time, data_time, batch_size)
            i += 1
            end = time.time()
            if i >= n_iterations:
                break
        done = max(i - start_iteration, 1)
        total_time = time.time() - start_time
        total_str = str(datetime.timedelta(seconds=int(total_time)))
        logger.info(f"{header} Total time: {total_str} ({total_time / done:.6f} s / it)")

    def _log_line(
        self,
        header: str,
        i: int,
        n_iterations: int,
        width: int,
        iter_time: SmoothedValue,
        data_time: SmoothedValue,
        batch_size: int | None,
    ) -> None:
        extra = {}
        if batch_size is not None and iter_time.avg > 0:
            extra["images_per_sec"] = batch_size * distributed.get_global_size() / iter_time.avg
        self.dump_in_output_file(iteration=i, iter_time=iter_time.avg, data_time=data_time.avg, **extra)
        eta = str(datetime.timedelta(seconds=int(iter_time.global_avg * (n_iterations - i))))
        parts = [header, f"[{i:{width}d}/{n_iterations}]", f"eta: {eta}", str(self)]
        parts += [f"time: {iter_time}", f"data: {data_time}"]
        if "images_per_sec" in extra:
            parts.append(f"img/s: {extra['images_per_sec']:.1f}")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            parts.append(f"max mem: {torch.cuda.max_memory_allocated() / _MB:.0f}")
        logger.info(self.delimiter.join(parts))
